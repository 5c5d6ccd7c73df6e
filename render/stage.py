"""The render stage's work on one source: recon record -> novel views -> encoded rows.

See docs/design.md ("Render stage", "Runtime"). A :class:`SourceRenderer`
holds what one worker slot needs (its :class:`~render.gl.FaceRenderer`, whose
GL context is made in the process that renders, and the background listing);
:func:`render_item` is the work function an executor of
:mod:`nvsynth.runtime.executor` calls with it. Per source it

1. loads the record and its source image (the record's ``image_root`` /
   ``source_file``, an image file or an h5 row, :mod:`nvsynth.core.images`;
   the configured input folder where the record's root has moved), normalizes
   the source with the output's constants (``render.normalization``,
   :func:`render.views.normalize_record`);
2. samples the views (``view_rng(seed, subject, frame, view, STREAM_POSE)``,
   :func:`render.views.sample_view`) and their appearance
   (``STREAM_APPEARANCE``, :func:`render.appearance.sample_appearance`), so
   every draw depends only on (subject, frame, view), never on order or
   worker count;
   With ``render.gaze`` other than follow-head, each view also gets a new gaze
   (``STREAM_GAZE``, :mod:`render.gaze`) and the source's eye rig
   (:mod:`render.eyes`: eye openings, lids, eyeballs) turned to it;
3. builds the mesh and the backdrops, draws every view in the renderer's own
   compositing pass (:meth:`~render.gl.FaceRenderer.render_composited`),
   area-resizes to 224 (:func:`render.compose.finish_composited`);
4. returns the rows of the schema's datasets (:data:`nvsynth.core.schema.FIELDS`)
   with the images already lzf-encoded (:func:`nvsynth.core.h5io.encode_rows`),
   so that the writer only copies bytes.

A source that cannot be used (unreadable record or image) and views with no
pose within ``render.max_pose_deg`` are returned as :class:`Skip` records.
Nothing here knows about datasets, output folders or the command line.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nvsynth.core import geometry
from nvsynth.core.config import Config
from nvsynth.core.errors import RenderError
from nvsynth.core.h5io import encode_rows
from nvsynth.core.images import image_exists, read_image
from nvsynth.core.schema import FIELD_BY_NAME
from nvsynth.core.seeding import STREAM_APPEARANCE, STREAM_GAZE, STREAM_POSE, view_rng
from nvsynth.recon.eyeball import EyeballModel
from nvsynth.recon.record import ReconRecord
from nvsynth.render.appearance import appearance_columns, sample_appearance
from nvsynth.render.egl_devices import EglDevice, GlInfo
from nvsynth.render.gaze import GazeLabels, GazeSpec
from nvsynth.render.patterns import Pattern
from nvsynth.render.views import NormalizedSource, View, normalize_record, sample_view


@dataclass(frozen=True)
class Source:
    """One recon record to render, in frame order."""

    path: Path
    frame_index: int


@dataclass(frozen=True)
class SourceItem:
    """One work item of the stage: a subject's source."""

    subject: str
    source: Source
    eyeball: EyeballModel | None = None  # the subject's eyeball model, for render.gaze other than follow-head


@dataclass(frozen=True)
class Skip:
    """A view (``view_index >= 0``) or a whole source (``-1``) that was not rendered, and why."""

    subject: str
    frame_index: int
    view_index: int
    source_file: str
    reason: str

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.frame_index, self.view_index, self.source_file)

    def as_json(self) -> dict[str, Any]:
        """The record as stored in the file attribute ``skipped_views`` and the manifest (field order kept)."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Skip:
        return cls(str(d["subject"]), int(d["frame_index"]), int(d["view_index"]), str(d["source_file"]),
                   str(d["reason"]))  # fmt: skip


@dataclass(frozen=True)
class RenderSpec:
    """What a worker slot needs to render sources; pickled once per slot."""

    cfg: Config
    seed: int
    pattern: Pattern
    image_root: Path | None  # where ``source_file`` is when a record's own ``image_root`` does not hold it
    device: EglDevice | None = None  # chosen by the run (render.egl_devices); None: each slot chooses from cfg

    @property
    def norm(self) -> geometry.NormSpec:
        """The output's normalization constants (``render.normalization``)."""
        return geometry.NORM_SPECS[self.cfg.render.normalization]

    def image_root_of(self, record: ReconRecord) -> Path | None:
        """The folder the record's ``source_file`` is relative to: its own, else the configured input's."""
        if record.image_root and image_exists(Path(record.image_root), record.source_file):
            return Path(record.image_root)
        return self.image_root
    gaze: GazeSpec = field(default_factory=GazeSpec)  # render.gaze (follow-head: eyes turn with the head)


@dataclass
class SourceResult:
    """The rows of one source (view order) and what was skipped."""

    frame_index: int
    columns: dict[str, Any] | None  # None when no view was rendered
    skips: list[Skip] = field(default_factory=list)
    gl: GlInfo | None = None  # what the slot's context draws with
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, worker side

    @property
    def rows(self) -> int:
        return 0 if self.columns is None else len(self.columns["view_index"])


@dataclass
class PreparedSource:
    """One source ready for the renderer (:meth:`SourceRenderer.prepare`)."""

    frame: int
    source_file: str
    image: NDArray[np.uint8]  # the texture: the source's atlas (render/atlas.py), BGR
    mesh: Any  # render.mesh.RenderMesh
    views: list[View]
    kept: list[int]  # view indices rendered
    attempts: list[int]
    params: list[Any]  # render.appearance.AppearanceParams per view
    backdrops: list[Any]  # render.gl.Backdrop per view
    skips: list[Skip]
    eyes: Any = None  # render.eye_gl.EyeScene when the views' eyes are redirected
    gaze: list[GazeLabels] | None = None  # the gaze columns per view (render.gaze other than follow-head)

    @property
    def transforms(self) -> NDArray[np.float64]:
        return np.stack([vw.transform for vw in self.views])


class Laps:
    """Wall time per named stage: each call charges the time since the previous one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._t
        self._t = now


class SourceRenderer:
    """Renders sources: one FaceRenderer and one background listing, made in the process that uses them."""

    def __init__(self, spec: RenderSpec, backgrounds: Any) -> None:
        from nvsynth.recon.template import template_from_config
        from nvsynth.render.egl_devices import select_device
        from nvsynth.render.gl import FaceRenderer, use_device
        from nvsynth.render.uvlayout import TemplateChart

        self.spec = spec
        size = spec.cfg.render.render_size  # drawn at this size, reduced to the patch (render.compose)
        self.backgrounds = backgrounds.at_size(size)
        use_device(spec.device if spec.device is not None else select_device(spec.cfg.render.device))
        self.renderer = FaceRenderer(size, camera_matrix=geometry.normalized_camera_matrix(size, spec.norm))
        self.chart = TemplateChart.of(template_from_config(spec.cfg))  # the atlas layout, rasterised once
        self._gl: GlInfo | None = None
        self._full: NDArray[np.uint8] | None = None  # render_composited's output, reused from source to source

    @property
    def gl(self) -> GlInfo:
        """``GL_RENDERER``, ``GL_VERSION`` and the EGL device this slot draws with."""
        if self._gl is None:
            from nvsynth.render.gl import context_info

            self._gl = context_info()
        return self._gl

    def close(self) -> None:
        """Release the renderer's GL objects (the executor calls this when the slot ends)."""
        self.renderer.release()

    def prepare(self, subject: str, source: Source, lap: Laps | None = None,
                eyeball: EyeballModel | None = None) -> PreparedSource | SourceResult:  # fmt: skip
        """Everything of one source up to the GL call: record, image, views, appearance, mesh, backdrops.

        Returns a :class:`SourceResult` without rows when the source is skipped
        (unreadable record or image, or no view within the pose limit). With
        ``render.gaze`` other than follow-head, ``eyeball`` is the subject's model.
        """
        from nvsynth.render.compose import backdrops
        from nvsynth.render.mesh import build_render_mesh

        cfg = self.spec.cfg.render
        seed = self.spec.seed
        frame = source.frame_index
        lap = Laps() if lap is None else lap

        def skip_all(reason: str) -> SourceResult:
            return SourceResult(frame, None, [Skip(subject, frame, -1, "", reason)])

        try:
            record = ReconRecord.load(source.path)
        except (OSError, ValueError) as err:
            return skip_all(f"unreadable recon record {source.path} ({str(err).splitlines()[0]})")
        root = self.spec.image_root_of(record)
        image = None if root is None else read_image(root, record.source_file)
        if image is None:
            return skip_all(f"source image not found or unreadable: {Path(root or '') / record.source_file}")
        src = normalize_record(record, self.spec.norm)
        lap("load")

        views: list[View] = []
        kept: list[int] = []
        attempts: list[int] = []
        skips: list[Skip] = []
        for v in range(cfg.views):
            rng = view_rng(seed, subject, frame, v, STREAM_POSE)
            s = sample_view(src, self.spec.pattern, rng, record.landmarks_3d, cfg.max_pose_deg, cfg.max_attempts)
            if s.view is None:
                skips.append(Skip(subject, frame, v, record.source_file, s.reason))
                continue
            views.append(s.view)
            kept.append(v)
            attempts.append(s.attempts)
        eyes, gaze = None, None
        if self.spec.gaze.redirects and views:
            lap("sample")
            eyes, gaze = self._gaze(subject, record, image, src, eyeball, views, kept, attempts, skips)
            lap("mesh")  # the eye rig: the face's atlas and mesh with eye openings, eye textures, gaze draws
        if not views:
            return SourceResult(frame, None, skips, self.gl, lap.seconds)

        app_rngs = [view_rng(seed, subject, frame, v, STREAM_APPEARANCE) for v in kept]
        params = [sample_appearance(r, cfg, len(self.backgrounds)) for r in app_rngs]
        lap("sample")
        if eyes is None:
            textured = build_render_mesh(record, image, self.chart)  # the source's texture atlas and mesh
            texture, mesh = textured.texture, textured.mesh
        else:  # the same, with eye openings and lids (render/eyes.py)
            texture, mesh = eyes.rig.texture, eyes.rig.face
        lap("mesh")
        looks = backdrops(params, self.backgrounds, self.renderer.size)
        lap("backdrop")
        return PreparedSource(
            frame=frame,
            source_file=record.source_file,
            image=texture,
            mesh=mesh,
            views=views,
            kept=kept,
            attempts=attempts,
            params=params,
            backdrops=looks,
            skips=skips,
            eyes=eyes,
            gaze=gaze,
        )

    def _gaze(self, subject: str, record: ReconRecord, image: NDArray[np.uint8], src: NormalizedSource,
              eyeball: EyeballModel | None, views: list[View], kept: list[int], attempts: list[int],
              skips: list[Skip]) -> tuple[Any, list[GazeLabels]]:  # fmt: skip
        """Redirect the views' eyes (``render.gaze``): new labels in ``views``, skipped views dropped in place.

        A source whose eyes cannot be redirected (no eyeball model or irises, an
        eye closed) keeps its own eyes: labels follow the head, ``gaze_redirected`` 0.
        """
        from nvsynth.render.eye_gl import EyeScene
        from nvsynth.render.eyes import build_eye_rig, eye_pose
        from nvsynth.render.gaze import eye_orientations, follow_head_labels, primary_gaze, redirect_view, sample_gaze

        rig = None if eyeball is None else build_eye_rig(record, image, eyeball, self.chart)
        if rig is None:
            return None, [follow_head_labels(vw, record.gaze_target) for vw in views]
        primary = primary_gaze(rig, src)
        keep, labels, poses = [], [], []
        for i, (vw, v) in enumerate(zip(views, kept, strict=True)):
            rng = view_rng(self.spec.seed, subject, record.frame_index, v, STREAM_GAZE)
            draw = sample_gaze(self.spec.gaze, rng, vw, primary, self.spec.cfg.render.max_attempts)
            if isinstance(draw, str):
                skips.append(Skip(subject, record.frame_index, v, record.source_file, draw))
                continue
            new, lab = redirect_view(vw, draw)
            views[i] = new
            keep.append(i)
            labels.append(lab)
            poses.append(eye_pose(rig, eye_orientations(rig, new, lab.target)))
        views[:] = [views[i] for i in keep]
        kept[:] = [kept[i] for i in keep]
        attempts[:] = [attempts[i] for i in keep]
        return EyeScene(rig, tuple(poses)), labels

    def render_prepared(self, prep: PreparedSource) -> NDArray[np.uint8]:
        """The GL call alone: the source's views composited over their backdrops at render size.

        The result is a view into this renderer's buffer, valid until its next call.
        """
        n, S = len(prep.views), self.renderer.size
        if self._full is None or len(self._full) < n:
            self._full = np.empty((n, S, S, 4), dtype=np.uint8)
        return self.renderer.render_composited(
            prep.image, prep.mesh, prep.transforms, [p.light for p in prep.params], prep.backdrops, out=self._full[:n],
            eyes=prep.eyes,
        )  # fmt: skip

    def render_source(self, subject: str, source: Source, eyeball: EyeballModel | None = None) -> SourceResult:
        """The rows of one source, in view order (:data:`nvsynth.core.schema.FIELDS`, and
        :data:`~nvsynth.core.schema.GAZE_FIELDS` when ``render.gaze`` redirects the eyes)."""
        from nvsynth.render.compose import finish_composited

        lap = Laps()
        prep = self.prepare(subject, source, lap, eyeball)
        if isinstance(prep, SourceResult):
            return prep
        # composited in the renderer's pass (background, darkening), then area-resized to 224
        full = self.render_prepared(prep)
        lap("render")
        patches, masks = finish_composited(full)
        lap("compose")
        # compressed here, in the worker, so that the writer only copies bytes
        patch_rows = encode_rows(FIELD_BY_NAME["face_patch"], patches)
        mask_rows = encode_rows(FIELD_BY_NAME["face_mask"], masks)
        lap("encode")
        views = prep.views
        n = len(views)
        columns: dict[str, Any] = {
            "face_patch": patch_rows,
            "face_mask": mask_rows,
            "face_gaze": np.array([vw.face_gaze for vw in views], dtype=np.float32),
            "face_head_pose": np.array([vw.face_head_pose for vw in views], dtype=np.float32),
            "rotation_matrix": np.array([vw.rotation_matrix for vw in views], dtype=np.float32),
            "face_mat_norm": np.array([vw.face_mat_norm for vw in views], dtype=np.float32),
            "landmarks_norm": np.array([vw.landmarks_norm for vw in views], dtype=np.float32),
            "frame_index": np.full(n, prep.frame, dtype=np.int32),
            "source_file": [prep.source_file] * n,
            "target_pose": np.array([vw.target for vw in views], dtype=np.float32),
            "view_index": np.array(prep.kept, dtype=np.int32),
            "pose_attempts": np.array(prep.attempts, dtype=np.int32),
            **appearance_columns(prep.params),
        }
        if prep.gaze is not None:
            columns["eye_rotation"] = np.array([g.eye_rotation for g in prep.gaze], dtype=np.float32)
            columns["gaze_target_3d"] = np.array([g.target for g in prep.gaze], dtype=np.float32)
            columns["gaze_redirected"] = np.array([g.redirected for g in prep.gaze], dtype=np.uint8)
        return SourceResult(prep.frame, columns, prep.skips, self.gl, lap.seconds)


def start_source_renderer(spec: RenderSpec, backgrounds: Any) -> SourceRenderer:
    """A worker slot's state (the executor's setup, called inside the worker): its renderer.

    A failure becomes one :class:`RenderError` naming the cause (the executor
    reports it from the slot's first item).
    """
    try:
        return SourceRenderer(spec, backgrounds)
    except RenderError:
        raise
    except Exception as err:
        raise RenderError(f"render worker could not start ({type(err).__name__}: {err})") from None


def render_item(renderer: SourceRenderer, item: SourceItem) -> SourceResult:
    """The work function: one source of one subject."""
    return renderer.render_source(item.subject, item.source, item.eyeball)


__all__ = [
    "Laps",
    "PreparedSource",
    "RenderSpec",
    "Skip",
    "Source",
    "SourceItem",
    "SourceRenderer",
    "SourceResult",
    "render_item",
    "start_source_renderer",
]
