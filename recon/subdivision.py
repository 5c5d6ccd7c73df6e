"""Butterfly subdivision of the template's topology (``recon.subdivide``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from nvsynth.recon.meshops import edges_with_faces


@dataclass(frozen=True)
class Subdivision:
    """A fixed subdivision of the template's topology: new vertices = ``operator @ vertices``."""

    operator: sp.csr_matrix  # (V', V); its first V rows are the identity
    faces: NDArray[np.int32]  # (4^steps F, 3), same winding
    mirror: NDArray[np.int32]  # (V',) left/right mirror vertex

    def apply(self, vertices: ArrayLike) -> NDArray[np.float64]:
        return np.asarray(self.operator @ np.asarray(vertices, dtype=np.float64))


def subdivision(faces: ArrayLike, mirror: ArrayLike, steps: int = 1) -> Subdivision:
    """Split every triangle in four with the (interpolating) butterfly rule, ``steps`` times.

    The fitted vertices stay where the fit put them (unlike Loop subdivision,
    which would pull the nose tip and the jaw inward); a new edge point is
    1/2 (a + b) + 1/8 (c + d) - 1/16 (e + f + g + h) with c, d the opposite
    vertices and e..h the wings, the plain midpoint where a wing is missing,
    and the four-point rule 9/16 (a + b) - 1/16 (a' + b') along the outline.
    The mirror map extends to edge points: the mirror of edge (a, b) is (m(a), m(b)).
    Built once per process; applying it is one sparse product.
    """
    f = np.asarray(faces, dtype=np.int64)
    m = np.asarray(mirror, dtype=np.int64)
    n = len(m)
    op = sp.identity(n, format="csr")
    for _ in range(steps):
        step, f, m = _butterfly_step(f, m)
        op = (step @ op).tocsr()
    return Subdivision(op, f.astype(np.int32), m.astype(np.int32))


def _butterfly_step(
    f: NDArray[np.int64], m: NDArray[np.int64]
) -> tuple[sp.csr_matrix, NDArray[np.int64], NDArray[np.int64]]:
    n = len(m)
    edges, edge_faces = edges_with_faces(f.astype(np.int32))
    key = {(int(a), int(b)): i for i, (a, b) in enumerate(edges)}

    def eid(a: int, b: int) -> int:
        return key[(a, b) if a < b else (b, a)]

    def opposite(face: int, a: int, b: int) -> int:
        return int(next(x for x in f[face] if x != a and x != b))

    def wing(a: int, c: int, face: int) -> int | None:
        """The vertex across edge (a, c) from triangle ``face``."""
        for g in edge_faces[eid(a, c)]:
            if g >= 0 and g != face:
                return opposite(int(g), a, c)
        return None

    outline = edge_faces[:, 1] < 0
    nbr: dict[int, list[int]] = {}
    for a, b in edges[outline]:
        nbr.setdefault(int(a), []).append(int(b))
        nbr.setdefault(int(b), []).append(int(a))

    rows, cols, vals = list(range(n)), list(range(n)), [1.0] * n

    def put(i: int, stencil: list[tuple[int, float]]) -> None:
        for j, w in stencil:
            rows.append(n + i)
            cols.append(j)
            vals.append(w)

    for i, (a, b) in enumerate(edges):
        a, b = int(a), int(b)
        f0, f1 = int(edge_faces[i, 0]), int(edge_faces[i, 1])
        mid = [(a, 0.5), (b, 0.5)]
        if f1 < 0:
            pa = [x for x in nbr.get(a, []) if x != b]
            pb = [x for x in nbr.get(b, []) if x != a]
            ok = len(pa) == 1 and len(pb) == 1
            put(i, [(a, 9 / 16), (b, 9 / 16), (pa[0], -1 / 16), (pb[0], -1 / 16)] if ok else mid)
            continue
        c, d = opposite(f0, a, b), opposite(f1, a, b)
        wings = [wing(a, c, f0), wing(b, c, f0), wing(a, d, f1), wing(b, d, f1)]
        if any(w is None for w in wings):
            put(i, mid)
        else:
            put(i, [*mid, (c, 0.125), (d, 0.125), *[(int(w), -0.0625) for w in wings if w is not None]])
    op = sp.csr_matrix((vals, (rows, cols)), shape=(n + len(edges), n))  # duplicates add up
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    ab = n + np.array([eid(int(x), int(y)) for x, y in zip(a, b, strict=True)])
    bc = n + np.array([eid(int(x), int(y)) for x, y in zip(b, c, strict=True)])
    ca = n + np.array([eid(int(x), int(y)) for x, y in zip(c, a, strict=True)])
    faces = np.concatenate([np.c_[a, ab, ca], np.c_[ab, b, bc], np.c_[ca, bc, c], np.c_[ab, bc, ca]])
    mirror_new = n + np.array([eid(int(m[x]), int(m[y])) for x, y in edges])
    return op, faces, np.concatenate([m, mirror_new])
