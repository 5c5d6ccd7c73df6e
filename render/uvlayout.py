"""The texture-atlas layout: the face template's own UV chart, rasterised once per process.

MediaPipe's canonical face mesh carries one UV chart (every triangle
positively oriented, no seams) that is left/right symmetric about u = 1/2
to within 0.001. :func:`uv_layout` rasterises it into a square atlas of
``size`` texels: atlas pixel (x, y) = (u * size - 1/2, (1 - v) * size - 1/2),
pixel centres at integers, the face upright. For every texel whose centre
lies in a triangle it stores the triangle and, as one sparse matrix, the
barycentric weights of its corners (so any per-vertex attribute is
interpolated to all texels with one product); and the atlas position of its
mirror point: the same barycentric point of the mirror triangle (``mirror``:
the vertices of the template at (-x, y, z)), where the symmetric surface
point lies on the chart. Texels just off the chart (the gutter, within
``GUTTER_TEXELS``) copy their nearest chart texel, so that bilinear sampling
at the chart's edge reads the surface, not whatever lies beyond it. A
half-resolution layout of the same chart comes with it.

A recon record made with ``recon.subdivide`` has more vertices than the
template: :meth:`TemplateChart.layout` subdivides the chart to match (new
vertices at the UV midpoints of their parent edges), so the chart is always
the record's own topology.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from nvsynth.recon.fit import subdivision
from nvsynth.recon.template import FaceTemplate

#: Texels per side of the atlas. 384 (512 before): the atlas 34 -> 20 ms per source, the fidelity benchmark
#: 0.86 / 3.52 -> 0.87 / 3.58 px, the patches' sharpness inside the face (mean |Laplacian|) 0.8 % lower.
ATLAS_SIZE = 384
#: Texels off the chart that copy the nearest texel on it (bilinear sampling at the chart's edge reads them).
GUTTER_TEXELS = 2.0
#: Subdivision steps a record may have (``recon.subdivide``).
MAX_SUBDIVISION = 2


@dataclass(frozen=True)
class UVLayout:
    """A UV chart rasterised into a ``size`` x ``size`` atlas (see the module docstring)."""

    size: int
    faces: NDArray[np.int32]  # (F, 3) the mesh topology the chart belongs to
    texcoords: NDArray[np.float32]  # (V, 2) atlas pixels (x, y), centres at integers
    triangle: NDArray[np.int32]  # (size, size) the triangle of each texel, -1 off the chart
    weights: sp.csr_matrix  # (size * size, V) float32: barycentric weights of each texel's triangle corners
    texels: NDArray[np.int64]  # (N,) flat indices of the texels on the chart ...
    texel_weights: sp.csr_matrix  # (N, V) ... and their rows of ``weights`` (the same sums, without the empty rows)
    mirror_xy: NDArray[np.float32]  # (size, size, 2) atlas position of each texel's mirror point (-1 off the chart)
    gutter: NDArray[np.int64]  # (G,) flat indices of the texels off the chart within GUTTER_TEXELS of it ...
    gutter_source: NDArray[np.int64]  # (G,) ... and of the nearest texel on the chart to each
    half: UVLayout | None  # the same chart at size // 2 (texel (i, j) centred on full texel (2i + 1/2, 2j + 1/2))

    @property
    def inside(self) -> NDArray[np.bool_]:
        """(size, size): texels on the chart."""
        return self.triangle >= 0

    def interpolate(self, attributes: NDArray[np.floating]) -> NDArray[np.float32]:
        """Per-vertex ``attributes`` (V, C) at every texel: (size, size, C), zeros off the chart."""
        a = np.asarray(attributes, dtype=np.float32).reshape(len(attributes), -1)
        out = np.zeros((self.size * self.size, a.shape[1]), dtype=np.float32)
        out[self.texels] = self.texel_weights @ a
        return out.reshape(self.size, self.size, -1)


def atlas_texcoords(uv: NDArray[np.floating], size: int) -> NDArray[np.float64]:
    """OBJ texture coordinates (u, v up) to atlas pixels (x, y down), pixel centres at integers."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([uv[:, 0] * size - 0.5, (1.0 - uv[:, 1]) * size - 0.5], axis=1)


def uv_layout(
    uv: NDArray[np.floating],
    faces: NDArray[np.integer],
    mirror: NDArray[np.integer],
    size: int = ATLAS_SIZE,
    with_half: bool = True,
) -> UVLayout:
    """Rasterise the chart ``uv`` (V, 2, OBJ convention) of the mesh ``faces`` with vertex ``mirror`` map."""
    f = np.asarray(faces, dtype=np.int64)
    m = np.asarray(mirror, dtype=np.int64)
    tc = atlas_texcoords(uv, size)
    corners = tc[f]  # (F, 3, 2)
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    if np.any(area <= 0) and np.any(area >= 0):
        raise ValueError("the UV chart folds over: its triangles are not all oriented alike")
    # Each texel whose centre lies in a triangle (an edge shared by two goes to the later one).
    ids = np.full((size, size), -1, dtype=np.int32)
    lo = np.clip(np.ceil(corners.min(axis=1)), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor(corners.max(axis=1)), 0, size - 1).astype(np.int64)
    for t in range(len(f)):
        ys, xs = np.mgrid[lo[t, 1] : hi[t, 1] + 1, lo[t, 0] : hi[t, 0] + 1]
        bt = _barycentric(corners[t][None], np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64))
        hit = bt.min(axis=1) >= -1e-9
        ids[ys.ravel()[hit], xs.ravel()[hit]] = t
    texel = np.flatnonzero(ids.reshape(-1) >= 0)
    tri = ids.reshape(-1)[texel]
    p = np.stack([texel % size, texel // size], axis=1).astype(np.float64)
    bary = _barycentric(corners[tri], p)
    weights = sp.csr_matrix(
        (
            bary.astype(np.float32).ravel(),
            f[tri].ravel(),
            np.concatenate([[0], np.cumsum(np.where(ids.ravel() >= 0, 3, 0))]),
        ),
        shape=(size * size, len(tc)),
    )
    # The mirror point: the same barycentric combination of the mirror vertices.
    mirror_xy = np.full((size * size, 2), -1.0, dtype=np.float32)
    mirror_xy[texel] = np.einsum("nk,nkj->nj", bary, tc[m[f[tri]]])
    gutter, source = _gutter(ids >= 0)
    mirror_xy[gutter] = mirror_xy[source]  # a gutter texel mirrors its chart texel
    return UVLayout(
        size=size,
        faces=f.astype(np.int32),
        texcoords=tc.astype(np.float32),
        triangle=ids,
        weights=weights,
        texels=texel,
        texel_weights=weights[texel],
        mirror_xy=mirror_xy.reshape(size, size, 2),
        gutter=gutter,
        gutter_source=source,
        half=uv_layout(uv, faces, mirror, size // 2, with_half=False) if with_half else None,
    )


def _gutter(inside: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The texels off the chart within GUTTER_TEXELS of it, and the nearest texel on the chart to each."""
    dist, labels = cv2.distanceTransformWithLabels(
        (~inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE, labelType=cv2.DIST_LABEL_PIXEL
    )
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lookup[labels[inside]] = np.flatnonzero(inside)
    gutter = np.flatnonzero(~inside & (dist <= GUTTER_TEXELS))
    return gutter, lookup[labels.reshape(-1)[gutter]]


def _half_map(xy: NDArray[np.float32], inside: NDArray[np.bool_]) -> NDArray[np.float32]:
    """A position map on the half-resolution grid (texel (i, j) covers full texels 2i..2i+1, 2j..2j+1).

    The mean of the covered texels' positions on the chart, in half-resolution
    pixels; -1 where none is on the chart.
    """
    h, w = inside.shape[0] // 2, inside.shape[1] // 2
    ins = inside[: 2 * h, : 2 * w].astype(np.float32).reshape(h, 2, w, 2).sum(axis=(1, 3))
    acc = (xy[: 2 * h, : 2 * w] * inside[: 2 * h, : 2 * w, None]).reshape(h, 2, w, 2, 2).sum(axis=(1, 3))
    half = (acc / np.maximum(ins, 1.0)[..., None] - 0.5) / 2.0
    return np.where(ins[..., None] > 0, half, -1.0).astype(np.float32)


def _barycentric(corners: NDArray[np.float64], points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Barycentric coordinates (N, 3) of ``points`` (N, 2) in triangles ``corners`` (N or 1, 3, 2)."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    e1, e2, d = b - a, c - a, points - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    l1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
    l2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
    return np.stack([1.0 - l1 - l2, l1, l2], axis=1)


def subdivided_uv(
    uv: NDArray[np.floating], faces: NDArray[np.integer], mirror: NDArray[np.integer], steps: int
) -> tuple[NDArray[np.float64], NDArray[np.int32], NDArray[np.int32]]:
    """(uv, faces, mirror) of the chart after ``steps`` subdivisions as :func:`recon.fit.subdivision` makes them.

    A new vertex lies at the UV midpoint of its parent edge: the two largest
    weights of its row of the (one-step) subdivision operator.
    """
    uv = np.asarray(uv, dtype=np.float64)
    f, m = np.asarray(faces, dtype=np.int32), np.asarray(mirror, dtype=np.int32)
    for _ in range(steps):
        sub = subdivision(f, m, 1)
        op = sub.operator.tocsr()
        n = len(uv)
        new = np.empty((op.shape[0] - n, 2))
        for i in range(n, op.shape[0]):
            cols = op.indices[op.indptr[i] : op.indptr[i + 1]]
            w = op.data[op.indptr[i] : op.indptr[i + 1]]
            a, b = cols[np.argsort(-w, kind="stable")[:2]]
            new[i - n] = 0.5 * (uv[a] + uv[b])
        uv, f, m = np.concatenate([uv, new]), sub.faces, sub.mirror
    return uv, f, m


class TemplateChart:
    """The template's UV chart, rasterised on first use for each topology a record may have.

    One per process (a render worker's); the layouts are cached.
    """

    def __init__(
        self, uv: NDArray[np.floating], faces: NDArray[np.integer], mirror: NDArray[np.integer], size: int = ATLAS_SIZE
    ) -> None:
        self.uv = np.asarray(uv, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.int32)
        self.mirror = np.asarray(mirror, dtype=np.int32)
        self.size = int(size)
        self._layouts: dict[int, UVLayout] = {}

    @classmethod
    def of(cls, template: FaceTemplate, size: int = ATLAS_SIZE) -> TemplateChart:
        return cls(template.uv, template.faces, template.mirror, size)

    def layout(self, n_vertices: int) -> UVLayout:
        """The layout of a record with ``n_vertices`` vertices: the template's, or one of its subdivisions'."""
        if n_vertices not in self._layouts:
            for steps in range(MAX_SUBDIVISION + 1):
                uv, f, m = subdivided_uv(self.uv, self.faces, self.mirror, steps)
                if len(uv) == n_vertices:
                    self._layouts[n_vertices] = uv_layout(uv, f, m, self.size)
                    break
            else:
                raise ValueError(f"no subdivision of the face template has {n_vertices} vertices")
        return self._layouts[n_vertices]
