"""Regenerate ``supplementary/sample/``: a tiny subject in the MPIIFaceGaze layout.

The only image source is scikit-image's public-domain NASA astronaut portrait
(``skimage.data.astronaut()``, Eileen Collins, NASA photo). Each frame places the
portrait's head at a different position, scale and roll in an ideal 1280x720
pinhole image over a procedural background, then applies the calibration's
lens distortion, so the frames behave like a real calibrated webcam's. The
annotation is made the way MPIIFaceGaze made its own: dlib's 68 landmarks give
the six face points, and the head pose comes from PnP on the MPIIGaze 6-point
model with the distortion coefficients (nvsynth.core.geometry.estimate_head_pose).
Gaze targets are points on a virtual screen whose pose is in monitorPose.mat.

    python scripts/make_sample.py [--out supplementary/sample] [--annotate-only]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from nvsynth.core import ibug68
from nvsynth.core.geometry import estimate_head_pose
from nvsynth.recon.landmarks import DlibLandmarker

SUBJECT = "p00"
WIDTH, HEIGHT = 1280, 720
CAMERA = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
DIST = np.array([-0.10, 0.08, 0.0, 0.0, 0.0])
SCREEN_PX = (1280, 800)
SCREEN_MM = (331.0, 207.0)
# Screen -> camera: the camera sits on top of the screen's centre, the screen
# plane tilted slightly toward the user (as in MPIIGaze's laptop setting).
MONITOR_RVEC = np.array([-0.12, 0.0, 0.0])
MONITOR_TVEC = np.array([-SCREEN_MM[0] / 2.0, 12.0, -8.0])
HEAD_CROP = (110, 10, 350, 280)  # x0, y0, x1, y1 of the astronaut's head
# The smiling portrait's eye-to-mouth height is short for the MPIIGaze face
# model (PnP would read a frontal face as pitched ~40 degrees down), so the
# head is stretched vertically by 1.3; PnP then reads it as 10-20 degrees up,
# about what MPIIFaceGaze's own annotation does on real faces.
VERTICAL_STRETCH = 1.3
# (centre x, centre y, scale, roll in degrees, gaze point on screen in px)
FRAMES = [
    (640, 330, 2.3, 0.0, (640, 400)),
    (470, 300, 2.1, 6.0, (200, 150)),
    (820, 360, 2.4, -5.0, (1100, 650)),
    (560, 420, 1.9, 3.0, (300, 700)),
    (760, 280, 2.2, -8.0, (900, 120)),
    (650, 380, 2.6, 10.0, (640, 780)),
]


def background(rng: np.random.Generator) -> np.ndarray:
    """A soft office-like gradient with mild noise (BGR uint8)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.stack([150 + 40 * x / WIDTH, 160 + 30 * y / HEIGHT, 170 - 30 * x / WIDTH], axis=-1)
    noise = cv2.GaussianBlur(rng.normal(0, 12, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 9)[..., None]
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def place_head(canvas: np.ndarray, head: np.ndarray, cx: float, cy: float, scale: float, roll: float) -> np.ndarray:
    """Paste the head crop with a feathered elliptical edge, scaled and rolled about its centre."""
    h, w = head.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), roll, scale)
    M[:, 2] += (cx - w / 2.0, cy - h / 2.0)
    warped = cv2.warpAffine(head, M, (WIDTH, HEIGHT), flags=cv2.INTER_CUBIC)
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2), (int(w * 0.46), int(h * 0.48)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 6)
    a = cv2.warpAffine(alpha, M, (WIDTH, HEIGHT))[..., None]
    return (canvas * (1 - a) + warped * a).astype(np.uint8)


def distort(ideal: np.ndarray) -> np.ndarray:
    """Apply the lens distortion: sample the ideal image at each distorted pixel's ideal position."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    pts = np.stack([u.ravel(), v.ravel()], axis=-1).reshape(-1, 1, 2)
    ideal_pts = cv2.undistortPoints(pts, CAMERA, DIST, P=CAMERA).reshape(HEIGHT, WIDTH, 2).astype(np.float32)
    return cv2.remap(ideal, ideal_pts[..., 0], ideal_pts[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def screen_to_camera(px: tuple[float, float]) -> np.ndarray:
    """A screen pixel -> 3D point in camera mm (MPIIGaze monitorPose convention)."""
    p = np.array([px[0] * SCREEN_MM[0] / SCREEN_PX[0], px[1] * SCREEN_MM[1] / SCREEN_PX[1], 0.0])
    R, _ = cv2.Rodrigues(MONITOR_RVEC)
    return R @ p + MONITOR_TVEC


def build(out: Path) -> None:
    from skimage import data

    rng = np.random.default_rng(2024)
    portrait = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    x0, y0, x1, y1 = HEAD_CROP
    head = portrait[y0:y1, x0:x1]
    head = cv2.resize(head, None, fx=1.0, fy=VERTICAL_STRETCH, interpolation=cv2.INTER_CUBIC)
    landmarker = DlibLandmarker()
    tmp = Path(tempfile.mkdtemp(prefix="nvsynth-sample-"))
    sdir = tmp / SUBJECT
    (sdir / "Calibration").mkdir(parents=True)
    (sdir / "day01").mkdir()
    lines = []
    for i, (cx, cy, scale, roll, gaze_px) in enumerate(FRAMES, start=1):
        frame = distort(place_head(background(rng), head, cx, cy, scale, roll))
        rel = f"day01/{i:04d}.jpg"
        cv2.imwrite(str(sdir / rel), frame, [cv2.IMWRITE_JPEG_QUALITY, 88])
        saved = cv2.imread(str(sdir / rel))
        target = screen_to_camera(gaze_px)
        cols = [rel, *map(str, gaze_px), *annotation_columns(landmarker, saved)]
        cols += [f"{v:.6f}" for v in target]
        cols.append("left" if i % 2 else "right")
        lines.append(" ".join(cols))
    (sdir / f"{SUBJECT}.txt").write_text("\n".join(lines) + "\n")
    scipy.io.savemat(sdir / "Calibration" / "Camera.mat", {"cameraMatrix": CAMERA, "distCoeffs": DIST.reshape(1, 5)})
    scipy.io.savemat(
        sdir / "Calibration" / "monitorPose.mat",
        {"rvects": MONITOR_RVEC.reshape(3, 1), "tvecs": MONITOR_TVEC.reshape(3, 1)},
    )
    scipy.io.savemat(
        sdir / "Calibration" / "screenSize.mat",
        {
            "width_pixel": float(SCREEN_PX[0]),
            "height_pixel": float(SCREEN_PX[1]),
            "width_mm": SCREEN_MM[0],
            "height_mm": SCREEN_MM[1],
        },
    )
    target_dir = out / SUBJECT
    if target_dir.exists():
        shutil.rmtree(target_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.move(str(sdir), str(target_dir))
    shutil.rmtree(tmp, ignore_errors=True)
    total = sum(p.stat().st_size for p in target_dir.rglob("*") if p.is_file())
    print(f"wrote {target_dir} ({len(FRAMES)} frames, {total / 1e6:.2f} MB)")


def annotation_columns(landmarker: DlibLandmarker, image: np.ndarray) -> list[str]:
    """The annotation of one saved frame as MPIIFaceGaze's columns: six points (px), rvec, tvec, face centre."""
    six = landmarker(image).points[ibug68.MPII_SIX]
    pose = estimate_head_pose(six, CAMERA, DIST)
    return [f"{v:.0f}" for v in six.ravel()] + [
        f"{v:.6f}" for v in (*pose.rvec, *pose.translation, *pose.face_center())
    ]


def reannotate(out: Path) -> None:
    """Annotate the existing frames again (columns 4-24 of the txt), keeping images, gaze and calibration.

    For when the landmark backend or the PnP changes: the frames' bytes stay as they are.
    """
    txt = out / SUBJECT / f"{SUBJECT}.txt"
    landmarker = DlibLandmarker()
    lines = []
    for line in txt.read_text().splitlines():
        cols = line.split()
        saved = cv2.imread(str(out / SUBJECT / cols[0]))
        lines.append(" ".join([*cols[:3], *annotation_columns(landmarker, saved), *cols[24:]]))
    txt.write_text("\n".join(lines) + "\n")
    print(f"annotated {txt} again ({len(lines)} frames)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "supplementary" / "sample")
    ap.add_argument("--annotate-only", action="store_true", help="annotate the existing frames again, nothing else")
    args = ap.parse_args()
    reannotate(args.out) if args.annotate_only else build(args.out)


if __name__ == "__main__":
    main()
