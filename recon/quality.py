"""The face-quality gate: is there a usable face in the box the landmarks were found in?

dlib's shape predictor always returns 68 points, even in a box of noise, so a
frame whose image is not a face (a corrupt capture, a grey frame, noise, a face
blurred beyond recognition) would otherwise become labelled training data.
The gate looks at the face box once, in a crop normalized for scale and roll
(the box scaled to :data:`BOX_PX` pixels, the outer eye corners level), and
measures three things that work with the dlib backend alone:

* ``contrast`` -- the grey-level standard deviation inside the box: a flat box
  (grey frame, lens cap) holds no face;
* ``detail`` -- mean absolute Laplacian over that standard deviation: faces
  give 0.1-0.7 at this scale (mild blur, JPEG, sensor noise included), pixel
  noise gives more than 3, a face blurred beyond recognition less than 0.05;
* ``detector`` -- the score of dlib's HOG face detector (frontal and profile
  filters) for a detection over the box: faces score above -0.6 (a face turned
  about 50 degrees, dark or low-contrast copies included), textures, objects and
  noise below -1.0 or not at all.

The thresholds below were measured by ``scripts/measure_face_gate.py`` on the
bundled sample, the labelled faces in ``../shared/faces`` and scikit-image's
astronaut, each plain and darkened, low-contrast, mildly blurred, JPEG-15,
with sensor noise, small (80 px box) and rolled by 20 degrees, against noise,
grey, heavily blurred faces, and twelve textures and objects; see that script's
output in docs/reliability.md. The MediaPipe backend (fidelity branch) adds a
face-presence score of its own; this gate is backend-independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

#: The face box is scaled to this many pixels (dlib's HOG window is 80 px) ...
BOX_PX = 100
#: ... inside a crop this many box sides wide (the detector needs context around the face).
CROP_SIDES = 2.0

#: Below this grey-level standard deviation (0-255) the box is flat.
MIN_CONTRAST = 4.0
#: Above this detail ratio the box is pixel noise; below MIN_DETAIL it is blurred beyond use.
MAX_DETAIL = 1.6
MIN_DETAIL = 0.06
#: Best HOG score over the box below which no face is there (faces measured: >= -0.55).
MIN_DETECTOR = -1.0
#: Scores the detector reports down to (lower means "no detection").
DETECTOR_FLOOR = -3.0
#: A detection counts when it overlaps the box by this intersection-over-union.
MIN_IOU = 0.3


@dataclass(frozen=True)
class FaceQuality:
    """What the gate measured in a face box (see the module docstring)."""

    contrast: float
    detail: float
    detector: float  # -inf when the detector found nothing over the box

    def problem(self) -> str | None:
        """Why the box holds no usable face, or ``None``; the reason recorded for the frame."""
        if self.contrast < MIN_CONTRAST:
            return f"no face: the face box is flat (grey-level std {self.contrast:.1f} < {MIN_CONTRAST:g})"
        if self.detail > MAX_DETAIL:
            return f"no face: the face box is noise (detail {self.detail:.2f} > {MAX_DETAIL:g})"
        if self.detail < MIN_DETAIL:
            return f"no face: the face box is blurred beyond use (detail {self.detail:.3f} < {MIN_DETAIL:g})"
        if self.detector < MIN_DETECTOR:
            found = "nothing" if not math.isfinite(self.detector) else f"score {self.detector:.2f}"
            return f"no face: dlib's face detector finds {found} at the face box (needs {MIN_DETECTOR:g})"
        return None


def normalized_crop(
    image: NDArray[np.uint8], centre: ArrayLike, side: float, roll: float
) -> tuple[NDArray[np.uint8], float]:
    """The box (``centre``, ``side`` px, rolled by ``roll`` radians) as a level grey crop, box = :data:`BOX_PX` px.

    Returns the crop and the scale applied. The image is area-resized first
    (so that shrinking does not alias), then rotated about the box centre.
    """
    cx, cy = (float(v) for v in np.asarray(centre, dtype=np.float64).reshape(2))
    scale = BOX_PX / max(float(side), 1.0)
    half = 0.5 * CROP_SIDES * side * math.sqrt(2.0)  # room for any roll
    h, w = image.shape[:2]
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(w, math.ceil(cx + half)), min(h, math.ceil(cy + half))
    out = round(CROP_SIDES * BOX_PX)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((out, out), np.uint8), scale
    region = image[y0:y1, x0:x1]
    if region.ndim == 3:
        region = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    rw, rh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    small = cv2.resize(region, (rw, rh), interpolation=interp)
    sx, sy = rw / (x1 - x0), rh / (y1 - y0)
    c = ((cx - x0) * sx, (cy - y0) * sy)
    m = cv2.getRotationMatrix2D(c, math.degrees(roll), 1.0)
    m[:, 2] += (out / 2.0 - c[0], out / 2.0 - c[1])
    crop = cv2.warpAffine(small, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, scale


class FaceGate:
    """Measures :class:`FaceQuality`; holds dlib's HOG detector (one per worker process)."""

    def __init__(self) -> None:
        import dlib

        self._hog = dlib.get_frontal_face_detector()

    def measure(
        self, image: NDArray[np.uint8], centre: ArrayLike, side: float, eye_right: ArrayLike, eye_left: ArrayLike
    ) -> FaceQuality:
        """The quality of the face in the box at ``centre`` (``side`` px), levelled by the outer eye corners."""
        d = np.asarray(eye_left, dtype=np.float64) - np.asarray(eye_right, dtype=np.float64)
        roll = math.atan2(d[1], d[0]) if np.all(np.isfinite(d)) and np.hypot(*d) > 0 else 0.0
        crop, _ = normalized_crop(image, centre, side, roll)
        lo = round((CROP_SIDES - 1.0) * BOX_PX / 2.0)
        inner = crop[lo : lo + BOX_PX, lo : lo + BOX_PX].astype(np.float32)
        contrast = float(inner.std())
        lap = float(np.abs(cv2.Laplacian(inner, cv2.CV_32F)).mean())
        detail = lap / contrast if contrast > 1e-6 else 0.0
        return FaceQuality(contrast, detail, self._detector_score(crop, lo))

    def _detector_score(self, crop: NDArray[np.uint8], lo: int) -> float:
        rects, scores, _ = self._hog.run(np.ascontiguousarray(crop), 0, DETECTOR_FLOOR)
        best = -math.inf
        b0, b1 = lo, lo + BOX_PX
        for r, s in zip(rects, scores, strict=True):
            ix = max(0, min(r.right() + 1, b1) - max(r.left(), b0))
            iy = max(0, min(r.bottom() + 1, b1) - max(r.top(), b0))
            inter = ix * iy
            union = (r.width() * r.height()) + BOX_PX * BOX_PX - inter
            if union > 0 and inter / union >= MIN_IOU:
                best = max(best, float(s))
        return best


__all__ = ["FaceGate", "FaceQuality", "normalized_crop"]
