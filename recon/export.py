"""Looking at a recon record: a textured OBJ for MeshLab, and a mesh-overlay image."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.recon.record import ReconRecord

#: Margin (px) around the face kept in the exported texture.
TEXTURE_MARGIN = 16


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_obj(record: ReconRecord, image: NDArray[np.uint8], stem: Path) -> list[Path]:
    """Write ``stem.obj``, ``stem.mtl`` and ``stem.png`` (the face crop of the source frame).

    Vertices are camera millimetres (OpenCV axes); texture coordinates address
    the crop, with v up as OBJ expects. Each file is written atomically.
    """
    stem = Path(stem)
    uv = np.asarray(record.uv, dtype=np.float64)
    h, w = image.shape[:2]
    x0 = int(max(0, np.floor(uv[:, 0].min()) - TEXTURE_MARGIN))
    y0 = int(max(0, np.floor(uv[:, 1].min()) - TEXTURE_MARGIN))
    x1 = int(min(w, np.ceil(uv[:, 0].max()) + TEXTURE_MARGIN + 1))
    y1 = int(min(h, np.ceil(uv[:, 1].max()) + TEXTURE_MARGIN + 1))
    if x1 <= x0 or y1 <= y0:
        x0, y0, x1, y1 = 0, 0, w, h
    crop = image[y0:y1, x0:x1]
    cw, ch = x1 - x0, y1 - y0
    # pixel centres at integer coordinates -> texture coordinates in [0, 1]
    tu = (uv[:, 0] - x0 + 0.5) / cw
    tv = 1.0 - (uv[:, 1] - y0 + 0.5) / ch

    ok, png = cv2.imencode(".png", crop)
    if not ok:
        raise OSError(f"cannot encode texture for {stem}")
    name = stem.name
    mtl = f"newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {name}.png\n"
    lines = [f"# nvsynth recon: {record.source_file}, camera mm (OpenCV axes)", f"mtllib {name}.mtl", "usemtl face"]
    lines += [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in np.asarray(record.vertices, dtype=np.float64)]
    lines += [f"vt {a:.6f} {b:.6f}" for a, b in zip(tu, tv, strict=True)]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in np.asarray(record.faces, dtype=np.int64) + 1]
    paths = [stem.with_suffix(".png"), stem.with_suffix(".mtl"), stem.with_suffix(".obj")]
    _atomic_write_bytes(paths[0], png.tobytes())
    _atomic_write_bytes(paths[1], mtl.encode())
    _atomic_write_bytes(paths[2], ("\n".join(lines) + "\n").encode())
    return paths


def draw_overlay(
    image: NDArray[np.uint8],
    record: ReconRecord,
    truth: NDArray[np.floating] | None = None,
    crop: bool = True,
) -> NDArray[np.uint8]:
    """The fitted mesh's wireframe and landmarks drawn over the source frame.

    Edges between visible vertices are cyan, other edges dark blue; detected
    landmarks are green, the fitted mesh's projected landmarks red, and
    ``truth`` (optional hand labels) yellow. With ``crop`` the result is cut to
    the face and scaled to 512 px high.
    """
    img = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    uv = np.asarray(record.uv, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    vis = np.asarray(record.visible, dtype=bool)
    # upscale so thin lines stay legible on small faces
    span = max(float(np.ptp(uv[:, 0])), float(np.ptp(uv[:, 1])), 1.0)
    up = int(np.clip(np.ceil(400.0 / span), 1, 8))
    if up > 1:
        img = cv2.resize(img, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
    sh = 4
    to_fixed = lambda p: np.round((np.asarray(p, dtype=np.float64) + 0.5) * up * (1 << sh) - 0.5 * (1 << sh)).astype(  # noqa: E731
        np.int32
    )
    q = to_fixed(uv)
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    e = np.unique(e, axis=0)
    both = vis[e[:, 0]] & vis[e[:, 1]]
    for (a, b), seen in zip(e, both, strict=True):
        color = (255, 255, 0) if seen else (140, 40, 0)
        cv2.line(img, tuple(q[a]), tuple(q[b]), color, 1, cv2.LINE_AA, shift=sh)
    from nvsynth.datasets.mpii import Camera

    cam = Camera(np.asarray(record.camera_matrix), np.asarray(record.dist_coeffs))
    fitted = cam.project(np.asarray(record.landmarks_3d, dtype=np.float64))
    r = 3 * (1 << sh)
    for pts, color in (
        (truth, (0, 220, 255)),
        (record.landmarks_2d, (0, 200, 0)),
        (fitted, (0, 0, 255)),
    ):
        if pts is None:
            continue
        for p in to_fixed(pts):
            cv2.circle(img, tuple(p), r, color, -1, cv2.LINE_AA, shift=sh)
    if not crop:
        return img
    m = 0.15 * span
    x0 = int(max(0, (uv[:, 0].min() - m) * up))
    y0 = int(max(0, (uv[:, 1].min() - m) * up))
    x1 = int(min(img.shape[1], (uv[:, 0].max() + m) * up))
    y1 = int(min(img.shape[0], (uv[:, 1].max() + m) * up))
    out = img[y0:y1, x0:x1]
    s = 512.0 / max(out.shape[0], 1)
    return cv2.resize(out, (max(1, round(out.shape[1] * s)), 512), interpolation=cv2.INTER_AREA)
