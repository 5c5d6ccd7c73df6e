"""Scenes for the renderer tests: the ID-texture mesh, posed templates, CPU ray casts.

An "ID texture" makes every triangle unwelded, with all three of its texture
coordinates in the middle of its own 4x4 block of a small texture painted with
a colour that encodes the triangle's index. A render is then an exact
visibility buffer: each face pixel says which triangle it shows.
"""

from __future__ import annotations

import numpy as np

from nvsynth.core import geometry
from nvsynth.recon.template import FaceTemplate
from nvsynth.render.mesh import RenderMesh, vertex_normals

S = geometry.NORM_RENDER_SIZE
K_NORM = geometry.normalized_camera_matrix()
CENTRE = np.array([0.0, 0.0, geometry.NORM_DISTANCE])


def turn_about(centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """4x4 rigid transform: rotate about ``centre``."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = centre - rotation @ centre
    return T


def transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def id_colour(i: np.ndarray) -> np.ndarray:
    i = np.asarray(i)
    return np.stack([i & 0xFF, i >> 8, np.full_like(i, 255)], axis=-1).astype(np.uint8)  # BGR, R = 255 marker


def decode_ids(bgr: np.ndarray) -> np.ndarray:
    """Triangle index of each pixel of an ID render; -1 where no triangle is shown."""
    b, g, r = (bgr[..., k].astype(np.int64) for k in range(3))
    return np.where(r == 255, b + 256 * g, -1)


def id_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[RenderMesh, np.ndarray]:
    """Unwelded mesh whose triangle i samples only the colour id_colour(i) (flat per triangle)."""
    n = len(faces)
    cols = 64
    rows = -(-n // cols)
    tex = np.zeros((rows * 4, cols * 4, 3), dtype=np.uint8)
    ids = np.arange(n)
    for i in ids:
        r, c = divmod(int(i), cols)
        tex[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] = id_colour(i)
    centres = np.stack([(ids % cols) * 4 + 1.5, (ids // cols) * 4 + 1.5], axis=1)
    pos = np.asarray(vertices, dtype=np.float64)[faces].reshape(-1, 3)
    normals = vertex_normals(vertices, faces)[faces].reshape(-1, 3)
    mesh = RenderMesh(
        positions=pos.astype(np.float32),
        faces=np.arange(3 * n, dtype=np.int32).reshape(n, 3),
        texcoords=np.repeat(centres, 3, axis=0).astype(np.float32),
        normals=normals.astype(np.float32),
        seen=np.ones(3 * n, dtype=np.float32),
        landmarks=np.zeros((68, 3), dtype=np.float32),
    )
    return mesh, tex


def frontal_template(template: FaceTemplate) -> np.ndarray:
    """Template vertices facing the normalized camera, centred on the optical axis at 300 mm."""
    v = template.vertices
    centre = (v.max(axis=0) + v.min(axis=0)) / 2.0
    return v - centre + CENTRE


def pixel_depths(vertices: np.ndarray, faces: np.ndarray, pixel: np.ndarray) -> dict[int, float]:
    """Camera z of every triangle covering ``pixel`` (CPU ray cast through the pixel centre)."""
    ray = np.linalg.solve(K_NORM, np.array([pixel[0], pixel[1], 1.0]))
    out: dict[int, float] = {}
    for i, tri in enumerate(np.asarray(vertices, dtype=np.float64)[faces]):
        e1, e2 = tri[1] - tri[0], tri[2] - tri[0]
        m = np.stack([ray, -e1, -e2], axis=1)
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        t, a, b = np.linalg.solve(m, tri[0])
        if t > 0 and a >= 0 and b >= 0 and a + b <= 1:
            out[i] = float(t * ray[2])
    return out
