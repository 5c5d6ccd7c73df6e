"""The recon record: one fitted, textured face mesh per source frame.

Written by ``nvsynth recon`` to ``<data.mpii.obj>/<subject>/<dayNN>/<NNNN>.npz``
and read by ``nvsynth render``. It is the only thing that crosses from the
recon stage to the render stage, together with the source image it points at.
All 3D quantities are in the source camera's coordinates (OpenCV axes, mm),
the same space as the annotation's face centre and gaze target.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

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
    annotation_rvec: NDArray[np.float64]  # (3,) annotated head pose (MPIIGaze 6-point model)
    annotation_tvec: NDArray[np.float64]  # (3,)
    gaze_target: NDArray[np.float64]  # (3,) camera mm
    # -- the fit against the annotation (recon.placement); absent from older records: nan ------------
    annotation_rotation_deg: float = float("nan")  # fitted head rotation vs the annotation's (with R_p)
    landmark_rotation_deg: float = float("nan")  # the landmarks-only pose vs the annotation's
    depth_correction_mm: float = float("nan")  # how far the mesh was moved in depth onto the annotation

    def save(self, path: Path) -> Path:
        """Write atomically: a temporary file in the same folder, then rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: Path) -> ReconRecord:
        """Read a record; raises ``ValueError`` if a key without a default is missing or malformed."""
        with np.load(path, allow_pickle=False) as z:
            missing = [f.name for f in fields(cls) if f.name not in z.files and f.default is MISSING]
            if missing:
                raise ValueError(f"{path}: missing keys {missing}")
            kw = {}
            for f in fields(cls):
                if f.name not in z.files:
                    continue
                v = z[f.name]
                if f.name in ("reprojection_error_px", *_FLOAT_DEFAULTS):
                    kw[f.name] = float(v)
                elif f.name == "frame_index":
                    kw[f.name] = int(v)
                elif f.name in ("detector", "subject", "source_file"):
                    kw[f.name] = str(v)
                else:
                    kw[f.name] = v
        return cls(**kw)


def record_path(obj_root: Path, subject: str, relative_image: str) -> Path:
    """``<obj_root>/<subject>/<dayNN>/<NNNN>.npz`` for image ``dayNN/NNNN.jpg``."""
    return Path(obj_root) / subject / Path(relative_image).with_suffix(".npz")
