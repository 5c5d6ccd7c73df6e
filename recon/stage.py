"""The recon stage's work on one frame: landmarks -> fit -> visibility -> a saved record.

See docs/design.md ("Recon stage", "Runtime"). For a frame (a
:class:`~nvsynth.datasets.base.Sample` of any reader: image, calibrated
camera, what the dataset knows of the face and gaze): landmarks
(:mod:`recon.landmarks`, in the box of the six annotated points, else of the
six model points posed by the labels' head pose, else of a face detector),
the fit in the frame's calibrated camera (:mod:`recon.fit`), visibility
(:mod:`recon.visibility`), then a :class:`~recon.record.ReconRecord` saved
(atomically) at the item's output path and, with ``export_obj``, a textured
OBJ beside it. The record's labels come from the sample's head pose and gaze
(:func:`record_labels`; where the dataset has no head pose, the one its landmarks give by
MPIIGaze's procedure, which also places the fit).

A :class:`FrameProcessor` holds what one worker slot needs (the landmark
backend and the fit model, built inside the worker); :func:`process_frame`
is the work function an executor of :mod:`nvsynth.runtime.executor` calls
with it. A frame without a usable face or image -- unreadable, flat, noise,
blurred beyond use, or no face where the annotation puts one (the face-quality
gate, :mod:`recon.quality`) -- gives a ``skipped`` :class:`FrameOutcome` with
the reason, never an error. Which frames to
process, cached records and the manifest are the runtime's
(:mod:`nvsynth.runtime.recon_run`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.core import geometry, ibug68
from nvsynth.core.config import Config
from nvsynth.core.errors import NvsynthError, ReconError, io_guard
from nvsynth.core.geometry import HeadPose
from nvsynth.core.ibug68 import MPII_SIX
from nvsynth.core.images import image_exists
from nvsynth.datasets.base import Camera, Sample
from nvsynth.recon.export import export_obj
from nvsynth.recon.fan import check_fan
from nvsynth.recon.fit import FitError, FitModel, FitResult, Subdivision, fit_landmarks, fit_weights, subdivision
from nvsynth.recon.landmarks import Landmarks, NoFaceError, make_landmarker, models_dir
from nvsynth.recon.mediapipe import check_mediapipe, dense_record_fields
from nvsynth.recon.quality import FaceGate
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.template import load_landmark_map, template_from_config
from nvsynth.recon.visibility import visible_vertices

#: A fit whose mean reprojection error exceeds this fraction of the outer-eye-corner
#: distance is rejected (the landmarks cannot be a face the template can take).
MAX_ERROR_FRACTION = 0.25
#: Standard deviation of grey levels below which the face box is taken to hold no face.
MIN_FACE_CONTRAST = 4.0


@dataclass(frozen=True)
class FrameOutcome:
    """What happened to one frame (one manifest row)."""

    frame_index: int
    image: str  # the frame as the dataset names it, e.g. "dayNN/NNNN.jpg"
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


def check_face_quality(gate: FaceGate, image: NDArray[np.uint8], lms: Landmarks) -> None:
    """The face-quality gate (:mod:`recon.quality`): noise, flat, blurred or face-less boxes are rejected."""
    b = lms.box
    centre = ((b.left + b.right) / 2.0, (b.top + b.bottom) / 2.0)
    q = gate.measure(image, centre, b.width, lms.points[ibug68.RIGHT_EYE_OUTER], lms.points[ibug68.LEFT_EYE_OUTER])
    why = q.problem()
    if why is not None:
        raise NoFaceError(why)


def face_landmarks(
    image: NDArray[np.uint8], landmarker, landmarks_6: NDArray[np.float64] | None = None, gate: FaceGate | None = None
) -> Landmarks:
    """Landmarks of the face in ``image`` (in the box of ``landmarks_6``, else the backend's detection).

    With ``gate`` (``recon.face_gate``), a box without a usable face is rejected
    (:class:`NoFaceError` with the reason).
    """
    lms = landmarker(image, landmarks_6)
    check_face_contrast(image, lms)
    if gate is not None:
        check_face_quality(gate, image, lms)
    return lms


def fit_to_landmarks(lms: Landmarks, camera: Camera, model: FitModel, annotation: HeadPose | None = None) -> FitResult:
    """The template fitted to ``lms`` in ``camera``, placed by ``annotation`` where given; a poor fit is rejected."""
    ideal = camera.undistort_points(lms.points)
    fit = fit_landmarks(model, ideal, camera.matrix, annotation=annotation)
    io = float(np.linalg.norm(ideal[45] - ideal[36]))
    if fit.reprojection_error_ideal_px > MAX_ERROR_FRACTION * io:
        raise FitError(f"fit rejected: mean error {fit.reprojection_error_ideal_px:.1f} px")
    return fit


def fit_image(
    image: NDArray[np.uint8],
    camera: Camera,
    landmarker,
    model: FitModel,
    landmarks_6: NDArray[np.float64] | None = None,
    annotation: HeadPose | None = None,
    gate: FaceGate | None = None,
) -> tuple[Landmarks, FitResult]:
    """Landmarks of the face in ``image`` and the template fitted to them in ``camera`` (and ``annotation``):
    :func:`face_landmarks`, then :func:`fit_to_landmarks`."""
    lms = face_landmarks(image, landmarker, landmarks_6, gate)
    return lms, fit_to_landmarks(lms, camera, model, annotation)


def box_points(sample: Sample) -> tuple[NDArray[np.float64] | None, str]:
    """The six points that place the landmark backend's face box, and where they came from.

    The annotated six points where the dataset has them; else the six model
    points posed by the labels' head pose and projected (a normalized patch:
    the face is where its labels say); else ``None`` (the backend detects the face).
    """
    if sample.landmarks_6 is not None:
        return sample.landmarks_6, "annotation"
    if sample.head is not None:
        return sample.camera.project(sample.head.transform(geometry.FACE_MODEL_6), distort=True), "label"
    return None, ""


def landmark_head_pose(lms: Landmarks, camera: Camera) -> geometry.HeadPose:
    """The head pose MPIIFaceGaze's annotation procedure gives the detected landmarks.

    PnP of the MPIIGaze six-point model (:func:`nvsynth.core.geometry.estimate_head_pose`) on the
    landmarks' six points (eye corners, mouth corners; :data:`nvsynth.core.ibug68.MPII_SIX`) in
    the frame's distorted pixels with the camera's distortion: the same convention as an
    annotated head pose, so labels made from it are those the dataset would have made.
    """
    six = np.asarray(lms.points, dtype=np.float64)[list(MPII_SIX)]
    return geometry.estimate_head_pose(six, camera.matrix, camera.dist_coeffs)


def record_labels(sample: Sample, lms: Landmarks) -> tuple[geometry.HeadPose, NDArray[np.float64], str]:
    """The head pose and 3D gaze target that define the record's labels, and the head pose's origin.

    The dataset's head pose ("dataset"), else the one the detected landmarks give
    by MPIIGaze's procedure (:func:`landmark_head_pose`, "landmarks"; the fit is
    placed by it); the dataset's gaze target, else the point along its gaze
    direction from that pose's face centre
    (:func:`nvsynth.core.geometry.gaze_target_from_direction`).
    """
    head, origin = sample.head, "dataset"
    if head is None:
        head, origin = landmark_head_pose(lms, sample.camera), "landmarks"
    if sample.gaze_target is not None:
        target = np.asarray(sample.gaze_target, dtype=np.float64)
    else:
        target = geometry.gaze_target_from_direction(head.face_center(), np.asarray(sample.gaze_direction))
    return head, target, origin


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
    image_root: str | None = None,
    head_origin: str | None = None,
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
        image_root=image_root,
        head_origin=head_origin,
        **dense_record_fields(lms, fit.vertices, camera.matrix, camera.dist_coeffs),  # type: ignore[arg-type]
    )


class FrameProcessor:
    """Per-process state: the landmark backend and the fit model (built once per worker)."""

    def __init__(self, cfg: Config) -> None:
        self.model = FitModel(template_from_config(cfg), load_landmark_map(cfg), fit_weights(cfg.recon))
        self.landmarker = make_landmarker(cfg.recon.detector, cfg)
        steps = cfg.recon.subdivide
        self.subdiv = subdivision(self.model.faces, self.model.template.mirror, steps) if steps else None
        self.gate = FaceGate() if cfg.recon.face_gate else None

    def process(self, task: FrameTask) -> FrameOutcome:
        sample = task.sample
        t0 = time.perf_counter()

        def skipped(reason: str, detector: str = "") -> FrameOutcome:
            ms = (time.perf_counter() - t0) * 1e3
            return FrameOutcome(sample.frame_index, sample.name, "skipped", reason, float("nan"), detector, ms)

        if sample.skip_reason:
            return skipped(sample.skip_reason)
        image = sample.load_image()
        if image is None:
            why = "missing image" if not image_exists(sample.root, sample.image) else "unreadable or corrupt image"
            return skipped(why)
        six, six_origin = box_points(sample)
        try:
            lms = face_landmarks(image, self.landmarker, six, self.gate)
            if six_origin == "label":  # the box came from the labels, not from annotated points
                lms = dataclasses.replace(lms, detector=lms.detector.replace("/annotation", "/label"))
            head, target, origin = record_labels(sample, lms)
            # the fit is placed by the labels' head pose: the dataset's, else the landmarks' (recon/placement.py)
            fit = fit_to_landmarks(lms, sample.camera, self.model, head)
            rec = make_record(
                fit,
                lms,
                sample.camera,
                (image.shape[1], image.shape[0]),
                self.model,
                subdiv=self.subdiv,
                subject=sample.subject,
                frame_index=sample.frame_index,
                source_file=sample.image,
                annotation_rvec=head.rvec,
                annotation_tvec=head.translation,
                gaze_target=target,
                image_root=str(Path(sample.root).resolve()),
                head_origin=origin,
            )
        except (NoFaceError, FitError) as err:
            return skipped(str(err))
        except (ValueError, np.linalg.LinAlgError, cv2.error) as err:
            return skipped(f"fit failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        # a full disk or a read-only folder ends the run with one line (PathError), never a half-written record
        with io_guard(task.out_path, "write the recon record"):
            rec.save(task.out_path)
            if task.export_obj:
                export_obj(rec, image, task.out_path.with_suffix(""))
        ms = (time.perf_counter() - t0) * 1e3
        placed = (rec.annotation_rotation_deg, rec.depth_correction_mm)
        return FrameOutcome(
            sample.frame_index, sample.name, "ok", "", rec.reprojection_error_px, rec.detector, ms, *placed
        )


@dataclass(frozen=True)
class FrameTask:
    """One work item of the stage: a sample (with its camera) and where its record goes."""

    sample: Sample
    out_path: Path
    export_obj: bool


def start_frame_processor(cfg: Config) -> FrameProcessor:
    """A worker slot's state (the executor's setup, called inside the worker): landmarker and fit model.

    A failure becomes one :class:`ReconError` naming the cause (the executor
    reports it from the slot's first item).
    """
    try:
        return FrameProcessor(cfg)
    except NvsynthError:
        raise  # already one line that names the cause
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ReconError(f"recon worker could not start: {reason}") from None


def process_frame(processor: FrameProcessor, task: FrameTask) -> FrameOutcome:
    """The work function: one frame."""
    return processor.process(task)


def cached_outcome(sample: Sample, path: Path) -> FrameOutcome | None:
    """The outcome of a frame whose record exists, loads and is this frame's, else ``None`` (then it is redone)."""
    if not path.is_file():
        return None
    try:
        rec = ReconRecord.load(path)
    except Exception:  # a truncated or foreign file: recompute it
        return None
    if rec.frame_index != sample.frame_index or rec.source_file != sample.image:
        return None  # made from another annotation line: recompute it
    placed = (rec.annotation_rotation_deg, rec.depth_correction_mm)
    return FrameOutcome(
        sample.frame_index, sample.name, "cached", "", rec.reprojection_error_px, rec.detector, 0.0, *placed
    )


def check_backend(detector: str, cfg: Config | None = None) -> None:
    """Fail early, in one line, when the configured landmark backend cannot run."""
    models_dir()  # dlib's models are needed by all backends (detection where frames lack six points)
    if detector == "fan":
        check_fan()
    if detector == "mediapipe":
        check_mediapipe(cfg if cfg is not None else Config())
