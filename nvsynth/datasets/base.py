"""The dataset protocol: what every reader yields, and the seam recon and the runtime use.

See docs/design.md ("Datasets"). A reader (:class:`Dataset`) lists its
subjects and yields, per subject and in frame order, :class:`Sample` records:
the image (by reference, loaded lazily), the calibrated :class:`Camera`, and
what the dataset knows about the face and gaze:

* ``landmarks_6``: the MPIIGaze six points (eye and mouth corners, distorted
  pixels), or ``None``;
* ``head``: the head pose that defines the labels, as a six-point model pose
  (:class:`~nvsynth.core.geometry.HeadPose`; a dataset that gives a head
  rotation and a face centre uses :meth:`~nvsynth.core.geometry.HeadPose.from_face_center`),
  or ``None``: the recon stage then takes it from the detected landmarks
  (MPIIGaze's PnP, :func:`nvsynth.recon.stage.landmark_head_pose`);
* ``gaze_target`` (3D point, camera mm) or ``gaze_direction`` (camera
  coordinates, from the face centre): exactly one of them.

A frame the reader already knows to be unusable (no gaze label) is a sample
with ``skip_reason`` set; the recon stage records it as skipped. Readers are
registered by name in :mod:`nvsynth.datasets.registry`; nothing above this
layer imports a reader module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.core.errors import DatasetError
from nvsynth.core.geometry import HeadPose
from nvsynth.core.images import read_image


@dataclass(frozen=True)
class Camera:
    """Intrinsics of a calibrated camera (OpenCV model)."""

    matrix: NDArray[np.float64]  # (3, 3)
    dist_coeffs: NDArray[np.float64]  # (k,)

    def undistort_points(self, points: NDArray[np.floating]) -> NDArray[np.float64]:
        """Distorted pixel coordinates (N, 2) -> ideal pinhole pixels (N, 2)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
        out = cv2.undistortPoints(pts, self.matrix, self.dist_coeffs, P=self.matrix)
        return out.reshape(-1, 2)

    def project(self, points: NDArray[np.floating], distort: bool = True) -> NDArray[np.float64]:
        """Camera points (N, 3) in mm -> pixels (N, 2), with distortion by default."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 3)
        d = self.dist_coeffs if distort else np.zeros(5)
        out, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), self.matrix, d)
        return out.reshape(-1, 2)


#: The start of a sample's ``skip_reason`` when its annotation line repeats an earlier line's image.
DUPLICATE_REASON = "duplicate annotation line"

@dataclass(frozen=True)
class Sample:
    """One frame of a subject, as a reader yields it (small: the image is loaded by :meth:`load_image`)."""

    subject: str
    frame_index: int  # the frame's index within its subject (annotation row, h5 row, CSV row)
    root: Path  # the folder ``image`` is relative to
    image: str  # image reference relative to ``root`` (:mod:`nvsynth.core.images`): a path or ``file.h5#row``
    name: str  # the frame as the dataset lists it (manifest column), e.g. "day01/0001.jpg", "p00.h5#17"
    record_name: str  # the recon record's path under ``<records>/<subject>/``, without ``.npz``
    camera: Camera
    landmarks_6: NDArray[np.float64] | None = None  # (6, 2) distorted pixels, MPIIGaze order
    head: HeadPose | None = None  # the labels' head pose (six-point model); None: from the landmarks
    gaze_target: NDArray[np.float64] | None = None  # (3,) camera mm
    gaze_direction: NDArray[np.float64] | None = None  # (3,) camera coordinates, from the face centre
    skip_reason: str = ""  # non-empty: the reader knows this frame cannot be used, and why

    def __post_init__(self) -> None:
        if not self.skip_reason and (self.gaze_target is None) == (self.gaze_direction is None):
            raise ValueError(f"{self.image}: a sample needs exactly one of gaze_target and gaze_direction")

    def load_image(self) -> NDArray[np.uint8] | None:
        """The BGR image, or ``None`` when it is missing or unreadable."""
        return read_image(self.root, self.image)


class Dataset(Protocol):
    """A reader: subjects, then their samples in frame order."""

    kind: str  # the registry name, e.g. "mpiifacegaze"
    root: Path  # the folder the samples' image references are relative to

    def subjects(self) -> list[str]:
        """Every subject, sorted."""
        ...

    def check(self, subject: str) -> None:
        """Raise :class:`~nvsynth.core.errors.DatasetError` if ``subject`` cannot be read (before any work)."""
        ...

    def samples(self, subject: str, limit: int | None = None) -> Iterator[Sample]:
        """The subject's first ``limit`` samples (all when ``None``), in frame order, read lazily."""
        ...


def select_subjects(dataset: Dataset, wanted: str | None) -> list[str]:
    """``--subjects a,b`` checked against what ``dataset`` holds; ``None`` means all of them."""
    available = dataset.subjects()
    if not wanted:
        if not available:
            raise DatasetError(f"no subjects found ({dataset.kind} reader)", dataset.root)
        return available
    names = [s.strip() for s in wanted.split(",") if s.strip()]
    for n in names:
        if n not in available:
            shown = ", ".join(available[:8]) + (" ..." if len(available) > 8 else "")
            raise DatasetError(f"--subjects: no subject '{n}' (found: {shown or 'none'})", dataset.root)
    return list(dict.fromkeys(names))  # each once, in the order given (--subjects p00,p00)
