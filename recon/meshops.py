"""Triangle-mesh normals and edges, shared by recon (fit, visibility) and render (render may import recon).

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


def edges_with_faces(faces: NDArray[np.int32]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Unique undirected edges (E, 2) and their one or two faces (E, 2), -1 where absent."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    fid = np.tile(np.arange(len(f)), 3)
    e = np.sort(e, axis=1)
    uniq, inv = np.unique(e, axis=0, return_inverse=True)
    inv = inv.ravel()
    adj = np.full((len(uniq), 2), -1, dtype=np.int64)
    order = np.argsort(inv, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = inv[order][1:] != inv[order][:-1]
    adj[inv[order][first], 0] = fid[order][first]
    adj[inv[order][~first], 1] = fid[order][~first]
    return uniq, adj
