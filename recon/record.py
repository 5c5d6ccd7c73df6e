"""The recon record: one fitted, textured face mesh per source frame.

Written by ``nvsynth recon`` to ``<data.mpii.obj>/<subject>/<dayNN>/<NNNN>.npz``
and read by ``nvsynth render``. It is the only thing that crosses from the
recon stage to the render stage, together with the source image it points at.
All 3D quantities are in the source camera's coordinates (OpenCV axes, mm),
the same space as the annotation's face centre and gaze target.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from nvsynth.core.atomic import atomic_path


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

    def save(self, path: Path) -> Path:
        """Write atomically (:func:`nvsynth.core.atomic.atomic_path`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        with atomic_path(path) as tmp:  # keeps the .npz suffix, so np.savez adds none
            np.savez(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> ReconRecord:
        """Read a record; raises ``ValueError`` if it is damaged (e.g. truncated), or a key is missing or malformed."""
        try:
            return cls._load(path)
        except (KeyError, EOFError, zipfile.BadZipFile, zlib.error, TypeError) as err:
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{path}: damaged record ({type(err).__name__}: {reason})") from None

    @classmethod
    def _load(cls, path: Path) -> ReconRecord:
        with np.load(path, allow_pickle=False) as z:
            missing = [f.name for f in fields(cls) if f.name not in z.files]
            if missing:
                raise ValueError(f"{path}: missing keys {missing}")
            kw = {}
            for f in fields(cls):
                v = z[f.name]
                if f.name in ("reprojection_error_px",):
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
