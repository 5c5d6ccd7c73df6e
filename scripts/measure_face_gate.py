"""Measure the face-quality gate (recon/quality.py) on real faces and on frames that hold none.

    python scripts/measure_face_gate.py [--shared ../shared]

Real faces: the six frames of the bundled sample (box from their annotation),
the labelled faces in ``../shared/faces`` (box from their .pts six points) and
scikit-image's astronaut (box from dlib's HOG and predictor), each plain and as
variants a webcam gives: dark, low contrast, mild blur, JPEG quality 15, sensor
noise, a small face (80 px box) and rolled by +-20 degrees. Non-faces, in the
sample frames' boxes: uniform and Gaussian noise, grey, the faces blurred by
8% and 16% of the box, and twelve textures and objects from scikit-image.
Prints one line per case (contrast, detail, detector score, verdict) and, per
class, the range of each measure and how many the gate rejects.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.core import ibug68
from nvsynth.recon.landmarks import DlibLandmarker, box_from_six, read_pts
from nvsynth.recon.quality import FaceGate, FaceQuality

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "supplementary" / "sample" / "p00"
TEXTURES = (
    "brick", "grass", "gravel", "chelsea", "coffee", "rocket", "page", "text", "moon", "coins", "clock", "horse",
)  # fmt: skip

Case = tuple[str, NDArray[np.uint8], NDArray[np.float64]]  # name, BGR image, six points


def _bgr(a: np.ndarray) -> NDArray[np.uint8]:
    a = np.asarray(a)
    a = (a * 255).astype(np.uint8) if a.dtype == bool else a.astype(np.uint8)
    return cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)


def real_faces(shared: Path) -> list[Case]:
    from skimage import data

    cases: list[Case] = []
    for line in (SAMPLE / "p00.txt").read_text().splitlines():
        cols = line.split()
        six = np.array(cols[3:15], dtype=np.float64).reshape(6, 2)
        cases.append((f"sample/{cols[0]}", cv2.imread(str(SAMPLE / cols[0])), six))
    for img in sorted((shared / "faces").glob("*")):
        if img.suffix == ".pts":
            continue
        pts = read_pts(img.with_suffix(".pts"))
        cases.append((f"shared/{img.name}", cv2.imread(str(img)), pts[ibug68.MPII_SIX]))
    astro = _bgr(data.astronaut())
    lm = DlibLandmarker()
    pts = lm.predict(astro, lm.detect_hog(astro)[0])
    cases.append(("skimage/astronaut", astro, pts[ibug68.MPII_SIX]))
    return cases


def _rolled(img: NDArray[np.uint8], six: NDArray[np.float64], deg: float) -> tuple[NDArray[np.uint8], np.ndarray]:
    c = tuple(float(v) for v in six.mean(axis=0))
    m = cv2.getRotationMatrix2D(c, deg, 1.0)
    out = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)
    return out, np.c_[six, np.ones(6)] @ m.T


def variants(name: str, img: NDArray[np.uint8], six: NDArray[np.float64], rng: np.random.Generator) -> Iterator[Case]:
    side = box_from_six(six).width
    f = img.astype(np.float64)
    yield name, img, six
    yield f"{name} dark", np.clip(f * 0.3, 0, 255).astype(np.uint8), six
    yield f"{name} low-contrast", np.clip(128 + (f - 128) * 0.3, 0, 255).astype(np.uint8), six
    yield f"{name} blur-0.75%", cv2.GaussianBlur(img, (0, 0), max(0.5, 0.0075 * side)), six
    yield f"{name} jpeg-15", cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 15])[1], 1), six
    yield f"{name} sensor-noise", np.clip(f + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8), six
    if side > 80:
        s = 80 / side
        yield f"{name} small-80px", cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), six * s
    for deg in (-20, 20):
        yield (f"{name} roll{deg:+d}", *_rolled(img, six, deg))


def non_faces(reals: list[Case], rng: np.random.Generator) -> Iterator[Case]:
    from skimage import data

    frames = [c for c in reals if c[0].startswith("sample/")][:3]
    textures = {k: _bgr(getattr(data, k)()) for k in TEXTURES}
    for i, (_, img, six) in enumerate(frames):
        shape = img.shape
        h, w = shape[:2]
        yield f"uniform-noise {i}", rng.integers(0, 256, shape, dtype=np.uint8), six
        yield f"gauss-noise {i}", np.clip(rng.normal(128, 40, shape), 0, 255).astype(np.uint8), six
        yield f"grey {i}", np.full(shape, 128, np.uint8), six
        for k, t in textures.items():
            yield f"{k} {i}", cv2.resize(t, (w, h)), six
    for name, img, six in reals:
        side = box_from_six(six).width
        for pct in (8, 16):
            yield f"{name} blur-{pct}%", cv2.GaussianBlur(img, (0, 0), pct / 100 * side), six


def measure(gate: FaceGate, lm: DlibLandmarker, case: Case) -> FaceQuality:
    _, img, six = case
    box = box_from_six(six)
    pts = lm.predict(img, box)
    centre = ((box.left + box.right) / 2, (box.top + box.bottom) / 2)
    return gate.measure(img, centre, box.width, pts[ibug68.RIGHT_EYE_OUTER], pts[ibug68.LEFT_EYE_OUTER])


def report(title: str, rows: list[tuple[str, FaceQuality]]) -> None:
    print(f"--- {title}: {len(rows)} cases")
    for name, q in rows:
        verdict = q.problem() or "face"
        print(f"{name:40s} contrast {q.contrast:6.1f} detail {q.detail:5.2f} detector {q.detector:6.2f}  {verdict}")
    arr = np.array([(q.contrast, q.detail, q.detector) for _, q in rows])
    rejected = sum(q.problem() is not None for _, q in rows)
    finite = arr[:, 2][np.isfinite(arr[:, 2])]
    det = f"{finite.min():.2f}..{finite.max():.2f}" if len(finite) else "none"
    print(
        f"=== {title}: contrast {arr[:, 0].min():.1f}..{arr[:, 0].max():.1f}, detail {arr[:, 1].min():.3f}.."
        f"{arr[:, 1].max():.2f}, detector {det} ({np.isinf(arr[:, 2]).sum()} without detection); "
        f"rejected {rejected} of {len(rows)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("NVSYNTH_SHARED", REPO.parent / "shared")))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    gate, lm = FaceGate(), DlibLandmarker()
    reals = real_faces(args.shared)
    real_rows = [(c[0], measure(gate, lm, c)) for base in reals for c in variants(*base, rng)]
    t0 = time.perf_counter()
    other_rows = [(c[0], measure(gate, lm, c)) for c in non_faces(reals, rng)]
    report("real faces", real_rows)
    report("no face", other_rows)
    img, six = reals[0][1], reals[0][2]
    box = box_from_six(six)
    t0 = time.perf_counter()
    for _ in range(50):
        gate.measure(img, ((box.left + box.right) / 2, (box.top + box.bottom) / 2), box.width, six[0], six[3])
    print(f"gate: {(time.perf_counter() - t0) / 50 * 1e3:.2f} ms per frame")


if __name__ == "__main__":
    main()
