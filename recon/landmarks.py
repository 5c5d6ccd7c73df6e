"""68-point face landmarks (iBUG order) in source-image pixels.

Backends
--------
* ``dlib`` (default): dlib's 68-point shape predictor. The face box comes
  from the annotation's six landmarks when they exist (MPIIFaceGaze always
  has them), else from dlib's HOG detector (upsample 0), else from dlib's
  MMOD CNN detector. Both model files ship in the PyPI package
  ``face-recognition-models``; its folder is found with ``importlib.util``
  and the package is never imported (it needs ``pkg_resources``).
* ``fan`` (extra ``nvsynth[fan]``): the 2D face-alignment network of Bulat
  and Tzimiropoulos (``face-alignment``), imported lazily, with weights from
  torch hub's ``checkpoints`` folder.
* ``mediapipe``: MediaPipe Face Mesh (468 points) and Iris, run with LiteRT
  (:mod:`recon.mediapipe`); its 68 points are mesh vertices picked by the
  landmark map, and the result also carries the dense points and both irises.

Where the predictor is unstable (its mirror results disagree) its result is
the trimmed consensus of five jittered boxes (see ``TTA_UNSTABLE``).

The face-box rule for six landmarks was calibrated against dlib's own HOG
boxes on real faces (``scripts/measure_landmark_map.py --box``): the
predictor was trained on HOG boxes, so it is most accurate inside boxes of
the same geometry.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import ibug68
from nvsynth.core.config import Config
from nvsynth.core.errors import ConfigError, DatasetError, ReconError
from nvsynth.recon.eyes import Irises

if TYPE_CHECKING:
    from nvsynth.recon.fan import FanLandmarker
    from nvsynth.recon.mediapipe import MediaPipeLandmarker

#: Face-box rule from six landmarks, fitted to dlib HOG boxes on four real faces by
#: ``scripts/measure_landmark_map.py --box``: side = A * |eyes-mouth| + B * |outer eye corners|,
#: centre = eye centre + C * |eyes-mouth| along the eyes-to-mouth direction.
BOX_SIZE_EYE_MOUTH = 1.664
BOX_SIZE_EYE_WIDTH = 0.558
BOX_CENTRE_ALONG = 0.470

#: Margin around the face box (fraction of its side) of the crop the predictor sees.
CROP_MARGIN = 0.5
#: Longest image side the CNN detector sees (it is slow on a CPU); faces stay above
#: its ~80 px minimum on 1280x720 webcam frames.
CNN_MAX_SIDE = 960

#: Re-boxing passes after a CNN detection (see ``DlibLandmarker.__call__``).
CNN_REBOX_PASSES = 2

#: Box-jitter consensus (``DlibLandmarker.predict``). The two mirror hypotheses of the face box
#: disagree little where the predictor is stable (near-frontal faces: 0.010-0.014 of the
#: outer-eye distance, mean point distance, on the sample subject; takeo 0.012) and more where
#: its result hinges on the exact box (breakingbad, turned ~50 degrees: 0.045; einstein 0.025).
#: Above ``TTA_UNSTABLE`` the predictor also runs in the box shifted by ``TTA_SHIFT`` of its side
#: left, right, up and down (each mirror-averaged), and the five results are merged by
#: :func:`trimmed_consensus`. A shift down by 0.03 alone sends breakingbad's result into another
#: basin (error 0.18); the consensus drops it.
TTA_UNSTABLE = 0.02
TTA_SHIFT = 0.03
#: Hypotheses farther than this multiple of the median distance from the median shape are dropped.
TTA_TRIM = 1.5

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_FILE = "mmod_human_face_detector.dat"


class NoFaceError(Exception):
    """No usable face in an image; the message is the reason recorded for the frame."""


@dataclass(frozen=True)
class Box:
    """A face box in pixels (left, top, right, bottom), right/bottom exclusive."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dlib(self):  # -> dlib.rectangle
        import dlib

        return dlib.rectangle(round(self.left), round(self.top), round(self.right) - 1, round(self.bottom) - 1)

    @classmethod
    def from_dlib(cls, r, scale: float = 1.0) -> Box:
        """From a ``dlib.rectangle`` (inclusive corners), optionally rescaled."""
        return cls(r.left() * scale, r.top() * scale, (r.right() + 1) * scale, (r.bottom() + 1) * scale)


@dataclass(frozen=True)
class Landmarks:
    """68 points (iBUG order, source pixels), the box they were found in, and how.

    Dense backends (``mediapipe``) also fill ``dense``: the 468 canonical-mesh
    points, x and y in source pixels (distorted, like ``points``) and z the
    relative depth in the same pixel scale (smaller is nearer the camera);
    ``presence``: the face-presence probability; ``irises``: both eyes' iris
    and eye-contour points. The 68 ``points`` are then ``dense[landmark_map, :2]``.
    """

    points: NDArray[np.float64]  # (68, 2)
    box: Box
    detector: str  # e.g. "dlib/annotation", "dlib/hog", "dlib/cnn", "fan/annotation", "mediapipe/annotation"
    boxes: int = 1  # face boxes the predictor ran in (5 where the box-jitter consensus was needed)
    dense: NDArray[np.float64] | None = None  # (468, 3)
    presence: float | None = None
    irises: Irises | None = None


def models_dir() -> Path:
    """The ``models/`` folder of ``face-recognition-models``, without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ReconError("dlib models not found: pip install face-recognition-models")
    d = Path(next(iter(spec.submodule_search_locations))) / "models"
    for name in (PREDICTOR_FILE, CNN_FILE):
        if not (d / name).is_file():
            raise ReconError(f"dlib model {name} not found in {d}: reinstall face-recognition-models")
    return d


def box_from_six(landmarks_6: ArrayLike) -> Box:
    """The face box dlib's HOG detector would give, from the annotation's six points."""
    p = np.asarray(landmarks_6, dtype=np.float64).reshape(6, 2)
    eyes = p[:4].mean(axis=0)
    mouth = p[4:].mean(axis=0)
    down = mouth - eyes
    em = float(np.linalg.norm(down))
    eo = float(np.linalg.norm(p[3] - p[0]))
    if not np.isfinite(em) or em < 1.0 or eo < 1.0:
        raise NoFaceError("annotation landmarks are degenerate")
    side = BOX_SIZE_EYE_MOUTH * em + BOX_SIZE_EYE_WIDTH * eo
    centre = eyes + BOX_CENTRE_ALONG * down
    h = side / 2.0
    return Box(centre[0] - h, centre[1] - h, centre[0] + h, centre[1] + h)


def normalized_error(points: ArrayLike, truth: ArrayLike) -> float:
    """Mean point error divided by the outer-eye-corner distance of ``truth``."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    io = np.linalg.norm(t[ibug68.LEFT_EYE_OUTER] - t[ibug68.RIGHT_EYE_OUTER])
    return float(np.linalg.norm(p - t, axis=1).mean() / io)


def trimmed_consensus(hypotheses: ArrayLike, trim: float = TTA_TRIM) -> NDArray[np.float64]:
    """Merge landmark hypotheses (K, 68, 2): the mean of those near the median shape.

    Each hypothesis's distance to the per-coordinate median shape is its mean
    point distance; hypotheses farther than ``trim`` times the median of those
    distances are dropped (a box in which the predictor fell into another
    basin), and the rest are averaged.
    """
    h = np.asarray(hypotheses, dtype=np.float64)
    if h.ndim != 3 or h.shape[0] == 0:
        raise ValueError("hypotheses must be a non-empty (K, N, 2) array")
    d = np.linalg.norm(h - np.median(h, axis=0), axis=2).mean(axis=1)
    keep = d <= trim * np.median(d) + 1e-9
    return h[keep].mean(axis=0)


def read_pts(path: str | Path) -> NDArray[np.float64]:
    """Read an iBUG ``.pts`` file into 0-based pixel coordinates (68, 2).

    The 300-W annotations are 1-based (MATLAB convention), so one pixel is
    subtracted to match OpenCV/dlib pixel centres.
    """
    text = Path(path).read_text()
    try:
        body = text.split("{", 1)[1].split("}", 1)[0]
        pts = np.array(body.split(), dtype=np.float64).reshape(-1, 2)
    except (IndexError, ValueError) as err:
        raise DatasetError(f"not an iBUG .pts file ({err})", path) from None
    return pts - 1.0


def _gray(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)


class DlibLandmarker:
    """dlib's 68-point predictor with the annotation/HOG/CNN face-box cascade.

    Each worker process builds its own instance (dlib objects are not shared).
    The CNN detector is loaded on first use.
    """

    name = "dlib"

    def __init__(self, tta_unstable: float = TTA_UNSTABLE) -> None:
        """``tta_unstable``: mirror disagreement above which the box-jitter consensus runs (0: always)."""
        import dlib

        self.tta_unstable = float(tta_unstable)
        self._dlib = dlib
        self._dir = models_dir()
        self.predictor = dlib.shape_predictor(str(self._dir / PREDICTOR_FILE))
        self.hog = dlib.get_frontal_face_detector()
        self._cnn = None

    @property
    def cnn(self):
        if self._cnn is None:
            self._cnn = self._dlib.cnn_face_detection_model_v1(str(self._dir / CNN_FILE))
        return self._cnn

    def detect_hog(self, image: NDArray[np.uint8]) -> list[Box]:
        """HOG boxes (upsample 0), largest first."""
        dets = self.hog(_gray(image), 0)
        return sorted((Box.from_dlib(d) for d in dets), key=lambda b: -b.area)

    def detect_cnn(self, image: NDArray[np.uint8], max_side: int = CNN_MAX_SIDE) -> list[Box]:
        """MMOD CNN boxes on the image shrunk to ``max_side``, largest first."""
        h, w = image.shape[:2]
        s = min(1.0, max_side / max(h, w))
        img = image if s == 1.0 else cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        dets = self.cnn(rgb, 0)
        return sorted((Box.from_dlib(d.rect, 1.0 / s) for d in dets), key=lambda b: -b.area)

    def detect_faces(self, image: NDArray[np.uint8]) -> tuple[list[Box], str]:
        """HOG first, then the CNN fallback; returns the boxes and which detector found them."""
        boxes = self.detect_hog(image)
        if boxes:
            return boxes, "hog"
        return self.detect_cnn(image), "cnn"

    def _shape(self, gray: NDArray[np.uint8], box: Box) -> NDArray[np.float64]:
        shape = self.predictor(gray, box.to_dlib())
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(ibug68.N_LANDMARKS)], dtype=np.float64)

    def predict(
        self, image: NDArray[np.uint8], box: Box, mirror_average: bool = True, consensus: bool = True
    ) -> NDArray[np.float64]:
        """The 68 points inside ``box``.

        With ``mirror_average`` the predictor also runs on the mirrored face
        and the two results (the mirrored one relabelled left<->right) are
        averaged, which removes much of the predictor's dependence on the exact
        box (labelled faces, error / outer-eye distance: breakingbad 0.069 -> 0.053,
        einstein 0.068 -> 0.066, takeo 0.036 -> 0.034). With ``consensus`` as well,
        a face whose two mirror results disagree (``tta_unstable``) is predicted in
        four shifted boxes too and the five results merged (:func:`trimmed_consensus`;
        breakingbad 0.053 -> 0.046, einstein 0.066 -> 0.064; takeo is stable and
        keeps one box). On rotated, rescaled copies of the three faces with noisy
        six-point boxes (54 cases) the mean error went 0.053 -> 0.048.
        """
        return self._predict(image, box, mirror_average, consensus)[0]

    def _predict(
        self, image: NDArray[np.uint8], box: Box, mirror_average: bool = True, consensus: bool = True
    ) -> tuple[NDArray[np.float64], int]:
        """Points and the number of boxes used."""
        # Work on a crop around the box (wide enough for the shifted boxes): dlib copies the
        # image it is given, and the predictor reads only pixels near the face.
        h, w = image.shape[:2]
        m = (CROP_MARGIN + TTA_SHIFT) * box.width
        x0, x1 = max(0, int(box.left - m)), min(w, int(np.ceil(box.right + m)))
        y0, y1 = max(0, int(box.top - m)), min(h, int(np.ceil(box.bottom + m)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise NoFaceError("face box lies outside the image")
        gray = _gray(image[y0:y1, x0:x1])
        offset = np.array([x0, y0], dtype=np.float64)
        local = Box(box.left - x0, box.top - y0, box.right - x0, box.bottom - y0)
        pts = self._shape(gray, local) + offset
        if not mirror_average:
            return pts, 1
        flipped = np.ascontiguousarray(gray[:, ::-1])
        cw = x1 - x0

        def mirrored(b: Box) -> NDArray[np.float64]:
            q = self._shape(flipped, Box(cw - b.right, b.top, cw - b.left, b.bottom))
            return np.c_[x0 + (cw - 1 - q[:, 0]), y0 + q[:, 1]][ibug68.MIRROR]

        q = mirrored(local)
        mean = 0.5 * (pts + q)
        io = float(np.linalg.norm(mean[ibug68.LEFT_EYE_OUTER] - mean[ibug68.RIGHT_EYE_OUTER]))
        spread = float(np.linalg.norm(pts - q, axis=1).mean()) / max(io, 1e-9)
        if not consensus or spread <= self.tta_unstable:
            return mean, 1
        d = TTA_SHIFT * box.width
        hyps = [mean]
        for dx, dy in ((d, 0.0), (-d, 0.0), (0.0, d), (0.0, -d)):
            b = Box(local.left + dx, local.top + dy, local.right + dx, local.bottom + dy)
            hyps.append(0.5 * (self._shape(gray, b) + offset + mirrored(b)))
        return trimmed_consensus(hyps), len(hyps)

    def __call__(self, image: NDArray[np.uint8], landmarks_6: ArrayLike | None = None) -> Landmarks:
        """Landmarks of the face (the annotated one, else the largest detected)."""
        if landmarks_6 is not None:
            box = box_from_six(landmarks_6)
            source = "annotation"
        else:
            boxes, source = self.detect_faces(image)
            if not boxes:
                raise NoFaceError("no face found (dlib HOG and CNN)")
            box = boxes[0]
        return self.landmarks_in_box(image, box, source)

    def landmarks_in_box(self, image: NDArray[np.uint8], box: Box, source: str) -> Landmarks:
        """The 68 points in a box from ``source`` ("annotation", "hog" or "cnn")."""
        if source == "cnn":
            # MMOD boxes sit differently on the face than the HOG boxes the predictor was
            # trained with; re-box from the predicted six points (breakingbad's labelled face:
            # 0.29 -> 0.11 -> 0.044, einstein 0.15 -> 0.065).
            for _ in range(CNN_REBOX_PASSES):
                pts = self.predict(image, box, consensus=False)
                box = box_from_six(pts[ibug68.MPII_SIX])
        pts, n_boxes = self._predict(image, box)
        if not np.all(np.isfinite(pts)):
            raise NoFaceError("landmark predictor returned non-finite points")
        return Landmarks(pts, box, f"{self.name}/{source}", n_boxes)


# --- face-alignment (optional) ---------------------------------------------------------


def make_landmarker(
    detector: str, cfg: Config | None = None
) -> DlibLandmarker | FanLandmarker | MediaPipeLandmarker:
    """The landmark backend named by ``recon.detector``.

    ``cfg`` gives the ``mediapipe`` backend its model files (``assets.*``), landmark
    map and ``recon.min_face_presence``; without it the defaults apply.
    """
    if detector == "dlib":
        return DlibLandmarker()
    if detector == "fan":
        from nvsynth.recon.fan import FanLandmarker

        return FanLandmarker()
    if detector == "mediapipe":
        from nvsynth.recon.mediapipe import MediaPipeLandmarker

        return MediaPipeLandmarker.from_config(cfg if cfg is not None else Config())
    raise ConfigError(f"recon.detector: unknown backend '{detector}' (use dlib, fan or mediapipe)")
