"""MPIIFaceGaze reader (``data.kind: mpiifacegaze``): typed, frozen records; images load lazily.

Layout (Zhang et al., "It's Written All Over Your Face", CVPRW 2017)::

    ROOT/pXX/pXX.txt                     28 whitespace-separated columns a frame
    ROOT/pXX/Calibration/Camera.mat      cameraMatrix, distCoeffs
    ROOT/pXX/Calibration/monitorPose.mat rvects, tvecs
    ROOT/pXX/Calibration/screenSize.mat  width/height in pixels and mm
    ROOT/pXX/dayNN/NNNN.jpg              1280x720 webcam frames

Columns of ``pXX.txt``: image path; gaze point on screen (2); six landmarks
(12: four eye corners, then two mouth corners, pixels of the original
distorted image); head pose rvec (3) and tvec (3); face centre (3); 3D gaze
target (3, camera mm); eye side.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from numpy.typing import NDArray

from nvsynth.core.errors import ConfigError, DatasetError
from nvsynth.core.geometry import HeadPose
from nvsynth.datasets.base import Camera, Sample

N_COLUMNS = 28
SUBJECT_RE = re.compile(r"^p\d\d$")


@dataclass(frozen=True)
class Calibration:
    camera: Camera
    monitor_rvec: NDArray[np.float64] | None
    monitor_tvec: NDArray[np.float64] | None
    screen_size_px: tuple[int, int] | None
    screen_size_mm: tuple[float, float] | None


@dataclass(frozen=True)
class Frame:
    """One annotated frame of an MPIIFaceGaze subject."""

    subject: str
    index: int  # row in pXX.txt, from 0
    image_path: Path  # absolute
    relative_path: str  # "dayNN/NNNN.jpg", as in the annotation
    gaze_screen: NDArray[np.float64]  # (2,) pixels
    landmarks_6: NDArray[np.float64]  # (6, 2) distorted image pixels
    head_rvec: NDArray[np.float64]  # (3,)
    head_tvec: NDArray[np.float64]  # (3,) mm
    face_center: NDArray[np.float64]  # (3,) mm, as annotated
    gaze_target: NDArray[np.float64]  # (3,) mm, camera coordinates
    eye: str

    @property
    def head_pose(self) -> HeadPose:
        return HeadPose.from_rvec(self.head_rvec, self.head_tvec)

    def load_image(self) -> NDArray[np.uint8]:
        """The BGR frame; raises ``DatasetError`` when it is missing or unreadable."""
        img = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"cannot read image {self.image_path}")
        return img


def _mat_get(mat: dict, *names: str) -> NDArray[np.float64] | None:
    for n in names:
        if n in mat:
            return np.asarray(mat[n], dtype=np.float64)
    return None


def load_calibration(subject_dir: Path) -> Calibration:
    """Read ``Calibration/*.mat``; Camera.mat is required, the others optional."""
    cal = subject_dir / "Calibration"
    cam_path = cal / "Camera.mat"
    if not cam_path.is_file():
        raise DatasetError(f"subject {subject_dir.name}: missing {cam_path}")
    try:
        cam = scipy.io.loadmat(str(cam_path))
    except Exception as err:
        raise DatasetError(f"subject {subject_dir.name}: cannot read {cam_path}: {err}") from None
    K = _mat_get(cam, "cameraMatrix")
    d = _mat_get(cam, "distCoeffs")
    if K is None or K.shape != (3, 3) or d is None:
        raise DatasetError(f"subject {subject_dir.name}: {cam_path} lacks cameraMatrix (3x3) or distCoeffs")
    rvec = tvec = None
    size_px = size_mm = None
    if (cal / "monitorPose.mat").is_file():
        mp = scipy.io.loadmat(str(cal / "monitorPose.mat"))
        rvec = _mat_get(mp, "rvects", "rvec")
        tvec = _mat_get(mp, "tvecs", "tvec")
        rvec = None if rvec is None else rvec.reshape(3)
        tvec = None if tvec is None else tvec.reshape(3)
    if (cal / "screenSize.mat").is_file():
        ss = scipy.io.loadmat(str(cal / "screenSize.mat"))
        w, h = _mat_get(ss, "width_pixel"), _mat_get(ss, "height_pixel")
        wm, hm = _mat_get(ss, "width_mm"), _mat_get(ss, "height_mm")
        if w is not None and h is not None:
            size_px = (int(w.ravel()[0]), int(h.ravel()[0]))
        if wm is not None and hm is not None:
            size_mm = (float(wm.ravel()[0]), float(hm.ravel()[0]))
    return Calibration(Camera(K, d.ravel()), rvec, tvec, size_px, size_mm)


def parse_annotation_line(line: str, subject_dir: Path, index: int, path: Path, lineno: int) -> Frame:
    """One line of ``pXX.txt``: line ``lineno`` (1-based) of ``path``, which errors name."""
    cols = line.split()
    if len(cols) != N_COLUMNS:
        raise DatasetError(f"expected {N_COLUMNS} columns, found {len(cols)}", path, lineno)
    try:
        nums = np.array([float(c) for c in cols[1:27]], dtype=np.float64)
    except ValueError:
        raise DatasetError("non-numeric value in columns 2-27", path, lineno) from None
    if not np.all(np.isfinite(nums)):
        raise DatasetError("non-finite value", path, lineno)
    rel = cols[0]
    return Frame(
        subject=subject_dir.name,
        index=index,
        image_path=subject_dir / rel,
        relative_path=rel,
        gaze_screen=nums[0:2],
        landmarks_6=nums[2:14].reshape(6, 2),
        head_rvec=nums[14:17],
        head_tvec=nums[17:20],
        face_center=nums[20:23],
        gaze_target=nums[23:26],
        eye=cols[27],
    )


@dataclass(frozen=True)
class Subject:
    """A subject folder: calibration plus annotated frames."""

    name: str
    root: Path
    calibration: Calibration
    annotation_file: Path

    def frames(self) -> Iterator[Frame]:
        """Frames in annotation order; blank lines are ignored."""
        with self.annotation_file.open() as fh:
            index = 0
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                yield parse_annotation_line(line, self.root, index, self.annotation_file, lineno)
                index += 1

    def frame_list(self, limit: int | None = None) -> list[Frame]:
        """The first ``limit`` frames (all when ``None``); lines past the limit are not parsed."""
        return list(itertools.islice(self.frames(), limit))


def open_subject(root: Path, name: str) -> Subject:
    """Open ``root/name``; raises ``DatasetError`` naming what is missing."""
    sdir = Path(root) / name
    if not sdir.is_dir():
        raise DatasetError(f"subject {name}: folder not found: {sdir}")
    ann = sdir / f"{name}.txt"
    if not ann.is_file():
        raise DatasetError(f"subject {name}: annotation file not found: {ann}")
    return Subject(name, sdir, load_calibration(sdir), ann)


def list_subjects(root: Path) -> list[str]:
    """Subject names (``pXX``) under an MPIIFaceGaze root, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"MPIIFaceGaze root not found: {root} (set data.input in the config)")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and SUBJECT_RE.match(p.name))


def select_subjects(root: Path, wanted: str | None) -> list[str]:
    """Parse ``--subjects p00,p03`` against what exists; ``None`` means all."""
    available = list_subjects(root)
    if not wanted:
        if not available:
            raise DatasetError(f"no subject folders (pXX) under {root}")
        return available
    names = [s.strip() for s in wanted.split(",") if s.strip()]
    for n in names:
        if not SUBJECT_RE.match(n):
            raise ConfigError(f"--subjects: '{n}' is not a subject name like p00")
    return names


class MpiiDataset:
    """The MPIIFaceGaze reader behind the dataset protocol (:class:`nvsynth.datasets.base.Dataset`).

    Each frame's sample carries its six annotated points, the annotated head
    pose (rvec/tvec of the six-point model) and the 3D gaze target; images are
    referenced as ``pXX/dayNN/NNNN.jpg`` under the root.
    """

    kind = "mpiifacegaze"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._opened: dict[str, Subject] = {}

    def subjects(self) -> list[str]:
        return list_subjects(self.root)

    def check(self, subject: str) -> None:
        self._subject(subject)

    def _subject(self, name: str) -> Subject:
        if name not in self._opened:
            self._opened[name] = open_subject(self.root, name)
        return self._opened[name]

    def samples(self, subject: str, limit: int | None = None) -> Iterator[Sample]:
        subj = self._subject(subject)
        camera = subj.calibration.camera
        for fr in itertools.islice(subj.frames(), limit):
            yield Sample(
                subject=subject,
                frame_index=fr.index,
                root=self.root,
                image=f"{subject}/{fr.relative_path}",
                name=fr.relative_path,
                record_name=str(Path(fr.relative_path).with_suffix("")),
                camera=camera,
                landmarks_6=fr.landmarks_6,
                head=fr.head_pose,
                gaze_target=fr.gaze_target,
            )


def looks_like_mpii(path: Path) -> bool:
    """A folder with at least one ``pXX/pXX.txt``."""
    return path.is_dir() and any((p / f"{p.name}.txt").is_file() for p in path.iterdir() if SUBJECT_RE.match(p.name))
