"""Folder reader (``data.kind: folder``): any calibrated images plus ``labels.csv``.

Layout::

    ROOT/labels.csv       one row per image (comma-separated, a header line)
    ROOT/<file>           the images, paths relative to ROOT

Columns of ``labels.csv`` (order free, names exact):

* required: ``file``; the intrinsics ``fx, fy, cx, cy`` (pixels);
* gaze, one of: ``target_x, target_y, target_z`` (3D gaze target, camera mm)
  or ``gaze_x, gaze_y, gaze_z`` (a gaze direction in camera coordinates, from
  the face centre);
* optional: distortion ``k1, k2, p1, p2, k3`` (OpenCV; absent or empty: 0);
  ``subject`` (default: the folder's name); the head pose that defines the
  labels, as a rotation vector ``head_rx, head_ry, head_rz`` (MPIIGaze
  six-point model to camera, Rodrigues) with the face centre
  ``face_x, face_y, face_z`` (mm); the six MPIIGaze points ``p1_x, p1_y, ...,
  p6_x, p6_y`` (eye corners right-outer, right-inner, left-inner, left-outer,
  then mouth right, left; distorted pixels), used for the face box.

Without the head-pose columns the head pose comes from recon: MPIIFaceGaze's
own annotation procedure (PnP of the MPIIGaze six-point model) on the detected
landmarks' six points (:func:`nvsynth.recon.stage.landmark_head_pose`), and the
fit is placed by it as by an annotated pose. Camera axes and units as everywhere (:mod:`nvsynth.core.geometry`).
A row's frame index is its order among its subject's rows. A missing column
or a value that is not a number is one :class:`~nvsynth.core.errors.DatasetError`
naming the file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from nvsynth.core.errors import DatasetError
from nvsynth.core.geometry import HeadPose
from nvsynth.datasets.base import Camera, Sample

LABELS = "labels.csv"
INTRINSICS = ("fx", "fy", "cx", "cy")
DISTORTION = ("k1", "k2", "p1", "p2", "k3")
TARGET = ("target_x", "target_y", "target_z")
DIRECTION = ("gaze_x", "gaze_y", "gaze_z")
HEAD_ROTATION = ("head_rx", "head_ry", "head_rz")
FACE_CENTER = ("face_x", "face_y", "face_z")
SIX_POINTS = tuple(f"p{i}_{a}" for i in range(1, 7) for a in ("x", "y"))


def _numbers(row: dict[str, str], names: tuple[str, ...], path: Path, line: int, default: float | None = None):
    """The named columns of ``row`` as float64; an empty cell is ``default`` (an error when ``None``)."""
    out = np.empty(len(names), dtype=np.float64)
    for i, name in enumerate(names):
        text = (row.get(name) or "").strip()
        if not text and default is not None:
            out[i] = default
            continue
        try:
            out[i] = float(text)
        except ValueError:
            raise DatasetError(f"column '{name}': {text!r} is not a number", path, line) from None
        if not np.isfinite(out[i]):
            raise DatasetError(f"column '{name}': {text!r} is not finite", path, line)
    return out


def _has(header: list[str], names: tuple[str, ...]) -> bool:
    return all(n in header for n in names)


class FolderDataset:
    """A folder of calibrated images with ``labels.csv``, behind :class:`nvsynth.datasets.base.Dataset`."""

    kind = "folder"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.labels = self.root / LABELS
        if not self.labels.is_file():
            raise DatasetError(f"no {LABELS} (columns: file, fx, fy, cx, cy, and target_* or gaze_*)", self.root)
        self._rows: dict[str, list[Sample]] | None = None

    def _read(self) -> dict[str, list[Sample]]:
        if self._rows is not None:
            return self._rows
        path = self.labels
        by_subject: dict[str, list[Sample]] = {}
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            for name in ("file", *INTRINSICS):
                if name not in header:
                    raise DatasetError(f"missing column '{name}'", path, 1)
            use_target, use_direction = _has(header, TARGET), _has(header, DIRECTION)
            if use_target == use_direction:
                why = "both" if use_target else "neither"
                raise DatasetError(f"{why} of target_x/y/z and gaze_x/y/z: give exactly one", path, 1)
            for group in (HEAD_ROTATION + FACE_CENTER, SIX_POINTS):
                given = [n for n in group if n in header]
                if given and len(given) < len(group):
                    missing = next(n for n in group if n not in header)
                    raise DatasetError(f"missing column '{missing}' ('{given[0]}' needs {', '.join(group)})", path, 1)
            head_cols = _has(header, HEAD_ROTATION + FACE_CENTER)
            six_cols = _has(header, SIX_POINTS)
            names: set[tuple[str, str]] = set()
            for row in reader:
                line = reader.line_num
                file = (row.get("file") or "").strip()
                if not file:
                    raise DatasetError("column 'file' is empty", path, line)
                fx, fy, cx, cy = _numbers(row, INTRINSICS, path, line)
                K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
                dist = _numbers(row, DISTORTION, path, line, default=0.0)
                gaze = _numbers(row, TARGET if use_target else DIRECTION, path, line)
                if not use_target and not np.linalg.norm(gaze) > 0:
                    raise DatasetError("gaze_x/y/z is the zero vector", path, line)
                head: HeadPose | None = None
                if head_cols:
                    rvec = _numbers(row, HEAD_ROTATION, path, line)
                    head = HeadPose.from_face_center(HeadPose.from_rvec(rvec, np.zeros(3)).rotation,
                                                     _numbers(row, FACE_CENTER, path, line))  # fmt: skip
                six: NDArray[np.float64] | None = None
                if six_cols:
                    six = _numbers(row, SIX_POINTS, path, line).reshape(6, 2)
                subject = (row.get("subject") or "").strip() or self.root.name
                record_name = str(Path(file).with_suffix(""))
                if (subject, record_name) in names:
                    raise DatasetError(
                        f"'{file}': a second image named {record_name}.* for subject {subject}", path, line
                    )
                names.add((subject, record_name))
                rows = by_subject.setdefault(subject, [])
                rows.append(
                    Sample(
                        subject=subject,
                        frame_index=len(rows),
                        root=self.root,
                        image=file,
                        name=file,
                        record_name=record_name,
                        camera=Camera(K, dist),
                        landmarks_6=six,
                        head=head,
                        gaze_target=gaze if use_target else None,
                        gaze_direction=None if use_target else gaze,
                    )
                )
        self._rows = by_subject
        return by_subject

    def subjects(self) -> list[str]:
        return sorted(self._read())

    def check(self, subject: str) -> None:
        self._read()

    def samples(self, subject: str, limit: int | None = None) -> Iterator[Sample]:
        yield from self._read()[subject][:limit]


def looks_like_folder(path: Path) -> bool:
    """A folder with ``labels.csv``."""
    return path.is_dir() and (path / LABELS).is_file()
