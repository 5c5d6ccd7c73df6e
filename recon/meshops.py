"""Triangle-mesh normals, shared by recon (fit, visibility) and render (render may import recon, not the reverse).

The template's winding makes the normals point out of the face (towards the
camera for a frontal face, i.e. towards -z in camera coordinates).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def face_normals(vertices: ArrayLike, faces: ArrayLike) -> NDArray[np.float64]:
    """Unnormalised triangle normals (F, 3): (b - a) x (c - a), length twice the triangle's area."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[np.asarray(faces)]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def vertex_normals(vertices: ArrayLike, faces: ArrayLike) -> NDArray[np.float64]:
    """Area-weighted unit vertex normals (V, 3); zero for a vertex on no (or only degenerate) triangles."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    fn = face_normals(v, f)
    idx = f.reshape(-1)
    per_corner = np.repeat(fn, 3, axis=0)
    n = np.stack([np.bincount(idx, weights=per_corner[:, j], minlength=len(v)) for j in range(3)], axis=1)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(length > 0, length, 1.0)
