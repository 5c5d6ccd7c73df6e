"""The recon record: one fitted, textured face mesh per source frame.

Written by ``nvsynth recon`` to ``<data.mpii.obj>/<subject>/<dayNN>/<NNNN>.npz``
and read by ``nvsynth render``. It is the only thing that crosses from the
recon stage to the render stage, together with the source image it points at.
All 3D quantities are in the source camera's coordinates (OpenCV axes, mm),
the same space as the annotation's face centre and gaze target.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


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
        """Read a record; raises ``ValueError`` if it is not an npz archive, or a key is missing or malformed.

        The file is read in one go and its members as ``np.load`` would (no
        pickles), except that each distinct ``.npy`` header is parsed once per
        process: the records of a run share a handful, and parsing them was
        most of the cost of a load.
        """
        data = Path(path).read_bytes()
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = set(zf.namelist())
                missing = [name for name in _FIELDS if name + ".npy" not in names]
                if missing:
                    raise ValueError(f"{path}: missing keys {missing}")
                kw = {name: _read_npy(zf.read(name + ".npy")) for name in _FIELDS}
        except (zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{path}: not a readable npz archive ({err})") from None
        kw["reprojection_error_px"] = float(kw["reprojection_error_px"])
        kw["frame_index"] = int(kw["frame_index"])
        for name in ("detector", "subject", "source_file"):
            kw[name] = str(kw[name])
        return cls(**kw)


_FIELDS = tuple(f.name for f in fields(ReconRecord))


@lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a version 1.0 / 2.0 ``.npy`` header (magic included), by numpy's parser."""
    fp = io.BytesIO(header)
    if np.lib.format.read_magic(fp) == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def _read_npy(raw: bytes) -> NDArray:
    """One ``.npy`` member as a fresh (writable) array; like ``np.lib.format.read_array(allow_pickle=False)``."""
    size_bytes = {1: 2, 2: 4}.get(raw[6]) if raw[:6] == b"\x93NUMPY" and len(raw) > 8 else None
    if size_bytes is None:  # another format version, or not an .npy: numpy's reader (and its errors)
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    end = 8 + size_bytes + int.from_bytes(raw[8 : 8 + size_bytes], "little")
    shape, fortran_order, dtype = _npy_header(raw[:end])
    if dtype.hasobject:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)  # raises: no pickles
    count = math.prod(shape)
    flat = np.frombuffer(raw, dtype=dtype, count=count, offset=end)
    return flat.reshape(shape, order="F" if fortran_order else "C").copy(order="K")


def record_path(obj_root: Path, subject: str, relative_image: str) -> Path:
    """``<obj_root>/<subject>/<dayNN>/<NNNN>.npz`` for image ``dayNN/NNNN.jpg``."""
    return Path(obj_root) / subject / Path(relative_image).with_suffix(".npz")
