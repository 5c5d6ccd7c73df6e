"""``nvsynth render -save OUTDIR``: recon records -> novel views -> one HDF5 file per subject.

Run control
-----------
* Sources are a subject's recon records (``<data.mpii.obj>/<subject>/**.npz``)
  in frame order; ``--limit K`` keeps the first K. Rows are written in frame
  order, then view order, whatever the number of workers: results come back
  through an ordered, bounded window of tasks, so at most a few sources are
  in memory at a time and RSS stays flat however large the subject.
* Every random draw of a view comes from ``view_rng(seed, subject, frame,
  view, stream)``, so the output is identical across runs and worker counts.
* ``--workers N`` (N > 1) renders in N 'spawn' processes, each with its own
  :class:`~render.gl.FaceRenderer` made by the pool's initializer (so the GL
  context is created after the process starts) and one llvmpipe thread;
  N = 1 renders in-process. The processes are started before the sources
  are listed. Per source a worker samples the views and their appearance,
  builds the mesh, composites each view in the renderer's own pass
  (:meth:`~render.gl.FaceRenderer.render_composited` over
  :func:`render.compose.backdrops`), area-resizes to 224
  (:func:`render.compose.finish_composited`) and lzf-compresses the image
  rows (:func:`nvsynth.core.h5io.encode_rows`), so the writer only copies bytes.
* Each subject is written to ``<subject>.h5.partial`` and renamed when
  complete. Rows are appended in batches of whole sources (at least
  ``WRITE_ROWS`` rows), each flushed with a progress marker (attribute
  ``progress_frame``, the last source written), so an interrupted subject
  can be finished.
* SIGINT (Ctrl-C) writes the sources already rendered, then stops: the
  partial file stays, no final file appears for that subject,
  ``manifest.json`` says ``interrupted`` and the command exits with 130
  (a second Ctrl-C stops at once; the partial keeps its last flushed rows).
* ``--resume`` skips subjects whose final file exists and reopens a partial
  file, keeping its committed rows and continuing with the next source; it
  refuses a partial file made with another configuration, seed, pattern or
  view count. Without ``--resume`` an existing final file is an error (one
  line suggesting ``--resume`` or removing it); nothing is overwritten. A
  stale partial file is started afresh.
* Sources that cannot be used (unreadable record, missing image) and views
  with no head pose within ``render.max_pose_deg`` after
  ``render.max_attempts`` draws are skipped and recorded (manifest and the
  file attribute ``skipped_views``). A subject named with ``--subjects`` that
  has no records is an error; without ``--subjects`` it is skipped with a
  line and recorded.
* ``OUTDIR/manifest.json`` (written atomically after every subject) records
  the configuration, versions, per-subject counts, skipped views and sources
  with reasons, and the elapsed time.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cv2
import h5py
import numpy as np
from numpy.typing import NDArray

from nvsynth import __version__
from nvsynth.core.config import Config
from nvsynth.core.errors import UserError
from nvsynth.core.h5io import CORE_FIELDS, EncodedRows, Field, H5Writer, encode_rows, partial_path
from nvsynth.core.seeding import STREAM_APPEARANCE, STREAM_POSE, view_rng
from nvsynth.recon.record import ReconRecord
from nvsynth.render.appearance import APPEARANCE_ATTRS, APPEARANCE_FIELDS, appearance_columns, sample_appearance
from nvsynth.render.patterns import Pattern, load_pattern
from nvsynth.render.views import View, normalize_record, sample_view

#: Per-row datasets of the pose sampling (contracts.md).
POSE_FIELDS: tuple[Field, ...] = (
    Field("target_pose", (2,), "float32", "sampled target head pose (pitch, yaw), radians"),
    Field("view_index", (), "int32", "index of the view within its source frame"),
    Field("pose_attempts", (), "int32", "target draws until the view was within render.max_pose_deg"),
)
FIELDS: tuple[Field, ...] = (*CORE_FIELDS, *POSE_FIELDS, *APPEARANCE_FIELDS)
_FIELD = {f.name: f for f in FIELDS}
MANIFEST = "manifest.json"
#: Attributes this module adds to every subject file (besides contracts.md's).
PROGRESS_ATTR = "progress_frame"
SKIPS_ATTR = "skipped_views"
#: Sources in flight per worker (bounds memory; 2 keeps every worker busy).
IN_FLIGHT_PER_WORKER = 2
#: Rows buffered before one h5 append (per-append overhead is ~10-20 ms for the 20 datasets).
WRITE_ROWS = 128


# -- sources -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One recon record to render, in frame order."""

    path: Path
    frame_index: int


def list_sources(obj_root: Path, subject: str, limit: int | None = None) -> tuple[list[Source], list[dict[str, Any]]]:
    """The subject's recon records in frame order (the first ``limit``), and skips for unreadable ones.

    Only each record's ``frame_index`` is read here. Two records with the same
    frame index are an error (the folder mixes two recon runs).
    """
    folder = Path(obj_root) / subject
    paths = sorted(p for p in folder.rglob("*.npz") if not p.name.endswith(".tmp.npz")) if folder.is_dir() else []
    sources: list[Source] = []
    bad: list[dict[str, Any]] = []
    for p in paths:
        try:
            with np.load(p, allow_pickle=False) as z:
                frame = int(z["frame_index"])
        except (OSError, KeyError, ValueError, EOFError) as err:
            reason = f"unreadable recon record {p} ({(str(err).splitlines() or [type(err).__name__])[0]})"
            bad.append(_skip(subject, -1, -1, str(p.relative_to(obj_root)), reason))
            continue
        sources.append(Source(p, frame))
    sources.sort(key=lambda s: (s.frame_index, str(s.path)))
    for a, b in itertools.pairwise(sources):
        if a.frame_index == b.frame_index:
            raise UserError(f"recon records {a.path} and {b.path} have the same frame index {a.frame_index}")
    return (sources if limit is None else sources[: max(0, limit)]), bad


def select_subjects(obj_root: Path, wanted: str | None) -> list[str]:
    """``--subjects p00,p03`` (validated), or every subject folder that holds recon records."""
    from nvsynth.datasets.mpii import SUBJECT_RE  # main process only (scipy.io): workers never import it

    if wanted:
        names = [s.strip() for s in wanted.split(",") if s.strip()]
        for n in names:
            if not SUBJECT_RE.match(n):
                raise UserError(f"--subjects: '{n}' is not a subject name like p00", exit_code=2)
        return names
    root = Path(obj_root)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and SUBJECT_RE.match(p.name)) if root.is_dir() else []
    if not names:
        raise UserError(f"no recon records under {root}: run `nvsynth recon` first")
    return names


# -- per-source work (runs in a worker process, or in-process with one worker) ---------------


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs; pickled once per worker."""

    cfg: Config
    seed: int
    pattern: Pattern
    raw_root: Path


@dataclass
class SourceResult:
    """The rows of one source (view order) and what was skipped."""

    frame_index: int
    columns: dict[str, Any] | None  # None when no view was rendered
    skips: list[dict[str, Any]] = field(default_factory=list)
    gl_renderer: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, worker side

    @property
    def rows(self) -> int:
        return 0 if self.columns is None else len(self.columns["view_index"])


class SourceRenderer:
    """Renders sources: one FaceRenderer and one background listing, made in the process that uses them."""

    def __init__(self, spec: RunSpec, backgrounds: Any) -> None:
        from nvsynth.recon.template import template_from_config
        from nvsynth.render.gl import FaceRenderer
        from nvsynth.render.uvlayout import TemplateChart

        self.spec = spec
        self.backgrounds = backgrounds
        self.renderer = FaceRenderer()
        self.chart = TemplateChart.of(template_from_config(spec.cfg))  # the atlas layout, rasterised once
        self._gl_name = ""
        self._full: NDArray[np.uint8] | None = None  # render_composited's output, reused from source to source

    @property
    def gl_renderer(self) -> str:
        if not self._gl_name:
            from nvsynth.render.gl import get_context

            self._gl_name = str(get_context().info.get("GL_RENDERER", ""))
        return self._gl_name

    def __call__(self, task: tuple[str, Source]) -> SourceResult:
        subject, source = task
        return self.render_source(subject, source)

    def prepare(self, subject: str, source: Source, lap: _Laps | None = None) -> PreparedSource | SourceResult:
        """Everything of one source up to the GL call: record, image, views, appearance, mesh, backdrops.

        Returns a :class:`SourceResult` without rows when the source is skipped
        (unreadable record or image, or no view within the pose limit).
        """
        from nvsynth.render.compose import backdrops
        from nvsynth.render.mesh import build_render_mesh

        cfg = self.spec.cfg.render
        seed = self.spec.seed
        frame = source.frame_index
        lap = _Laps() if lap is None else lap

        def skip_all(reason: str) -> SourceResult:
            return SourceResult(frame, None, [_skip(subject, frame, -1, "", reason)])

        try:
            record = ReconRecord.load(source.path)
        except (OSError, ValueError) as err:
            return skip_all(f"unreadable recon record {source.path} ({str(err).splitlines()[0]})")
        image_path = self.spec.raw_root / record.source_file
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            return skip_all(f"source image not found or unreadable: {image_path}")
        src = normalize_record(record)
        lap("load")

        views: list[View] = []
        kept: list[int] = []
        attempts: list[int] = []
        skips: list[dict[str, Any]] = []
        for v in range(cfg.views):
            rng = view_rng(seed, subject, frame, v, STREAM_POSE)
            s = sample_view(src, self.spec.pattern, rng, record.landmarks_3d, cfg.max_pose_deg, cfg.max_attempts)
            if s.view is None:
                skips.append(_skip(subject, frame, v, record.source_file, s.reason))
                continue
            views.append(s.view)
            kept.append(v)
            attempts.append(s.attempts)
        if not views:
            return SourceResult(frame, None, skips, self.gl_renderer, lap.seconds)

        app_rngs = [view_rng(seed, subject, frame, v, STREAM_APPEARANCE) for v in kept]
        params = [sample_appearance(r, cfg, len(self.backgrounds)) for r in app_rngs]
        lap("sample")
        textured = build_render_mesh(record, image, self.chart)  # the source's texture atlas and mesh
        lap("mesh")
        looks = backdrops(params, self.backgrounds, self.renderer.size)
        lap("backdrop")
        return PreparedSource(
            frame=frame,
            source_file=record.source_file,
            image=textured.texture,
            mesh=textured.mesh,
            views=views,
            kept=kept,
            attempts=attempts,
            params=params,
            backdrops=looks,
            skips=skips,
        )

    def render_prepared(self, prep: PreparedSource) -> NDArray[np.uint8]:
        """The GL call alone: the source's views composited over their backdrops at render size.

        The result is a view into this renderer's buffer, valid until its next call.
        """
        n, S = len(prep.views), self.renderer.size
        if self._full is None or len(self._full) < n:
            self._full = np.empty((n, S, S, 4), dtype=np.uint8)
        return self.renderer.render_composited(
            prep.image, prep.mesh, prep.transforms, [p.light for p in prep.params], prep.backdrops, out=self._full[:n]
        )

    def render_source(self, subject: str, source: Source) -> SourceResult:
        from nvsynth.render.compose import finish_composited

        lap = _Laps()
        prep = self.prepare(subject, source, lap)
        if isinstance(prep, SourceResult):
            return prep
        # composited in the renderer's pass (background, darkening), then area-resized to 224
        full = self.render_prepared(prep)
        lap("render")
        patches, masks = finish_composited(full)
        lap("compose")
        # compressed here, in the worker, so that the writer only copies bytes
        patch_rows = encode_rows(_FIELD["face_patch"], patches)
        mask_rows = encode_rows(_FIELD["face_mask"], masks)
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
        return SourceResult(prep.frame, columns, prep.skips, self.gl_renderer, lap.seconds)


@dataclass
class PreparedSource:
    """One source ready for the renderer (:meth:`SourceRenderer.prepare`)."""

    frame: int
    source_file: str
    image: NDArray[np.uint8]  # the texture: the source's atlas, BGR
    mesh: Any  # render.mesh.RenderMesh
    views: list[View]
    kept: list[int]  # view indices rendered
    attempts: list[int]
    params: list[Any]  # render.appearance.AppearanceParams per view
    backdrops: list[Any]  # render.gl.Backdrop per view
    skips: list[dict[str, Any]]

    @property
    def transforms(self) -> NDArray[np.float64]:
        return np.stack([vw.transform for vw in self.views])


class _Laps:
    """Wall time per named stage: each call charges the time since the previous one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._t
        self._t = now


def _skip_key(s: dict[str, Any]) -> tuple[int, int, str]:
    return (int(s["frame_index"]), int(s["view_index"]), str(s["source_file"]))


def _skip(subject: str, frame: int, view: int, source_file: str, reason: str) -> dict[str, Any]:
    return {"subject": subject, "frame_index": int(frame), "view_index": int(view), "source_file": source_file,
            "reason": reason}  # fmt: skip


_WORKER: SourceRenderer | None = None
_WORKER_ERROR = ""


def _worker_init(spec: RunSpec, backgrounds: Any) -> None:
    """Pool initializer: ignore SIGINT (the parent handles it), then build this process's renderer.

    A failure is kept and reported, with its message, by the first task
    (an initializer that raises only says the pool is broken).
    """
    global _WORKER, _WORKER_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Several workers already use every core: one llvmpipe thread each avoids oversubscription
    # (read by Mesa when the GL context is made, on the first render; a user setting wins).
    os.environ.setdefault("LP_NUM_THREADS", "1")
    try:
        _WORKER = SourceRenderer(spec, backgrounds)
    except Exception as err:
        _WORKER_ERROR = f"{type(err).__name__}: {err}"


def _worker_render(task: tuple[str, Source]) -> SourceResult:
    if _WORKER is None:
        raise RuntimeError(f"render worker could not start ({_WORKER_ERROR})")
    return _WORKER(task)


def ordered_map(submit: Callable[[Any], Any], tasks: Iterator[Any], depth: int) -> Iterator[Any]:
    """Results of ``submit(task).result()`` in task order, with at most ``depth`` tasks in flight."""
    pending: deque[Any] = deque()
    for task in tasks:
        pending.append(submit(task))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# -- writing -----------------------------------------------------------------------------


class _Interrupt:
    """SIGINT sets a flag checked between sources; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def concat_columns(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The rows of several sources as one batch (zero rows when ``parts`` is empty)."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        cols = [p[f.name] for p in parts]
        if cols and all(isinstance(c, EncodedRows) for c in cols):
            out[f.name] = EncodedRows(f.shape, f.dtype, tuple(chunk for c in cols for chunk in c.chunks))
        elif f.dtype == "str":
            out[f.name] = [v for c in cols for v in c]
        elif cols:
            out[f.name] = np.concatenate([np.asarray(c, dtype=f.dtype) for c in cols])
        else:
            out[f.name] = np.zeros((0, *f.shape), dtype=f.dtype)
    return out


def run_hash(cfg: Config) -> str:
    """The config digest that decides whether outputs are compatible (worker count excluded)."""
    return _canonical(cfg).digest()


def _canonical(cfg: Config) -> Config:
    return cfg.model_copy(update={"render": cfg.render.model_copy(update={"workers": 1})})


def file_attrs(cfg: Config, subject: str) -> dict[str, Any]:
    """The file attributes of a subject's h5 (contracts.md), identical for any worker count."""
    return {
        "nvsynth_version": __version__,
        "config_hash": run_hash(cfg),
        "seed": int(cfg.render.seed),
        "pattern": cfg.render.pattern,
        "subject": subject,
        "views_per_source": int(cfg.render.views),
        "config_json": json.dumps(_canonical(cfg).model_dump(mode="json"), sort_keys=True),
    }


def _read_attrs(path: Path) -> dict[str, Any]:
    try:
        with h5py.File(path, "r") as f:
            return {k: f.attrs[k] for k in f.attrs}
    except OSError:
        return {}


def _check_compatible(path: Path, want: dict[str, Any]) -> None:
    have = _read_attrs(path)
    if not have:
        return  # unreadable: the writer starts it afresh
    for key in ("seed", "pattern", "views_per_source", "config_hash"):
        a, b = have.get(key), want[key]
        if key in have and str(a) != str(b):
            raise UserError(
                f"{path}: made with {key}={a}, this run has {key}={b}; "
                "rerun with the same configuration or remove the file"
            )


def _skips_of(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    raw = attrs.get(SKIPS_ATTR)
    return list(json.loads(raw)) if raw else []


@dataclass
class SubjectReport:
    status: str  # written | resumed | finished-before | interrupted
    rows: int = 0
    rows_this_run: int = 0
    sources: int = 0
    skips: list[dict[str, Any]] = field(default_factory=list)
    file: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "file": self.file,
            "rows": self.rows,
            "rows_this_run": self.rows_this_run,
            "sources": self.sources,
            "views_skipped": sum(1 for s in self.skips if s["view_index"] >= 0),
            "sources_skipped": sum(1 for s in self.skips if s["view_index"] < 0),
        }


# -- the run -----------------------------------------------------------------------------


def versions(gl_renderer: str | None) -> dict[str, str | None]:
    import moderngl

    return {
        "nvsynth": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "moderngl": getattr(moderngl, "__version__", None),
        "gl_renderer": gl_renderer,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "cv2": cv2.__version__,
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _Run:
    def __init__(self, cfg: Config, outdir: Path, resume: bool) -> None:
        self.cfg = cfg
        self.outdir = Path(outdir)
        self.resume = resume
        self.t0 = time.perf_counter()
        self.reports: dict[str, SubjectReport] = {}
        self.gl_renderer: str | None = None
        self.pattern: Pattern | None = None
        self.status = "running"
        self.timing: dict[str, float] = {}  # worker stages (summed over workers), main-side write/wait
        self.first_result_s: float | None = None

    def charge(self, seconds: dict[str, float]) -> None:
        for k, v in seconds.items():
            self.timing[k] = self.timing.get(k, 0.0) + v

    def manifest(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.t0
        rendered = sum(r.rows_this_run for r in self.reports.values())
        pat = self.pattern
        return {
            "status": self.status,
            "config": self.cfg.model_dump(mode="json"),
            "config_hash": run_hash(self.cfg),
            "pattern": {
                "name": self.cfg.render.pattern,
                "file": pat.origin if pat else None,
                "rows": None if pat is None or pat.poses is None else len(pat.poses),
            },
            "versions": versions(self.gl_renderer),
            "subjects": {k: r.as_json() for k, r in self.reports.items()},
            "totals": {
                "rows": sum(r.rows for r in self.reports.values()),
                "rows_this_run": rendered,
                "views_skipped": sum(r.as_json()["views_skipped"] for r in self.reports.values()),
                "sources_skipped": sum(r.as_json()["sources_skipped"] for r in self.reports.values()),
            },
            "skips": [s for r in self.reports.values() for s in r.skips],
            "elapsed_s": round(elapsed, 3),
            "images_per_s": round(rendered / elapsed, 2) if elapsed > 0 else None,
            "timing_s": {
                "first_result": None if self.first_result_s is None else round(self.first_result_s, 3),
                **{k: round(v, 3) for k, v in sorted(self.timing.items())},
            },
        }

    def save_manifest(self) -> None:
        write_json_atomic(self.outdir / MANIFEST, self.manifest())


def run(cfg: Config, outdir: Path, subjects: str | None = None, limit: int | None = None, resume: bool = False) -> int:
    """Render every selected subject's sources into ``OUTDIR/<subject>.h5``; returns the exit code."""
    if cfg.data.mpii.obj is None:
        raise UserError("data.mpii.obj is not set: point it at the folder `nvsynth recon` wrote", exit_code=2)
    if cfg.data.mpii.raw is None:
        raise UserError("data.mpii.raw is not set: point it at the MPIIFaceGaze root (source images)", exit_code=2)
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1", exit_code=2)
    obj_root, raw_root = Path(cfg.data.mpii.obj), Path(cfg.data.mpii.raw)
    outdir = Path(outdir)
    state = _Run(cfg, outdir, resume)
    state.pattern = load_pattern(cfg)  # read once per run
    from nvsynth.render.backgrounds import BackgroundSource

    backgrounds = BackgroundSource(cfg.data.background_path)  # listed once per run
    spec = RunSpec(cfg=cfg, seed=int(cfg.render.seed), pattern=state.pattern, raw_root=raw_root)
    workers = int(cfg.render.workers)
    pool: ProcessPoolExecutor | None = None
    local: SourceRenderer | None = None
    try:
        if workers > 1:
            # 'spawn': each worker starts clean; its renderer (made by _worker_init) creates the GL context in
            # that process, on its first render. The processes are started now (one no-op task each), so that
            # their imports overlap with listing the sources below.
            pool = ProcessPoolExecutor(
                workers, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(spec, backgrounds)
            )
            for _ in range(workers):
                pool.submit(os.getpid)
        plan = _plan(cfg, obj_root, outdir, subjects, limit, resume, state)
        with _Interrupt() as stop:
            try:
                if pool is not None:
                    executor = pool

                    def submit(task: Any) -> Any:
                        return executor.submit(_worker_render, task)
                else:
                    local = SourceRenderer(spec, backgrounds)
                    renderer = local

                    def submit(task: Any) -> Any:
                        return _Done(renderer(task))

                for name, sources, bad in plan:
                    _render_subject(state, name, sources, bad, submit, workers * IN_FLIGHT_PER_WORKER, stop)
                    state.save_manifest()
                state.status = "finished"
                state.save_manifest()
            except KeyboardInterrupt:
                state.status = "interrupted"
                state.save_manifest()
                raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # at most one source per worker is finishing
        if local is not None:
            local.renderer.release()
    done = sum(r.rows_this_run for r in state.reports.values())
    elapsed = time.perf_counter() - state.t0
    print(
        f"rendered {done} images for {len(plan)} subject(s) in {elapsed:.1f} s "
        f"({done / elapsed if elapsed > 0 else 0.0:.1f} images/s) -> {outdir}"
    )
    return 0


def _plan(
    cfg: Config, obj_root: Path, outdir: Path, subjects: str | None, limit: int | None, resume: bool, state: _Run
) -> list[tuple[str, list[Source], list[dict[str, Any]]]]:
    """The subjects to render with their sources; user mistakes raise before anything is written."""
    names = select_subjects(obj_root, subjects)
    plan: list[tuple[str, list[Source], list[dict[str, Any]]]] = []
    for name in names:
        sources, bad = list_sources(obj_root, name, limit)
        if not sources:
            message = f"subject {name}: no recon records under {obj_root / name}: run `nvsynth recon` first"
            if subjects:  # named on the command line: an error
                raise UserError(message)
            print(f"nvsynth render: skipping {message}", file=sys.stderr)
            state.reports[name] = SubjectReport(status="no-records")
            continue
        final = outdir / f"{name}.h5"
        if final.exists() and not resume:
            raise UserError(f"{final} exists: pass --resume to skip finished subjects, or remove it")
        if resume and (final.exists() or partial_path(final).exists()):
            _check_compatible(final if final.exists() else partial_path(final), file_attrs(cfg, name))
        plan.append((name, sources, bad))
    if not plan:
        raise UserError(f"no recon records under {obj_root}: run `nvsynth recon` first")
    return plan


@dataclass
class _Done:
    """An already computed result with the Future interface (in-process rendering)."""

    value: Any

    def result(self) -> Any:
        return self.value


def _render_subject(
    state: _Run,
    subject: str,
    sources: Sequence[Source],
    unreadable: Sequence[dict[str, Any]],
    submit: Callable[[Any], Any],
    depth: int,
    stop: _Interrupt,
) -> None:
    cfg = state.cfg
    final = state.outdir / f"{subject}.h5"
    report = SubjectReport(status="written", file=final.name, sources=len(sources))
    state.reports[subject] = report
    if final.exists():  # only reachable with --resume
        attrs = _read_attrs(final)
        with h5py.File(final, "r") as f:
            report.rows = int(f["view_index"].shape[0]) if "view_index" in f else 0
        report.status = "finished-before"
        report.skips = _skips_of(attrs)
        return

    attrs = file_attrs(cfg, subject)
    writer = H5Writer(final, FIELDS, attrs=attrs, resume=state.resume, dataset_attrs=APPEARANCE_ATTRS)
    try:
        # A reopened partial file carries the progress marker of the run that made it.
        prev = writer.attrs()
        done_frame = int(prev.get(PROGRESS_ATTR, -1))
        if writer.rows:
            done_frame = max(done_frame, int(writer.read_column("frame_index")[-1]))
        skips = {_skip_key(s): s for s in [*_skips_of(prev), *unreadable]}
        if done_frame >= 0:
            report.status = "resumed"
        report.rows = writer.rows
        todo = [s for s in sources if s.frame_index > done_frame]
        total = len(todo) * cfg.render.views
        from tqdm import tqdm  # main process only

        bar = tqdm(total=total, unit="img", desc=subject, dynamic_ncols=True, mininterval=0.5, leave=True)
        pending: list[SourceResult] = []

        def write_pending() -> None:
            """One append (with the progress marker) for the buffered sources: fewer, larger h5 writes."""
            if not pending:
                return
            writer.set_attrs(
                {PROGRESS_ATTR: int(pending[-1].frame_index), SKIPS_ATTR: json.dumps(list(skips.values()))}
            )
            writer.append(concat_columns([r.columns for r in pending if r.columns is not None]))
            report.rows = writer.rows
            report.skips = list(skips.values())
            pending.clear()

        try:
            tasks = ((subject, s) for s in todo)
            t_wait = time.perf_counter()
            for result in ordered_map(submit, tasks, max(1, depth)):
                t_got = time.perf_counter()
                if state.first_result_s is None:
                    state.first_result_s = t_got - state.t0
                state.charge({"main_wait": t_got - t_wait, **{f"worker_{k}": v for k, v in result.seconds.items()}})
                if result.gl_renderer and not state.gl_renderer:
                    state.gl_renderer = result.gl_renderer
                for s in result.skips:
                    skips[_skip_key(s)] = s
                pending.append(result)
                report.rows_this_run += result.rows
                if sum(r.rows for r in pending) >= WRITE_ROWS or stop.requested:
                    write_pending()
                bar.update(cfg.render.views)
                t_wait = time.perf_counter()
                state.charge({"main_write": t_wait - t_got})
                if stop.requested:
                    raise KeyboardInterrupt
            write_pending()
        finally:
            bar.close()
        report.skips = list(skips.values())
        writer.commit()
    except KeyboardInterrupt:
        report.status = "interrupted"
        writer.close()
        raise
    except BaseException:
        writer.close()
        raise


__all__ = ["FIELDS", "POSE_FIELDS", "list_sources", "run", "select_subjects"]
