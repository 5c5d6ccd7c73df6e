"""Recon records with a known pose, for the render-stage tests.

The real canonical face template (from ../shared) is placed in a calibrated
camera with a chosen head rotation and translation; the annotation is what
MPIIFaceGaze would hold for it (EPnP + LM on the six projected landmarks), and
the texture is a synthetic image painted where the face projects. No recon
step is involved, so the label geometry can be checked against exact values.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nvsynth.core import geometry, ibug68
from nvsynth.core.config import from_dict
from nvsynth.recon.meshops import vertex_normals
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.template import FaceTemplate, load_landmark_map, load_template

CAMERA = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
IMAGE_SIZE = (1280, 720)


def landmark_map(shared: Path) -> np.ndarray:
    cfg = from_dict({"assets": {"landmark_map": str(shared / "assets" / "dlib68_to_mp468.json")}})
    return load_landmark_map(cfg)


def make_record(
    template_path: Path,
    shared: Path,
    rotation: np.ndarray,
    translation: np.ndarray,
    gaze_target: np.ndarray,
    frame_index: int = 0,
    subject: str = "p00",
    source_file: str | None = None,
) -> ReconRecord:
    """A record of the template at ``rotation``/``translation`` (camera mm) looking at ``gaze_target``."""
    tpl = load_template(template_path)
    verts = tpl.vertices @ rotation.T + translation
    uv = geometry.project(verts, CAMERA)
    visible = np.einsum("ij,ij->i", vertex_normals(verts, tpl.faces), verts) < 0  # facing the camera
    lm3 = verts[landmark_map(shared)]
    lm2 = geometry.project(lm3, CAMERA)
    ann = geometry.estimate_head_pose(lm2[ibug68.MPII_SIX], CAMERA, np.zeros(5))
    return ReconRecord(
        vertices=verts.astype(np.float32),
        faces=tpl.faces.astype(np.int32),
        uv=uv.astype(np.float32),
        visible=visible,
        mirror=tpl.mirror.astype(np.int32),
        landmarks_2d=lm2.astype(np.float32),
        landmarks_3d=lm3.astype(np.float32),
        head_rotation=np.asarray(rotation, dtype=np.float64),
        head_translation=np.asarray(translation, dtype=np.float64),
        reprojection_error_px=0.0,
        detector="synthetic",
        subject=subject,
        frame_index=frame_index,
        source_file=source_file or f"{subject}/day01/{frame_index + 1:04d}.jpg",
        image_size=np.array(IMAGE_SIZE, dtype=np.int32),
        camera_matrix=CAMERA.copy(),
        dist_coeffs=np.zeros(5),
        annotation_rvec=ann.rvec,
        annotation_tvec=ann.translation,
        gaze_target=np.asarray(gaze_target, dtype=np.float64),
    )


def posed_record(
    template: FaceTemplate,
    rotation: np.ndarray,
    translation: np.ndarray,
    camera: np.ndarray,
    visible: np.ndarray,
    landmark_idx: np.ndarray,
) -> ReconRecord:
    """The template at a known pose, textured by the source image's projection (no distortion).

    The annotation is the template pose itself; ``visible`` and ``landmark_idx``
    (68 template vertices) are the caller's choice.
    """
    verts = template.vertices @ np.asarray(rotation).T + np.asarray(translation)
    idx = np.asarray(landmark_idx)
    return ReconRecord(
        vertices=verts.astype(np.float32),
        faces=template.faces,
        uv=geometry.project(verts, camera).astype(np.float32),
        visible=np.asarray(visible, dtype=bool),
        mirror=template.mirror,
        landmarks_2d=geometry.project(verts[idx], camera).astype(np.float32),
        landmarks_3d=verts[idx].astype(np.float32),
        head_rotation=np.asarray(rotation, dtype=np.float64),
        head_translation=np.asarray(translation, dtype=np.float64),
        reprojection_error_px=0.0,
        detector="synthetic",
        subject="p00",
        frame_index=0,
        source_file="p00/day01/0001.jpg",
        image_size=np.array(IMAGE_SIZE, dtype=np.int32),
        camera_matrix=np.asarray(camera, dtype=np.float64),
        dist_coeffs=np.zeros(5),
        annotation_rvec=cv2.Rodrigues(np.asarray(rotation, dtype=np.float64))[0].reshape(3),
        annotation_tvec=np.asarray(translation, dtype=np.float64),
        gaze_target=np.zeros(3),
    )


def random_pose(rng: np.random.Generator, max_deg: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """A head rotation with random pitch, yaw and roll, and a translation 450-650 mm away."""
    a = np.radians(rng.uniform(-max_deg, max_deg, size=3))
    rot = geometry.head_rotation_from_pitchyaw(a[0], a[1]) @ cv2.Rodrigues(np.array([0.0, 0.0, a[2]]))[0]
    t = np.array([rng.uniform(-80, 80), rng.uniform(-60, 60), rng.uniform(450, 650)])
    return rot, t


def texture_image(record: ReconRecord, seed: int = 0) -> np.ndarray:
    """A BGR source frame: smooth colour gradients with the face's triangles painted in distinct colours."""
    w, h = IMAGE_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 180 + 40, yy / h * 180 + 40, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    rng = np.random.default_rng(seed)
    uv = record.uv.astype(np.float64)
    for tri in record.faces[:: max(1, len(record.faces) // 300)]:
        pts = np.round(uv[tri]).astype(np.int32)
        cv2.fillConvexPoly(img, pts, tuple(int(c) for c in rng.integers(60, 255, size=3)))
    for p in record.landmarks_2d:
        cv2.circle(img, (round(float(p[0])), round(float(p[1]))), 2, (0, 0, 255), -1)
    return img


def write_dataset(
    root: Path, template_path: Path, shared: Path, subject: str, n: int, seed: int = 0
) -> tuple[Path, Path, list[ReconRecord]]:
    """``root/raw/<subject>/dayNN/*.jpg`` and ``root/obj/<subject>/dayNN/*.npz`` for ``n`` frames."""
    rng = np.random.default_rng(seed)
    raw, obj = root / "raw", root / "obj"
    records = []
    for i in range(n):
        rot, t = random_pose(rng)
        target = np.array([rng.uniform(-200, 200), rng.uniform(-50, 150), rng.uniform(-20, 20)])
        rec = make_record(template_path, shared, rot, t, target, frame_index=i, subject=subject)
        img_path = raw / rec.source_file
        img_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img_path), texture_image(rec, seed + i))
        rec.save(obj / Path(rec.source_file).with_suffix(".npz"))
        records.append(rec)
    return raw, obj, records
