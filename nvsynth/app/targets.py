"""``nvsynth targets --from-h5 FILES -o poses.npy [--gaze]``: a pattern file from ETH-XGaze-style h5 files.

The output is what ``render.pattern: file`` (or ``xgaze-train``, saved as
``xgaze_train.npy`` in ``assets.targets_dir``) reads: an (N, 2) float64 array
of (pitch, yaw) radians, every ``face_head_pose`` row of the inputs in order.
With ``--gaze`` it is every ``face_gaze`` row instead (normalized-camera gaze),
what ``render.gaze: file`` reads from ``render.gaze_file``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray

from nvsynth.core.atomic import atomic_path
from nvsynth.core.errors import ConfigError, DatasetError, io_guard


def read_head_poses(path: Path, dataset: str = "face_head_pose") -> NDArray[np.float64]:
    """The ``dataset`` rows (N, 2) of one h5 file (``face_head_pose`` or ``face_gaze``); ``DatasetError`` naming
    the file if unusable."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("file not found", path)
    try:
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise DatasetError(f"no '{dataset}' dataset (not an ETH-XGaze-style file)", path)
            ds = f[dataset]
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.shape[1] != 2:
                raise DatasetError(f"'{dataset}' must be (N, 2), got {getattr(ds, 'shape', None)}", path)
            arr = np.asarray(ds[...], dtype=np.float64)
    except OSError as err:
        raise DatasetError(f"not a readable HDF5 file ({str(err).splitlines()[0]})", path) from None
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f"'{dataset}' has non-finite values", path)
    if arr.size and np.abs(arr).max() > np.pi:
        raise DatasetError(f"'{dataset}' has values beyond pi; expected radians", path)
    return arr


def targets_from_h5(files: Sequence[Path], out: Path, dataset: str = "face_head_pose") -> int:
    """Collect every ``dataset`` row (``face_head_pose``, or ``face_gaze``) of ``files`` into ``out`` (.npy).

    Writes an (N, 2) float64 array of (pitch, yaw) radians atomically and
    prints one line. Returns the exit code.
    """
    if not files:
        raise ConfigError("--from-h5: no input files")
    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(f"-o {out}: the output must be a .npy file")
    parts = [read_head_poses(Path(p), dataset) for p in files]
    poses = np.concatenate(parts, axis=0)
    if len(poses) == 0:
        raise DatasetError("--from-h5: the files hold no rows")
    with io_guard(out, "write the pattern file"):
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:  # keeps the .npy suffix, so np.save adds none
            np.save(tmp, poses)
    lo, hi = np.degrees(poses.min(axis=0)), np.degrees(poses.max(axis=0))
    what = "gaze directions" if dataset == "face_gaze" else "head poses"
    print(
        f"wrote {len(poses)} {what} from {len(parts)} file(s) to {out} "
        f"(pitch {lo[0]:.1f}..{hi[0]:.1f} deg, yaw {lo[1]:.1f}..{hi[1]:.1f} deg)"
    )
    return 0
