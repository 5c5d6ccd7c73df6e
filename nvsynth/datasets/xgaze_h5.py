"""ETH-XGaze-layout h5 reader (``data.kind: xgaze-h5``): one file per subject, or a folder of them.

Layout (Zhang et al., "ETH-XGaze", ECCV 2020; also nvsynth's own output)::

    <subject>.h5   face_patch (N, S, S, 3) uint8 BGR   the normalized face image
                   face_gaze (N, 2) float              normalized gaze (pitch, yaw), radians
                   face_head_pose (N, 2) float         normalized head pose (pitch, yaw), radians

The subject id is the file stem; a sample's frame index is its row. Geometry
of a row (conventions in :mod:`nvsynth.core.geometry`):

* **Camera.** The patch is an image of the *normalized* camera: no
  distortion, the constants from the file attributes ``norm_focal``,
  ``norm_distance``, ``norm_size`` (nvsynth writes them,
  :data:`nvsynth.core.schema.NORM_ATTRS`), else nvsynth's
  ``mpii-nv`` for a file nvsynth wrote before it recorded them
  (``nvsynth_version`` set), else ETH-XGaze's published ones
  (:data:`~nvsynth.core.geometry.ETH_XGAZE`: focal 960, 600 mm, 224x224,
  from ``normalizeData_face``), resampled to the patch size.
* **Face centre** on the optical axis at the normalization distance.
* **Head rotation** of ``face_head_pose``: the one rotation with these labels
  whose x axis has no component along the normalized camera's y axis (and a
  positive one along x), the constraint the normalization leaves on the head
  (:func:`~nvsynth.core.geometry.normalized_head_rotation`; ``hR(pitch, yaw)``
  for |yaw| <= 90 degrees). So re-normalizing the sample is the identity and
  its labels read back exactly.
* **Gaze**: the direction of ``face_gaze`` in the normalized camera.
* No six-point annotation: the landmark backend finds the face on the patch.

Labels are read in blocks of :data:`BLOCK` rows and images one row at a time
by reference (``<file>#<row>``, :mod:`nvsynth.core.images`): a file is never
loaded whole. Rows without a gaze label (ETH-XGaze's test split has no
``face_gaze``; a non-finite label) are samples skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from nvsynth.core import geometry
from nvsynth.core.errors import DatasetError
from nvsynth.core.images import H5_IMAGE_DATASET, H5_SUFFIXES, h5_row_ref
from nvsynth.core.schema import NORM_ATTRS
from nvsynth.datasets.base import Camera, Sample

#: Rows of labels read per h5 slice.
BLOCK = 4096


def h5_files(path: Path) -> list[Path]:
    """The h5 files a path names: itself, or those directly inside a folder (sorted)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in H5_SUFFIXES)


def norm_spec_of(attrs: h5py.AttributeManager) -> geometry.NormSpec:
    """The normalization constants a file was made with (see the module docstring)."""
    name, focal, distance, size = NORM_ATTRS
    if all(k in attrs for k in (focal, distance, size)):
        label = attrs.get(name, "file")
        label = label.decode() if isinstance(label, bytes) else str(label)
        return geometry.NormSpec(label, float(attrs[focal]), float(attrs[distance]), int(attrs[size]))
    return geometry.MPII_NV if "nvsynth_version" in attrs else geometry.ETH_XGAZE


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"cannot read as HDF5 ({str(err).splitlines()[0]})", path) from None


def _patches(f: h5py.File, path: Path) -> h5py.Dataset:
    ds = f.get(H5_IMAGE_DATASET)
    if not isinstance(ds, h5py.Dataset):
        raise DatasetError(
            f"no dataset '{H5_IMAGE_DATASET}' (an ETH-XGaze-layout file holds face_patch, face_gaze, face_head_pose)",
            path,
        )
    if ds.ndim != 4 or ds.shape[1] != ds.shape[2] or ds.shape[3] != 3 or ds.dtype != np.uint8:
        raise DatasetError(f"'{H5_IMAGE_DATASET}' is {ds.dtype} {ds.shape}, expected uint8 (N, S, S, 3)", path)
    return ds


def _labels(f: h5py.File, name: str, n: int, path: Path) -> h5py.Dataset | None:
    ds = f.get(name)
    if ds is None:
        return None
    if not isinstance(ds, h5py.Dataset) or ds.shape != (n, 2):
        raise DatasetError(f"'{name}' has shape {getattr(ds, 'shape', None)}, expected ({n}, 2)", path)
    return ds


class XGazeH5Dataset:
    """ETH-XGaze-layout files behind the dataset protocol (:class:`nvsynth.datasets.base.Dataset`)."""

    kind = "xgaze-h5"

    def __init__(self, path: Path) -> None:
        path = Path(path)
        self.root = path.parent if path.is_file() else path
        self._files = {p.stem: p for p in h5_files(path)}
        if not self._files:
            raise DatasetError("no .h5 files here", path)

    def subjects(self) -> list[str]:
        return sorted(self._files)

    def check(self, subject: str) -> None:
        path = self._files[subject]
        with _open(path) as f:
            n = _patches(f, path).shape[0]
            _labels(f, "face_gaze", n, path)
            _labels(f, "face_head_pose", n, path)

    def camera(self, subject: str) -> Camera:
        """The normalized camera of the subject's patches."""
        path = self._files[subject]
        with _open(path) as f:
            size = int(_patches(f, path).shape[1])
            spec = norm_spec_of(f.attrs)
        return Camera(spec.camera_matrix(size), np.zeros(5))

    def samples(self, subject: str, limit: int | None = None) -> Iterator[Sample]:
        path = self._files[subject]
        with _open(path) as f:
            n = _patches(f, path).shape[0]
            size = int(f[H5_IMAGE_DATASET].shape[1])
            spec = norm_spec_of(f.attrs)
            gaze_ds = _labels(f, "face_gaze", n, path)
            head_ds = _labels(f, "face_head_pose", n, path)
            camera = Camera(spec.camera_matrix(size), np.zeros(5))
            center = np.array([0.0, 0.0, spec.distance])
            rel = path.name
            end = n if limit is None else min(n, max(0, limit))
            for start in range(0, end, BLOCK):
                stop = min(end, start + BLOCK)
                gaze = None if gaze_ds is None else np.asarray(gaze_ds[start:stop], dtype=np.float64)
                head = None if head_ds is None else np.asarray(head_ds[start:stop], dtype=np.float64)
                for i in range(stop - start):
                    row = start + i
                    common = {
                        "subject": subject,
                        "frame_index": row,
                        "root": self.root,
                        "image": h5_row_ref(rel, row),
                        "name": h5_row_ref(rel, row),
                        "record_name": f"{row:06d}",
                        "camera": camera,
                    }
                    if gaze is None:
                        yield Sample(**common, skip_reason="no gaze label (the file has no face_gaze: a test split?)")
                        continue
                    if not np.all(np.isfinite(gaze[i])):
                        yield Sample(**common, skip_reason="no gaze label (face_gaze is not finite)")
                        continue
                    pose = None
                    if head is not None and np.all(np.isfinite(head[i])):
                        hR = geometry.normalized_head_rotation(*head[i])
                        pose = geometry.HeadPose.from_face_center(hR, center)
                    yield Sample(**common, head=pose, gaze_direction=geometry.vector_from_pitchyaw(gaze[i]))


def looks_like_xgaze_h5(path: Path) -> bool:
    """An h5 file, or a folder with at least one directly inside."""
    if path.is_file():
        return path.suffix.lower() in H5_SUFFIXES
    return path.is_dir() and bool(h5_files(path))
