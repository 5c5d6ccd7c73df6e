"""The render mesh of one source frame: the fitted face, textured by its own frame.

:func:`build_render_mesh` turns a :class:`~recon.record.ReconRecord` into a
:class:`RenderMesh` whose texture coordinates address the source image in
pixels (OpenCV convention: pixel centres at integer coordinates).

Unseen regions
--------------
When the head turns, parts of the face the source camera never saw (or saw
only at a grazing angle, where one texel is smeared over many pixels) come
into view. Texture is chosen **per triangle**, from one of three sources:

1. *own*: the triangle's own texels, when all three vertices are
   ``record.visible`` and the triangle faces the source camera with
   ``cos >= GRAZING_COS`` (angle between its normal and the line of sight).
2. *mirror*: the texels of the left/right mirror-symmetric triangle
   (``record.mirror``; the canonical mesh is symmetric), when that triangle
   qualifies as in 1. and either the triangle itself does not, or the mirror
   faces the source camera clearly better (``cos`` larger by
   ``MIRROR_MARGIN``). The margin makes the choice depend on a smooth
   function of the geometry, so the mirrored region is one contiguous patch
   on the far side of a turned face rather than a scatter of triangles.
3. *fallback*: neither qualifies (e.g. under the chin of a face seen from
   above). The triangle is painted flat with the colour at the texel centroid
   of the nearest (3D centroid distance) triangle of kind 1. or 2.; so it is
   always skin from nearby, never stretched background or hair.

Vertices are unwelded where triangles of different kinds meet (and for every
fallback triangle), so no triangle interpolates between a seen texel and a
mirrored one. Within one kind, shared vertices stay welded and the texture is
continuous. ``RenderMesh.seen`` is 1 on vertices of kind 1 and 0 otherwise.

Face mask
---------
``RenderMesh.face_region`` is the per-vertex face-mask attribute rendered into
the second render target: the signed distance (mm, positive inside) to the
face outline (dlib jaw line 0-16 and eyebrows 17-26, the region of
Gaze-NV-Rendering's ``get_mask_index``), measured in the frontal plane of
the fitted head frame, so it is a fixed region of the face whatever the
pose. The renderer interpolates it and keeps fragments where it is >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as PolygonPath
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from recon.record import ReconRecord

#: A triangle whose normal is more than acos(0.1) = 84 degrees from the line of sight counts as unseen.
GRAZING_COS = 0.1
#: The mirror triangle replaces a seen one when its cos is larger by at least this much.
MIRROR_MARGIN = 0.35

KIND_OWN, KIND_MIRROR, KIND_FALLBACK = 0, 1, 2

#: dlib indices of the face outline: jaw 0..16, then the eyebrows from 26 back to 17.
FACE_OUTLINE = (*range(17), *range(26, 16, -1))


@dataclass(frozen=True)
class RenderMesh:
    """A textured triangle mesh in source-camera millimetres, ready for :class:`render.gl.FaceRenderer`."""

    positions: NDArray[np.float32]  # (N, 3) source-camera mm
    faces: NDArray[np.int32]  # (F, 3) into positions
    texcoords: NDArray[np.float32]  # (N, 2) source-image pixels (x, y), centres at integers
    normals: NDArray[np.float32]  # (N, 3) unit, source camera, pointing out of the face
    seen: NDArray[np.float32]  # (N,) 1 where the texel is the vertex's own, 0 where filled
    landmarks: NDArray[np.float32]  # (68, 3) record.landmarks_3d
    face_region: NDArray[np.float32] | None = None  # (N,) face-mask attribute, inside where >= 0; None = all
    kinds: NDArray[np.int8] | None = None  # (F,) KIND_OWN / KIND_MIRROR / KIND_FALLBACK per triangle

    def region(self) -> NDArray[np.float32]:
        """The face-mask attribute (inside where >= 0), ones when the mesh carries none."""
        if self.face_region is None:
            return np.ones(len(self.positions), dtype=np.float32)
        return self.face_region


def vertex_normals(vertices: NDArray[np.floating], faces: NDArray[np.integer]) -> NDArray[np.float64]:
    """Area-weighted unit vertex normals, oriented by the triangle winding."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    idx = np.asarray(faces).reshape(-1)
    per_corner = np.repeat(fn, 3, axis=0)
    n = np.stack([np.bincount(idx, weights=per_corner[:, j], minlength=len(v)) for j in range(3)], axis=1)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(length > 0, length, 1.0)


def _facing_cos(vertices: NDArray[np.float64], tris: NDArray[np.integer], sign: float) -> NDArray[np.float64]:
    """cos of the angle between each triangle's outward normal and its line of sight to the camera origin."""
    p = vertices[tris]
    n = sign * np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    c = p.mean(axis=1)
    denom = np.linalg.norm(n, axis=1) * np.linalg.norm(c, axis=1)
    return np.where(denom > 0, -np.einsum("ij,ij->i", n, c) / np.where(denom > 0, denom, 1.0), -1.0)


def outward_sign(vertices: NDArray[np.floating], faces: NDArray[np.integer], head_rotation: NDArray) -> float:
    """+1 if the winding's normals point out of the face (towards -z of the head frame), else -1."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]
    total = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).sum(axis=0)
    outward = -np.asarray(head_rotation, dtype=np.float64)[:, 2]
    return 1.0 if float(total @ outward) >= 0 else -1.0


def face_region_distance(record: ReconRecord) -> NDArray[np.float64]:
    """Signed distance (mm, positive inside) of each vertex to the jaw/eyebrow outline.

    Measured in the head frame's frontal (x, y) plane. Interpolating it over
    the triangles and keeping the positive side cuts the mask along the
    outline itself rather than along triangle edges.
    """
    R = np.asarray(record.head_rotation, dtype=np.float64)
    t = np.asarray(record.head_translation, dtype=np.float64)
    pts = ((np.asarray(record.vertices, dtype=np.float64) - t) @ R)[:, :2]  # R^T (v - t), row-wise
    poly = ((np.asarray(record.landmarks_3d, dtype=np.float64) - t) @ R)[list(FACE_OUTLINE), :2]
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    rel = pts[:, None, :] - a[None]
    s = np.clip(np.einsum("nkj,kj->nk", rel, ab) / np.maximum(np.einsum("kj,kj->k", ab, ab), 1e-12), 0.0, 1.0)
    dist = np.linalg.norm(rel - s[..., None] * ab[None], axis=2).min(axis=1)
    inside = PolygonPath(poly).contains_points(pts)
    return np.where(inside, dist, -dist)


def classify_triangles(record: ReconRecord, sign: float | None = None) -> NDArray[np.int8]:
    """KIND_OWN / KIND_MIRROR / KIND_FALLBACK for each triangle (see the module docstring)."""
    v = np.asarray(record.vertices, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    mirror = np.asarray(record.mirror, dtype=np.int64)
    visible = np.asarray(record.visible, dtype=bool)
    if sign is None:
        sign = outward_sign(v, faces, record.head_rotation)
    # The mirror image of (a, b, c) is (m(a), m(b), m(c)) with the winding reversed.
    mfaces = mirror[faces][:, [0, 2, 1]]
    q_own = np.where(visible[faces].all(axis=1), _facing_cos(v, faces, sign), -1.0)
    q_mir = np.where(visible[mfaces].all(axis=1), _facing_cos(v, mfaces, sign), -1.0)
    own_ok = q_own >= GRAZING_COS
    mir_ok = q_mir >= GRAZING_COS
    use_mirror = mir_ok & (~own_ok | (q_mir - q_own > MIRROR_MARGIN))
    kinds = np.full(len(faces), KIND_FALLBACK, dtype=np.int8)
    kinds[own_ok & ~use_mirror] = KIND_OWN
    kinds[use_mirror] = KIND_MIRROR
    return kinds


def build_render_mesh(record: ReconRecord) -> RenderMesh:
    """The render mesh of one source frame, with unseen regions filled (see the module docstring)."""
    v = np.asarray(record.vertices, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    uv = np.asarray(record.uv, dtype=np.float64)
    mirror = np.asarray(record.mirror, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"record {record.source_file}: malformed mesh {v.shape}, {faces.shape}")
    sign = outward_sign(v, faces, record.head_rotation)
    kinds = classify_triangles(record, sign)
    n_faces = len(faces)

    # Texture coordinates per triangle corner.
    corner_uv = uv[faces]  # (F, 3, 2)
    is_mirror = kinds == KIND_MIRROR
    corner_uv[is_mirror] = uv[mirror[faces[is_mirror]]]
    fallback = np.flatnonzero(kinds == KIND_FALLBACK)
    if len(fallback):
        donors = np.flatnonzero(kinds != KIND_FALLBACK)
        centroids = v[faces].mean(axis=1)
        if len(donors):
            _, nearest = cKDTree(centroids[donors]).query(centroids[fallback])
            flat = corner_uv[donors[nearest]].mean(axis=1)  # (n_fallback, 2)
        else:  # nothing seen at all: one texel at the landmarks' centre
            flat = np.repeat(np.asarray(record.landmarks_2d, dtype=np.float64).mean(axis=0)[None], len(fallback), 0)
        corner_uv[fallback] = flat[:, None, :]

    # Unweld: one render vertex per (vertex, kind), and per corner for fallback triangles.
    corner_vertex = faces.reshape(-1)
    corner_kind = np.repeat(kinds, 3).astype(np.int64)
    corner_tri = np.where(corner_kind == KIND_FALLBACK, np.repeat(np.arange(n_faces), 3), -1)
    keys = (corner_vertex * 3 + corner_kind) * (n_faces + 1) + (corner_tri + 1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    src_vertex = corner_vertex[first]

    normals = vertex_normals(v, faces) * sign
    region = face_region_distance(record).astype(np.float32)
    return RenderMesh(
        positions=v[src_vertex].astype(np.float32),
        faces=inverse.reshape(n_faces, 3).astype(np.int32),
        texcoords=corner_uv.reshape(-1, 2)[first].astype(np.float32),
        normals=normals[src_vertex].astype(np.float32),
        seen=(corner_kind[first] == KIND_OWN).astype(np.float32),
        landmarks=np.asarray(record.landmarks_3d, dtype=np.float32),
        face_region=region[src_vertex],
        kinds=kinds,
    )
