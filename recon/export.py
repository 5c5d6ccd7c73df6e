"""Looking at a recon record: a textured OBJ for MeshLab."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.core.atomic import write_bytes
from nvsynth.recon.record import ReconRecord

#: Margin (px) around the face kept in the exported texture.
TEXTURE_MARGIN = 16


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
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(paths[0], png.tobytes())
    write_bytes(paths[1], mtl.encode())
    write_bytes(paths[2], ("\n".join(lines) + "\n").encode())
    return paths
