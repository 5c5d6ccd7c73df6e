"""The render mesh of one source frame: the fitted face, textured by its own frame.

:func:`build_render_mesh` turns a :class:`~recon.record.ReconRecord` into a
:class:`RenderMesh` whose texture coordinates address the source image in
pixels (OpenCV convention: pixel centres at integer coordinates).

Unseen regions
--------------
When the head turns, parts of the face the source camera never saw (or saw
only at a grazing angle, where one texel is smeared over many pixels) come
into view. Texture is chosen **per triangle**, from one of three sources.
With ``q`` = cos of the angle between a triangle's outward normal and its
line of sight to the source camera (-1 if a vertex is not
``record.visible``, or has a neighbour that faces the camera yet is not
visible: just behind an occlusion boundary a triangle can be partly hidden
though its vertices are seen), and
``q'`` the same for the left/right mirror-symmetric triangle
(``record.mirror``; the canonical mesh is symmetric):

1. *mirror*: the mirror triangle's texels, when ``q' >= GRAZING_COS`` and
   either ``q < GRAZING_COS`` (unseen or edge-on), or the triangle is seen
   obliquely (``q < MIRROR_BELOW_COS``) and its mirror clearly better
   (``q' >= q + MIRROR_MARGIN``). Triangles of the eyes (inside the dlib
   eye contours 36-41 / 42-47, slightly enlarged) are mirrored only in the
   first case: a mirrored eye would carry the other eye's iris, mirrored, and
   so contradict the gaze label.
2. *own*: otherwise, when ``q >= GRAZING_COS``: the triangle's own texels.
3. *fallback*: neither is usable (e.g. under the chin of a face seen from
   above). The triangle is painted flat with the colour at the texel centroid
   of the nearest (3D centroid distance) triangle of kind 1 or 2 that faced
   the camera well (``q >= DONOR_COS``; any of kind 1 or 2 if there is none);
   so it is skin from nearby, never stretched background or hair.

Both thresholds on ``q`` select regions bounded by smooth iso-lines of the
geometry, and where both sources are usable a triangle then follows the
majority of its three edge neighbours (``SMOOTHING_PASSES`` times), so the
mirrored texture is one contiguous patch on the far side of a turned face,
not a scatter of triangles. Vertices are unwelded where
triangles of different kinds meet (and for every fallback triangle), so no
triangle interpolates between a seen texel and a mirrored one; within one
kind, shared vertices stay welded and the texture is continuous.
``RenderMesh.seen`` is 1 on vertices of kind 2 (own) and 0 otherwise.

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
#: Seen more obliquely than acos(0.3) = 73 degrees, a triangle may take its mirror's texels ...
MIRROR_BELOW_COS = 0.3
#: ... when the mirror's cos is larger by at least this much.
MIRROR_MARGIN = 0.2
#: Fallback triangles copy the colour of the nearest triangle seen at least this squarely (60 degrees).
DONOR_COS = 0.5
#: Passes of neighbour-majority smoothing of the own/mirror choice.
SMOOTHING_PASSES = 2
#: Eye triangles: centroid inside the eye contour scaled by this factor about the contour's centre.
EYE_SCALE = 1.25

KIND_OWN, KIND_MIRROR, KIND_FALLBACK = 0, 1, 2

#: dlib indices of the face outline: jaw 0..16, then the eyebrows from 26 back to 17.
FACE_OUTLINE = (*range(17), *range(26, 16, -1))
#: dlib indices of the two eye contours.
EYES = (tuple(range(36, 42)), tuple(range(42, 48)))


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
    pts = _head_frame(record, record.vertices)[:, :2]
    poly = _head_frame(record, record.landmarks_3d)[list(FACE_OUTLINE), :2]
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    rel = pts[:, None, :] - a[None]
    s = np.clip(np.einsum("nkj,kj->nk", rel, ab) / np.maximum(np.einsum("kj,kj->k", ab, ab), 1e-12), 0.0, 1.0)
    dist = np.linalg.norm(rel - s[..., None] * ab[None], axis=2).min(axis=1)
    inside = PolygonPath(poly).contains_points(pts)
    return np.where(inside, dist, -dist)


def _head_frame(record: ReconRecord, points: NDArray) -> NDArray[np.float64]:
    """Points from source-camera coordinates into the fitted head frame, R^T (p - t)."""
    R = np.asarray(record.head_rotation, dtype=np.float64)
    t = np.asarray(record.head_translation, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - t) @ R


def eye_triangles(record: ReconRecord) -> NDArray[np.bool_]:
    """Triangles whose centroid lies in an (enlarged) eye contour, in the head frame's frontal plane."""
    v = np.asarray(record.vertices, dtype=np.float64)
    centroids = _head_frame(record, v[np.asarray(record.faces)].mean(axis=1))[:, :2]
    lm = _head_frame(record, record.landmarks_3d)[:, :2]
    inside = np.zeros(len(centroids), dtype=bool)
    for eye in EYES:
        contour = lm[list(eye)]
        centre = contour.mean(axis=0)
        inside |= PolygonPath(centre + EYE_SCALE * (contour - centre)).contains_points(centroids)
    return inside


def stably_visible(
    faces: NDArray[np.integer], visible: NDArray[np.bool_], facing: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Visible vertices none of whose mesh neighbours is occluded (facing the camera, yet not visible).

    A triangle just behind an occlusion boundary (e.g. the far cheek beside
    the nose) can have three visible vertices and still be partly hidden; its
    texels would then show the occluder. Neighbours that are hidden because
    they face away (the far side of the nose ridge) do not count: the ridge
    itself is in plain view.
    """
    f = np.asarray(faces, dtype=np.int64)
    occluded = facing & ~visible
    near_occluded = np.zeros(len(visible), dtype=bool)
    near_occluded[f[occluded[f].any(axis=1)].reshape(-1)] = True
    return visible & ~near_occluded


def triangle_quality(record: ReconRecord, sign: float | None = None) -> tuple[NDArray, NDArray]:
    """(q, q') of the module docstring: how squarely each triangle and its mirror faced the source camera."""
    v = np.asarray(record.vertices, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    mirror = np.asarray(record.mirror, dtype=np.int64)
    if sign is None:
        sign = outward_sign(v, faces, record.head_rotation)
    facing = np.einsum("ij,ij->i", sign * vertex_normals(v, faces), v) < 0
    visible = stably_visible(faces, np.asarray(record.visible, dtype=bool), facing)
    # The mirror image of (a, b, c) is (m(a), m(b), m(c)) with the winding reversed.
    mfaces = mirror[faces][:, [0, 2, 1]]
    q_own = np.where(visible[faces].all(axis=1), _facing_cos(v, faces, sign), -1.0)
    q_mir = np.where(visible[mfaces].all(axis=1), _facing_cos(v, mfaces, sign), -1.0)
    return q_own, q_mir


def triangle_neighbours(faces: NDArray[np.integer]) -> NDArray[np.int64]:
    """(F, 3): the triangle across each edge (a-b, b-c, c-a), -1 on the mesh boundary."""
    f = np.asarray(faces, dtype=np.int64)
    n = len(f)
    edges = np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=1).reshape(-1, 2)
    key = np.sort(edges, axis=1)
    key = key[:, 0] * (int(f.max()) + 1) + key[:, 1]
    order = np.argsort(key, kind="stable")
    k = key[order]
    out = np.full(3 * n, -1, dtype=np.int64)
    pair = np.flatnonzero(k[1:] == k[:-1])  # manifold: each interior edge appears twice
    a, b = order[pair], order[pair + 1]
    out[a], out[b] = b // 3, a // 3
    return out.reshape(n, 3)


def classify_triangles(record: ReconRecord, sign: float | None = None) -> NDArray[np.int8]:
    """KIND_OWN / KIND_MIRROR / KIND_FALLBACK for each triangle (see the module docstring)."""
    q_own, q_mir = triangle_quality(record, sign)
    own_ok = q_own >= GRAZING_COS
    mir_ok = q_mir >= GRAZING_COS
    eyes = eye_triangles(record)
    oblique = (q_own < MIRROR_BELOW_COS) & (q_mir >= q_own + MIRROR_MARGIN) & ~eyes
    use_mirror = mir_ok & (~own_ok | oblique)
    # Majority smoothing: where both sources are usable, follow two or three neighbours that agree,
    # so no lone own triangle sits in a mirrored patch (or the reverse). Eyes keep their own texels.
    free = own_ok & mir_ok & ~eyes
    nb = triangle_neighbours(np.asarray(record.faces))
    for _ in range(SMOOTHING_PASSES):
        votes = np.where(nb >= 0, use_mirror[np.maximum(nb, 0)], False).sum(axis=1)
        valid = (nb >= 0).sum(axis=1)
        flip_to_mirror = free & ~use_mirror & (votes >= 2)
        flip_to_own = free & use_mirror & (valid - votes >= 2)
        use_mirror = (use_mirror | flip_to_mirror) & ~flip_to_own
    kinds = np.full(len(q_own), KIND_FALLBACK, dtype=np.int8)
    kinds[own_ok & ~use_mirror] = KIND_OWN
    kinds[use_mirror] = KIND_MIRROR
    return kinds


def occlusion_visible(verts: NDArray[np.floating], faces: NDArray[np.integer], eps: float = 1e-3) -> NDArray[np.bool_]:
    """Vertices that face a camera at the origin and that no other triangle hides from it (ray casting).

    Normals follow the winding, which must point out of the surface. Cost:
    one ray per vertex against every triangle (vectorised; ~50 ms for the
    template), so it is meant for tools and tests, not the render loop.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    normals = vertex_normals(verts, faces)
    facing = np.einsum("ij,ij->i", normals, verts) < 0
    tri = verts[faces]  # (F, 3, 3)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    d = verts[:, None, :]  # ray o = 0, direction = vertex (t = 1 at the vertex)
    p = np.cross(d, e2[None])
    det = np.einsum("vfj,fj->vf", p, e1)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = -tri[None, :, 0]
    u = np.einsum("vfj,vfj->vf", np.broadcast_to(s, p.shape), p) * inv
    q = np.cross(np.broadcast_to(s, p.shape), e1[None])
    v = np.einsum("vfj,vfj->vf", np.broadcast_to(d, q.shape), q) * inv
    t = np.einsum("vfj,fj->vf", q, e2) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > eps) & (t < 1 - eps)
    incident = np.zeros(hit.shape, dtype=bool)
    incident[faces[:, 0], np.arange(len(faces))] = True
    incident[faces[:, 1], np.arange(len(faces))] = True
    incident[faces[:, 2], np.arange(len(faces))] = True
    return facing & ~(hit & ~incident).any(axis=1)


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
    q_own, q_mir = triangle_quality(record, sign)
    n_faces = len(faces)

    # Texture coordinates per triangle corner.
    corner_uv = uv[faces]  # (F, 3, 2)
    is_mirror = kinds == KIND_MIRROR
    corner_uv[is_mirror] = uv[mirror[faces[is_mirror]]]
    fallback = np.flatnonzero(kinds == KIND_FALLBACK)
    if len(fallback):
        quality = np.where(kinds == KIND_MIRROR, q_mir, q_own)
        donors = np.flatnonzero((kinds != KIND_FALLBACK) & (quality >= DONOR_COS))
        if not len(donors):
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
