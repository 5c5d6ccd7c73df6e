"""Frames of a true head in the MPIIFaceGaze layout, with the truth kept beside them.

Per frame, a head pose is drawn (yaw U(-30, 30) deg, pitch U(-20, 20), roll
U(-5, 5), head 500-700 mm from the camera, off-axis by up to a quarter of the
distance sideways); the true head is rendered unlit with nvsynth's own renderer
(:class:`nvsynth.render.gl.FaceRenderer`, 2x supersampled, area-reduced) into
the ideal pinhole image over a procedural room, which is then distorted with
the calibration's lens model through cv2 maps (as ``scripts/make_sample.py``
does) and saved as JPEG (quality 95).

The annotation is made the MPIIFaceGaze way: the six points (eye corners,
mouth corners) are the true mesh's landmark vertices projected with the
distortion and rounded to whole pixels as in MPIIFaceGaze; the head pose is PnP
on the MPIIGaze six-point model with the distortion
(:func:`nvsynth.core.geometry.estimate_head_pose`); the face centre is that
pose's; the gaze target is a random point on a screen below the camera.

Layout::

    ROOT/raw/pXX/pXX.txt, Calibration/{Camera,monitorPose,screenSize}.mat, day01/NNNN.jpg
    ROOT/truth/pXX.npz          the head (vertices, faces, uv, texture) and each frame's R, t
    ROOT/truth/pXX/NNNN.png     the true head's coverage of each (distorted) frame, 0/255
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from numpy.typing import NDArray

from nvsynth.core.geometry import estimate_head_pose, head_rotation_from_pitchyaw
from nvsynth.recon.landmarks import IBUG_SIX
from nvsynth.recon.meshops import vertex_normals
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import RenderMesh

from .heads import TrueHead

WIDTH, HEIGHT = 1280, 720
#: A webcam-like calibration (not the bundled sample's), with radial and tangential distortion.
CAMERA = np.array([[1010.0, 0.0, 652.0], [0.0, 1010.0, 347.0], [0.0, 0.0, 1.0]])
DIST = np.array([-0.14, 0.11, 0.0012, -0.0009, -0.03])
SCREEN_PX = (1440, 900)
SCREEN_MM = (331.0, 207.0)
MONITOR_RVEC = np.array([-0.10, 0.0, 0.0])
MONITOR_TVEC = np.array([-SCREEN_MM[0] / 2.0, 10.0, -6.0])
SUPERSAMPLE = 2
JPEG_QUALITY = 95


@dataclass(frozen=True)
class TruthSubject:
    """What ``ROOT/truth/pXX.npz`` holds: the head and, per frame, its pose in the source camera."""

    subject: str
    head: TrueHead
    rotations: NDArray[np.float64]  # (N, 3, 3) head frame -> camera
    translations: NDArray[np.float64]  # (N, 3) mm
    files: list[str]  # "dayNN/NNNN.jpg" per frame

    def camera_vertices(self, frame: int) -> NDArray[np.float64]:
        return self.head.vertices @ self.rotations[frame].T + self.translations[frame]


def rot_z(a: float) -> NDArray[np.float64]:
    return cv2.Rodrigues(np.array([0.0, 0.0, a]))[0]


def sample_pose(rng: np.random.Generator) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(rotation, face-centre position in mm, (pitch, yaw, roll) in degrees) of one frame."""
    pyr = np.array([rng.uniform(-20, 20), rng.uniform(-30, 30), rng.uniform(-5, 5)])
    p, y, r = np.radians(pyr)
    R = head_rotation_from_pitchyaw(p, y) @ rot_z(r)
    z = rng.uniform(500.0, 700.0)
    centre = np.array([rng.uniform(-0.25, 0.25) * z, rng.uniform(-0.12, 0.15) * z, z])
    return R, centre, pyr


def background(rng: np.random.Generator) -> NDArray[np.uint8]:
    """A procedural room (BGR): a lit wall, a window, shelves and a door, with sensor-like noise."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = rng.uniform(110, 190, size=3)
    img = base + 40 * (x / WIDTH - 0.5)[..., None] * rng.uniform(-1, 1, 3) - 30 * (y / HEIGHT)[..., None]
    img = img.astype(np.float32)
    for _ in range(int(rng.integers(5, 9))):
        x0, y0 = int(rng.integers(0, WIDTH - 80)), int(rng.integers(0, HEIGHT - 60))
        w, h = int(rng.integers(60, 420)), int(rng.integers(20, 360))
        colour = tuple(float(c) for c in rng.uniform(20, 240, size=3))
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), colour, -1)
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), tuple(0.6 * c for c in colour), 3)
    for _ in range(int(rng.integers(6, 14))):
        p0 = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        p1 = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        cv2.line(img, p0, p1, tuple(float(c) for c in rng.uniform(0, 255, 3)), int(rng.integers(1, 6)))
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    grain = cv2.GaussianBlur(rng.normal(0, 10, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 3)
    return np.clip(img + grain[..., None], 0, 255).astype(np.uint8)


def distortion_maps() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """For every distorted pixel, where it lies in the ideal pinhole image."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    pts = np.stack([u.ravel(), v.ravel()], axis=-1).reshape(-1, 1, 2)
    ideal = cv2.undistortPoints(pts, CAMERA, DIST, P=CAMERA).reshape(HEIGHT, WIDTH, 2).astype(np.float32)
    return ideal[..., 0], ideal[..., 1]


def project_distorted(points: NDArray[np.float64]) -> NDArray[np.float64]:
    out, _ = cv2.projectPoints(np.asarray(points, np.float64).reshape(-1, 1, 3), np.zeros(3), np.zeros(3), CAMERA, DIST)
    return out.reshape(-1, 2)


class FrameRenderer:
    """Renders a posed true head into the ideal image (supersampled), then distorts it."""

    def __init__(self) -> None:
        s = SUPERSAMPLE
        self.side = s * WIDTH
        self.row0 = (self.side - s * HEIGHT) // 2
        K = CAMERA.copy()
        K[:2, :2] *= s
        K[:2, 2] = s * K[:2, 2] + (s - 1) / 2.0  # pixel centres at integers at both scales
        K[1, 2] += self.row0
        self.renderer = FaceRenderer(size=self.side, camera_matrix=K)
        self.maps = distortion_maps()

    def render(
        self, head: TrueHead, vertices: NDArray[np.float64], scene: NDArray[np.uint8]
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        """(distorted frame BGR, distorted coverage 0/255) of the head at camera-space ``vertices``."""
        mesh = RenderMesh(
            positions=vertices.astype(np.float32),
            faces=head.faces,
            texcoords=head.uv.astype(np.float32),
            normals=vertex_normals(vertices, head.faces).astype(np.float32),
            seen=np.ones(len(vertices), dtype=np.float32),
            landmarks=vertices[head.landmark_vertices].astype(np.float32),
        )
        batch = self.renderer.render(head.texture, mesh, np.eye(4)[None])
        rows = slice(self.row0, self.row0 + SUPERSAMPLE * HEIGHT)
        colour = batch.color[0, rows].astype(np.float32)
        alpha = (batch.alpha[0, rows] > 0).astype(np.float32)
        small = cv2.resize(np.dstack([colour * alpha[..., None], alpha]), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
        a = small[..., 3:4]
        ideal = small[..., :3] + scene.astype(np.float32) * (1.0 - a)
        mx, my = self.maps
        frame = cv2.remap(ideal, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        cover = cv2.remap(a[..., 0], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return np.clip(frame + 0.5, 0, 255).astype(np.uint8), np.where(cover >= 0.5, 255, 0).astype(np.uint8)

    def release(self) -> None:
        self.renderer.release()


def screen_to_camera(px: NDArray[np.float64]) -> NDArray[np.float64]:
    """A screen pixel -> 3D point in camera mm (MPIIGaze monitorPose convention)."""
    p = np.array([px[0] * SCREEN_MM[0] / SCREEN_PX[0], px[1] * SCREEN_MM[1] / SCREEN_PX[1], 0.0])
    return cv2.Rodrigues(MONITOR_RVEC)[0] @ p + MONITOR_TVEC


def write_calibration(sdir: Path) -> None:
    cal = sdir / "Calibration"
    cal.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(cal / "Camera.mat", {"cameraMatrix": CAMERA, "distCoeffs": DIST.reshape(1, 5)})
    scipy.io.savemat(
        cal / "monitorPose.mat", {"rvects": MONITOR_RVEC.reshape(3, 1), "tvecs": MONITOR_TVEC.reshape(3, 1)}
    )
    scipy.io.savemat(
        cal / "screenSize.mat",
        {
            "width_pixel": float(SCREEN_PX[0]),
            "height_pixel": float(SCREEN_PX[1]),
            "width_mm": SCREEN_MM[0],
            "height_mm": SCREEN_MM[1],
        },
    )


def write_subject(
    root: Path, subject: str, head: TrueHead, frames: int, seed: int, renderer: FrameRenderer | None = None
) -> TruthSubject:
    """Render ``frames`` frames of ``head`` into ``root/raw/<subject>`` and keep the truth in ``root/truth``."""
    rng = np.random.default_rng(seed)
    sdir = Path(root) / "raw" / subject
    tdir = Path(root) / "truth" / subject
    (sdir / "day01").mkdir(parents=True, exist_ok=True)
    tdir.mkdir(parents=True, exist_ok=True)
    write_calibration(sdir)
    own = renderer is None
    fr = renderer or FrameRenderer()
    six = head.landmark_vertices[list(IBUG_SIX)]
    rotations, translations, files, lines = [], [], [], []
    try:
        for i in range(frames):
            R, centre, _ = sample_pose(rng)
            t = centre - R @ head.vertices[six].mean(axis=0)
            verts = head.vertices @ R.T + t
            frame, cover = fr.render(head, verts, background(rng))
            rel = f"day01/{i + 1:04d}.jpg"
            cv2.imwrite(str(sdir / rel), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            cv2.imwrite(str(tdir / f"{i + 1:04d}.png"), cover)
            pts6 = np.round(project_distorted(verts[six]))
            pose = estimate_head_pose(pts6, CAMERA, DIST)
            gaze_px = rng.uniform([0, 0], SCREEN_PX)
            target = screen_to_camera(gaze_px)
            cols = [rel, *(f"{v:.0f}" for v in gaze_px), *(f"{v:.0f}" for v in pts6.ravel())]
            cols += [f"{v:.6f}" for v in (*pose.rvec, *pose.translation, *pose.face_center(), *target)]
            cols.append("left" if i % 2 else "right")
            lines.append(" ".join(cols))
            rotations.append(R)
            translations.append(t)
            files.append(rel)
    finally:
        if own:
            fr.release()
    (sdir / f"{subject}.txt").write_text("\n".join(lines) + "\n")
    truth = TruthSubject(subject, head, np.array(rotations), np.array(translations), files)
    save_truth(Path(root) / "truth" / f"{subject}.npz", truth)
    return truth


def save_truth(path: Path, t: TruthSubject) -> None:
    h = t.head
    np.savez_compressed(
        path,
        subject=t.subject,
        name=h.name,
        vertices=h.vertices,
        faces=h.faces,
        mirror=h.mirror,
        uv=h.uv,
        texture=h.texture,
        landmark_vertices=h.landmark_vertices,
        displacement_mm=h.displacement_mm,
        rotations=t.rotations,
        translations=t.translations,
        files=np.array(t.files),
    )


def load_truth(path: Path) -> TruthSubject:
    with np.load(path, allow_pickle=False) as z:
        head = TrueHead(
            name=str(z["name"]),
            vertices=z["vertices"],
            faces=z["faces"],
            mirror=z["mirror"],
            uv=z["uv"],
            texture=z["texture"],
            landmark_vertices=z["landmark_vertices"],
            displacement_mm=float(z["displacement_mm"]),
        )
        return TruthSubject(str(z["subject"]), head, z["rotations"], z["translations"], [str(f) for f in z["files"]])


def coverage(root: Path, subject: str, frame: int) -> NDArray[np.uint8]:
    """The true head's coverage of frame ``frame`` (0-based), distorted pixels, 0/255."""
    img = cv2.imread(str(Path(root) / "truth" / subject / f"{frame + 1:04d}.png"), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(f"truth coverage of {subject} frame {frame} missing under {root}/truth")
    return img
