"""The recon record: one fitted, textured face mesh per source frame.

Written by ``nvsynth recon`` to ``<data.records>/<subject>/<record name>.npz``
(MPIIFaceGaze: ``dayNN/NNNN``; h5 rows: the row, six digits; folder: the
image path without suffix) and read by ``nvsynth render``. It is the only
thing that crosses from the recon stage to the render stage, together with
the source image it points at (``image_root`` / ``source_file``, an image
reference of :mod:`nvsynth.core.images`). All 3D quantities are in the source
camera's coordinates (OpenCV axes, mm), the same space as the face centre and
gaze target.

The labels are defined by ``annotation_rvec`` / ``annotation_tvec`` (a pose of
the MPIIGaze six-point model; the face centre is the mean of its six
transformed points) and ``gaze_target``, whatever the dataset gave:

* MPIIFaceGaze: the annotated pose and 3D target, as they are;
* a head rotation hR and face centre c (ETH-XGaze-layout labels): the pose
  (hR, c - hR . mean(model)) (:meth:`nvsynth.core.geometry.HeadPose.from_face_center`);
* no head pose (folder without head columns): MPIIFaceGaze's annotation procedure on the
  detected landmarks' six points (:func:`nvsynth.recon.stage.landmark_head_pose`),
  ``head_origin`` "landmarks";
* a gaze direction instead of a target: the point ``GAZE_TARGET_DISTANCE`` (1 m)
  from the face centre along it (the labels depend on the direction only).

So the render stage normalizes every record the same way, knowing no dataset.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from nvsynth.core.atomic import atomic_path

#: Fields written only by dense landmark backends.
DENSE_FIELDS = ("dense_2d", "face_presence", "eye_contour_2d", "iris_2d", "iris_radius_px", "iris_3d")
#: Fields older records lack.
OPTIONAL_FIELDS = (*DENSE_FIELDS, "image_root", "head_origin")
_STR_FIELDS = ("detector", "subject", "source_file", "image_root", "head_origin")
#: Scalar fields added after the first records were written (they load as nan where absent).
_FLOAT_DEFAULTS = ("annotation_rotation_deg", "landmark_rotation_deg", "depth_correction_mm")


@dataclass(frozen=True)
class ReconRecord:
    # -- the mesh ------------------------------------------------------------
    vertices: NDArray[np.float32]  # (V, 3) camera mm
    faces: NDArray[np.int32]  # (F, 3)
    uv: NDArray[np.float32]  # (V, 2) pixel coordinates in the source image (distorted, as stored)
    visible: NDArray[np.bool_]  # (V,) seen by the source camera
    mirror: NDArray[np.int32]  # (V,) index of the left/right mirror-symmetric vertex
    # -- landmarks -------------------------------------------------------------
    landmarks_2d: NDArray[np.float32]  # (68, 2) detected, source pixels
    landmarks_3d: NDArray[np.float32]  # (68, 3) fitted, camera mm
    # -- fitted template pose ------------------------------------------------------
    head_rotation: NDArray[np.float64]  # (3, 3)
    head_translation: NDArray[np.float64]  # (3,)
    reprojection_error_px: float
    detector: str
    # -- the source frame, copied from the annotation --------------------------------
    subject: str
    frame_index: int  # row of pXX.txt
    source_file: str  # image path relative to the dataset root, e.g. "p00/day01/0005.jpg"
    image_size: NDArray[np.int32]  # (2,) width, height
    camera_matrix: NDArray[np.float64]  # (3, 3)
    dist_coeffs: NDArray[np.float64]  # (k,)
    annotation_rvec: NDArray[np.float64]  # (3,) head pose that defines the labels (MPIIGaze 6-point model)
    annotation_tvec: NDArray[np.float64]  # (3,)
    gaze_target: NDArray[np.float64]  # (3,) camera mm
    # -- the fit against the annotation (recon.placement); absent from older records: nan ------------
    annotation_rotation_deg: float = float("nan")  # fitted head rotation vs the annotation's (with R_p)
    landmark_rotation_deg: float = float("nan")  # the landmarks-only pose vs the annotation's
    depth_correction_mm: float = float("nan")  # how far the mesh was moved in depth onto the annotation
    # -- dense backends only (recon.detector: mediapipe); None otherwise and in older records ----------
    dense_2d: NDArray[np.float32] | None = None  # (468, 3) mesh points: x, y source pixels, z relative depth px
    face_presence: float | None = None  # MediaPipe face-presence probability
    eye_contour_2d: NDArray[np.float32] | None = None  # (2, 71, 2) MediaPipe Iris eye contours, source pixels
    iris_2d: NDArray[np.float32] | None = None  # (2, 5, 2) iris centre + 4 boundary points, source pixels
    iris_radius_px: NDArray[np.float32] | None = None  # (2,)
    iris_3d: NDArray[np.float32] | None = None  # (2, 3) iris centres on the fitted eyelid planes, camera mm
    # -- where the source image is, and where the labels' head pose came from (None in older records) ----------
    image_root: str | None = None  # absolute folder ``source_file`` is relative to
    head_origin: str | None = None  # "dataset" (annotation or label) or "landmarks" (PnP of the detected six points)

    def save(self, path: Path) -> Path:
        """Write atomically (:func:`nvsynth.core.atomic.atomic_path`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}
        with atomic_path(path) as tmp:  # keeps the .npz suffix, so np.savez adds none
            np.savez(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> ReconRecord:
        """Read a record; ``ValueError`` if it is damaged (e.g. truncated) or a required key is missing or malformed.

        Fields with a default (the placement figures: nan; the dense fields: ``None``) may be absent.
        """
        try:
            return cls._load(path)
        except (KeyError, EOFError, zipfile.BadZipFile, zlib.error, TypeError) as err:
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{path}: damaged record ({type(err).__name__}: {reason})") from None

    @classmethod
    def _load(cls, path: Path) -> ReconRecord:
        with np.load(path, allow_pickle=False) as z:
            missing = [f.name for f in fields(cls) if f.name not in z.files and f.default is MISSING]
            if missing:
                raise ValueError(f"{path}: missing keys {missing}")
            kw = {}
            for f in fields(cls):
                if f.name not in z.files:
                    continue
                v = z[f.name]
                if f.name in ("reprojection_error_px", "face_presence", *_FLOAT_DEFAULTS):
                    kw[f.name] = float(v)
                elif f.name == "frame_index":
                    kw[f.name] = int(v)
                elif f.name in _STR_FIELDS:
                    kw[f.name] = str(v)
                else:
                    kw[f.name] = v
        return cls(**kw)


def record_path(obj_root: Path, subject: str, record_name: str) -> Path:
    """``<obj_root>/<subject>/<record_name>.npz`` (e.g. ``dayNN/NNNN`` for image ``dayNN/NNNN.jpg``)."""
    return Path(obj_root) / subject / f"{record_name}.npz"
