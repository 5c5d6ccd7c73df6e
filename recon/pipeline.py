"""``nvsynth recon``: one fitted, textured face mesh per MPIIFaceGaze frame.

For every frame: landmarks (:mod:`recon.landmarks`), the fit in the frame's
calibrated camera (:mod:`recon.fit`), visibility (:mod:`recon.visibility`),
then a :class:`~recon.record.ReconRecord` at
``<data.mpii.obj>/<subject>/<dayNN>/<NNNN>.npz`` (written atomically) and,
with ``--export-obj``, a textured OBJ beside it.

Frames without a usable face or image are skipped and recorded, never fatal.
Each subject gets a ``manifest.csv`` listing every frame. Re-running skips
frames whose record exists and loads; ``force`` recomputes them.

Frames are processed in worker processes (``spawn``; each builds its own dlib
objects and template, nothing mutable is shared) with single-threaded BLAS:
the fit's small dense solves are far slower with several BLAS threads per
process.
"""

from __future__ import annotations

import csv
import io
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from nvsynth.core.config import Config
from nvsynth.core.errors import UserError
from nvsynth.core.geometry import HeadPose
from nvsynth.datasets.mpii import Camera, Frame, Subject, open_subject, select_subjects
from nvsynth.recon.export import export_obj
from nvsynth.recon.fit import FitError, FitModel, FitResult, Subdivision, fit_landmarks, fit_weights, subdivision
from nvsynth.recon.landmarks import Landmarks, NoFaceError, check_fan, make_landmarker, models_dir
from nvsynth.recon.record import ReconRecord, record_path
from nvsynth.recon.template import load_landmark_map, template_from_config
from nvsynth.recon.visibility import visible_vertices

#: A fit whose mean reprojection error exceeds this fraction of the outer-eye-corner
#: distance is rejected (the landmarks cannot be a face the template can take).
MAX_ERROR_FRACTION = 0.25
#: Standard deviation of grey levels below which the face box is taken to hold no face.
MIN_FACE_CONTRAST = 4.0

MANIFEST_FIELDS = ("frame_index", "image", "status", "reason", "reprojection_error_px", "detector", "ms")
MANIFEST_FIELDS += ("annotation_deg", "depth_correction_mm")  # fit vs annotation (recon.placement)
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class FrameOutcome:
    """What happened to one frame (one manifest row)."""

    frame_index: int
    image: str  # "dayNN/NNNN.jpg"
    status: str  # "ok", "cached" or "skipped"
    reason: str
    reprojection_error_px: float  # nan when skipped
    detector: str
    ms: float  # processing time, 0 for cached frames
    annotation_deg: float = float("nan")  # fitted head rotation vs the annotation's (nan when skipped)
    depth_correction_mm: float = float("nan")  # depth the mesh was moved by onto the annotation's face centre


# --- one frame ------------------------------------------------------------------------------------


def check_face_contrast(image: NDArray[np.uint8], lms: Landmarks) -> None:
    """A blank or flat face box holds no face, whatever the annotation says."""
    b = lms.box
    h, w = image.shape[:2]
    x0, y0 = int(max(0, b.left)), int(max(0, b.top))
    x1, y1 = int(min(w, b.right)), int(min(h, b.bottom))
    if x1 - x0 < 4 or y1 - y0 < 4:
        raise NoFaceError("face box lies outside the image")
    patch = image[y0:y1, x0:x1]
    gray = patch if patch.ndim == 2 else cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    if float(gray.std()) < MIN_FACE_CONTRAST:
        raise NoFaceError(f"no face: the face box is blank (grey-level std {gray.std():.1f})")


def fit_image(
    image: NDArray[np.uint8],
    camera: Camera,
    landmarker,
    model: FitModel,
    landmarks_6: NDArray[np.float64] | None = None,
    annotation: HeadPose | None = None,
) -> tuple[Landmarks, FitResult]:
    """Landmarks of the face in ``image`` and the template fitted to them in ``camera`` (and ``annotation``)."""
    lms = landmarker(image, landmarks_6)
    check_face_contrast(image, lms)
    ideal = camera.undistort_points(lms.points)
    fit = fit_landmarks(model, ideal, camera.matrix, annotation=annotation)
    io = float(np.linalg.norm(ideal[45] - ideal[36]))
    if fit.reprojection_error_ideal_px > MAX_ERROR_FRACTION * io:
        raise FitError(f"fit rejected: mean error {fit.reprojection_error_ideal_px:.1f} px")
    return lms, fit


def make_record(
    fit: FitResult,
    lms: Landmarks,
    camera: Camera,
    image_size: tuple[int, int],
    model: FitModel,
    *,
    subdiv: Subdivision | None = None,
    subject: str,
    frame_index: int,
    source_file: str,
    annotation_rvec: NDArray[np.float64],
    annotation_tvec: NDArray[np.float64],
    gaze_target: NDArray[np.float64],
) -> ReconRecord:
    """The record of a fitted frame: uv with lens distortion, visibility, all metadata.

    With ``subdiv`` the mesh is refined first (``recon.subdivide``); the fitted
    vertices keep their indices and positions.
    """
    verts, faces, mirror = fit.vertices, model.faces, np.asarray(model.template.mirror)
    if subdiv is not None:
        verts, faces, mirror = subdiv.apply(verts), subdiv.faces, subdiv.mirror
    uv = camera.project(verts, distort=True)
    lm_px = camera.project(fit.landmarks_3d, distort=True)
    err = float(np.linalg.norm(lm_px - lms.points, axis=1).mean())
    visible = visible_vertices(verts, faces, camera.matrix)
    return ReconRecord(
        vertices=verts.astype(np.float32),
        faces=np.asarray(faces, dtype=np.int32),
        uv=uv.astype(np.float32),
        visible=visible,
        mirror=np.asarray(mirror, dtype=np.int32),
        landmarks_2d=lms.points.astype(np.float32),
        landmarks_3d=fit.landmarks_3d.astype(np.float32),
        head_rotation=fit.rotation.astype(np.float64),
        head_translation=fit.translation.astype(np.float64),
        reprojection_error_px=err,
        detector=lms.detector,
        subject=subject,
        frame_index=int(frame_index),
        source_file=source_file,
        image_size=np.array(image_size, dtype=np.int32),
        camera_matrix=np.asarray(camera.matrix, dtype=np.float64),
        dist_coeffs=np.asarray(camera.dist_coeffs, dtype=np.float64).ravel(),
        annotation_rvec=np.asarray(annotation_rvec, dtype=np.float64).reshape(3),
        annotation_tvec=np.asarray(annotation_tvec, dtype=np.float64).reshape(3),
        gaze_target=np.asarray(gaze_target, dtype=np.float64).reshape(3),
        annotation_rotation_deg=fit.annotation_rotation_deg,
        landmark_rotation_deg=fit.landmark_rotation_deg,
        depth_correction_mm=fit.depth_correction_mm,
    )


class FrameProcessor:
    """Per-process state: the landmark backend and the fit model (built once per worker)."""

    def __init__(self, cfg: Config) -> None:
        self.model = FitModel(template_from_config(cfg), load_landmark_map(cfg), fit_weights(cfg.recon))
        self.landmarker = make_landmarker(cfg.recon.detector)
        steps = cfg.recon.subdivide
        self.subdiv = subdivision(self.model.faces, self.model.template.mirror, steps) if steps else None

    def process(self, task: _Task) -> FrameOutcome:
        frame = task.frame
        t0 = time.perf_counter()

        def skipped(reason: str, detector: str = "") -> FrameOutcome:
            ms = (time.perf_counter() - t0) * 1e3
            return FrameOutcome(frame.index, frame.relative_path, "skipped", reason, float("nan"), detector, ms)

        image = cv2.imread(str(frame.image_path), cv2.IMREAD_COLOR)
        if image is None:
            why = "missing image" if not frame.image_path.is_file() else "unreadable or corrupt image"
            return skipped(why)
        try:
            lms, fit = fit_image(image, task.camera, self.landmarker, self.model, frame.landmarks_6, frame.head_pose)
            rec = make_record(
                fit,
                lms,
                task.camera,
                (image.shape[1], image.shape[0]),
                self.model,
                subdiv=self.subdiv,
                subject=frame.subject,
                frame_index=frame.index,
                source_file=f"{frame.subject}/{frame.relative_path}",
                annotation_rvec=frame.head_rvec,
                annotation_tvec=frame.head_tvec,
                gaze_target=frame.gaze_target,
            )
        except (NoFaceError, FitError) as err:
            return skipped(str(err))
        except (ValueError, np.linalg.LinAlgError, cv2.error) as err:
            return skipped(f"fit failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        rec.save(task.out_path)
        if task.export_obj:
            export_obj(rec, image, task.out_path.with_suffix(""))
        ms = (time.perf_counter() - t0) * 1e3
        placed = (rec.annotation_rotation_deg, rec.depth_correction_mm)
        return FrameOutcome(
            frame.index, frame.relative_path, "ok", "", rec.reprojection_error_px, rec.detector, ms, *placed
        )


@dataclass(frozen=True)
class _Task:
    frame: Frame
    camera: Camera
    out_path: Path
    export_obj: bool


_WORKER: FrameProcessor | None = None
_WORKER_ERROR: str | None = None


def _init_worker(cfg_json: str) -> None:
    # A failing initializer would make the pool respawn workers forever: keep the reason
    # and report it from the first task instead.
    global _WORKER, _WORKER_ERROR
    try:
        _WORKER = FrameProcessor(Config.model_validate_json(cfg_json))
    except Exception as err:
        _WORKER_ERROR = str(err).splitlines()[0] if str(err) else type(err).__name__


def _work(task: _Task) -> FrameOutcome:
    if _WORKER is None:
        raise UserError(f"recon worker could not start: {_WORKER_ERROR}")
    return _WORKER.process(task)


# --- a run ----------------------------------------------------------------------------------------


def cached_outcome(frame: Frame, path: Path) -> FrameOutcome | None:
    """The outcome of a frame whose record exists and loads, else ``None``."""
    if not path.is_file():
        return None
    try:
        rec = ReconRecord.load(path)
    except Exception:  # a truncated or foreign file: recompute it
        return None
    placed = (rec.annotation_rotation_deg, rec.depth_correction_mm)
    return FrameOutcome(
        frame.index, frame.relative_path, "cached", "", rec.reprojection_error_px, rec.detector, 0.0, *placed
    )


def write_manifest(path: Path, outcomes: list[FrameOutcome]) -> None:
    """``manifest.csv``: one row per frame, in annotation order (written atomically)."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(MANIFEST_FIELDS)
    for o in sorted(outcomes, key=lambda o: o.frame_index):
        err = "" if not np.isfinite(o.reprojection_error_px) else f"{o.reprojection_error_px:.3f}"
        status = "ok" if o.status == "cached" else o.status
        reason = "existing record" if o.status == "cached" else o.reason
        placed = ["" if not np.isfinite(v) else f"{v:.3f}" for v in (o.annotation_deg, o.depth_correction_mm)]
        wr.writerow([o.frame_index, o.image, status, reason, err, o.detector, f"{o.ms:.1f}", *placed])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="manifest.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_backend(detector: str) -> None:
    """Fail early, in one line, when the configured landmark backend cannot run."""
    models_dir()  # dlib's models are needed by both backends
    if detector == "fan":
        check_fan()


def _outcomes(tasks: list[_Task], cfg: Config, workers: int) -> Iterator[FrameOutcome]:
    if not tasks:
        return
    saved = {k: os.environ.get(k) for k in BLAS_ENV}
    for k in BLAS_ENV:
        os.environ[k] = "1"  # inherited by the spawned workers
    try:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(cfg.model_dump_json(),)) as pool:
            yield from pool.imap_unordered(_work, tasks, chunksize=1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def summarize(outcomes: list[FrameOutcome], wall_s: float) -> str:
    ok = [o for o in outcomes if o.status in ("ok", "cached")]
    new = [o for o in outcomes if o.status == "ok"]
    skipped = [o for o in outcomes if o.status == "skipped"]
    errs = np.array([o.reprojection_error_px for o in ok], dtype=np.float64)
    lines = [
        f"recon: {len(ok)} frames ok ({len(new)} computed, {len(ok) - len(new)} existing), {len(skipped)} skipped",
    ]
    if len(errs):
        lines.append(
            f"  reprojection error: mean {errs.mean():.2f} px, 95th percentile {np.percentile(errs, 95):.2f} px"
        )
    worked = [o for o in outcomes if o.status != "cached"]
    if worked:
        per = np.mean([o.ms for o in worked])
        lines.append(
            f"  time: {per:.1f} ms per frame in a worker, {wall_s / len(outcomes) * 1e3:.1f} ms per frame wall"
        )
    reasons: dict[str, int] = {}
    for o in skipped:
        reasons[o.reason] = reasons.get(o.reason, 0) + 1
    for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"  skipped ({n}): {r}")
    return "\n".join(lines)


def run(cfg: Config, subjects: str | None = None, limit: int | None = None, force: bool = False) -> int:
    """Reconstruct every frame of the chosen subjects; returns the exit code."""
    raw, obj = cfg.data.mpii.raw, cfg.data.mpii.obj
    if raw is None:
        raise UserError("data.mpii.raw is not set: point it at the MPIIFaceGaze folder (holds p00 ... p14)", 2)
    if obj is None:
        raise UserError("data.mpii.obj is not set: the folder where recon writes its records", 2)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1 (got {limit})", 2)
    names = select_subjects(raw, subjects)
    opened: list[Subject] = [open_subject(raw, n) for n in names]  # missing Camera.mat: one line naming it
    template_from_config(cfg)  # missing template offline: one line saying where to put it
    load_landmark_map(cfg)
    check_backend(cfg.recon.detector)
    workers = cfg.recon.workers

    all_outcomes: list[FrameOutcome] = []
    t_run = time.perf_counter()
    for subj in opened:
        frames = subj.frame_list(limit)
        outcomes: list[FrameOutcome] = []
        tasks: list[_Task] = []
        for fr in frames:
            out = record_path(obj, subj.name, fr.relative_path)
            cached = None if force else cached_outcome(fr, out)
            if cached is not None:
                outcomes.append(cached)
            else:
                tasks.append(_Task(fr, subj.calibration.camera, out, cfg.recon.export_obj))
        with tqdm(total=len(frames), desc=f"recon {subj.name}", unit="frame", initial=len(outcomes)) as bar:
            for o in _outcomes(tasks, cfg, workers):
                outcomes.append(o)
                bar.update(1)
                if o.status == "skipped":
                    bar.set_postfix_str(f"skipped {sum(x.status == 'skipped' for x in outcomes)}")
        write_manifest(Path(obj) / subj.name / "manifest.csv", outcomes)
        all_outcomes.extend(outcomes)
    print(summarize(all_outcomes, time.perf_counter() - t_run))
    ok = sum(o.status in ("ok", "cached") for o in all_outcomes)
    return 0 if ok > 0 or not all_outcomes else 1
