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
line of sight to the source camera, and ``q'`` the same for the left/right
mirror-symmetric triangle (``record.mirror``; the canonical mesh is
symmetric), a triangle is *usable* when its three vertices are
``record.visible`` (see :mod:`recon.visibility`: depth test that lets
shallow creases through, grazing limit except well inside the face, a
margin beside deep occluders) and ``q >= BACKFACE_COS``: a crease such as
the nostril or nose wing can tilt one triangle past edge-on while its
vertices are plainly seen, and its own texels, a thin stretched strip of the
photo at that very place, beat any substitute. It is *good* when also
``q >= GRAZING_COS`` (not edge-on).

1. *mirror*: the mirror triangle's texels, when the mirror is usable and the
   triangle is not, or the mirror is good and the triangle is not good or
   is seen obliquely (``q < MIRROR_BELOW_COS``) with its mirror clearly
   better (``q' >= q + MIRROR_MARGIN``). Where both are good, the choice
   follows a smoothed field instead of each triangle's normal: the
   triangles' choices (1 = mirror) are spread to the vertices, diffused over
   about ``SMOOTHING_MM`` and thresholded at 1/2, so the mirrored texture is
   one contiguous region on the far side of a turned face, bounded by a
   smooth line, and features that face the camera a little more (a
   moustache, a nose wing) do not stay islands of own texture in it.
   An eye (the triangles inside an eye contour, ``ibug68.RIGHT_EYE`` /
   ``LEFT_EYE``, slightly enlarged) of which the source saw any triangle is never
   mirrored: a mirrored eye would carry the other eye's iris, mirrored, and
   so contradict the gaze label; its unseen triangles are filled (3.).
   Mirrored patches smaller than ``MIN_MIRROR_PATCH_MM2`` (a nostril or lip
   corner seen on one side only) are filled (or keep their own texels)
   instead: a pasted-in speck of the other side reads as a stain.
2. *own*: otherwise, when the triangle is usable: its own texels.
3. *fill* (``KIND_FALLBACK``): neither is usable (the sides of the head
   beyond the grazing limit on both sides of a frontal face, under the chin
   or the nose of a face seen from above). Fill is **per vertex**
   (:func:`fill_texcoords`), never per triangle: a vertex that also belongs
   to an own (else a mirror) triangle is *anchored* at that triangle's
   texel; every other vertex starts from the texel of its nearest (3D)
   *donor*, a vertex all of whose triangles are own (or all mirror) and
   whose texel was seen squarely (vertex cos >= ``DONOR_COS``), and
   ``FILL_SMOOTHING`` Jacobi passes average it with its mesh neighbours'.
   The texture is thus continued from the seen surface across the fill,
   without a seam at its border and without flat patches. Safety first: a
   fill triangle's texture footprint must stay on texels some usable
   triangle covers (:func:`seen_texels`; not across the mouth, not beyond a
   silhouette, where anchored texels stretched over a large fill could show
   background); if the anchored texels fail, its corners are pulled towards
   the donors' texels (``FILL_BLEND``), and if even the donors' fail, the
   triangle is painted flat with the texel of the donor nearest its
   centroid (rare: a few triangles in the mouth corners or a nostril).

Vertices are unwelded where triangles of different kinds meet, so no
triangle interpolates between a seen texel and a mirrored one; within one
kind, shared vertices stay welded and the texture is continuous.
``RenderMesh.seen`` is 1 on vertices of kind 2 (own) and 0 otherwise.

Not done here: where mirrored and own texels meet, the two sides of a photo
lit from one side differ in brightness. Matching the mirrored texels' mean
colour to their own-texel neighbours' needs a per-vertex colour gain in the
renderer, which today multiplies texels by the light only.

Face mask
---------
``RenderMesh.face_region`` is the per-vertex face-mask attribute rendered into
the second render target: the signed distance (mm, positive inside) to the
face outline (``ibug68.FACE_OUTLINE``: jaw line and eyebrows, the region of
Gaze-NV-Rendering's ``get_mask_index``), measured in the frontal plane of
the fitted head frame, so it is a fixed region of the face whatever the
pose. The renderer interpolates it and keeps fragments where it is >= 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from matplotlib.path import Path as PolygonPath
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from nvsynth.core import ibug68
from nvsynth.recon.meshops import face_normals, vertex_normals
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.visibility import MAX_VIEW_ANGLE_DEG, OCCLUSION_GAP_MM, OCCLUSION_MARGIN_MM

#: A triangle seen more obliquely than acos(0.1) = 84 degrees is edge-on (texels smeared 10x): a usable mirror wins.
GRAZING_COS = 0.1
#: A triangle whose vertices the source saw is usable down to this cos (a crease tilted past edge-on).
BACKFACE_COS = -0.3
#: Seen more obliquely than acos(0.3) = 73 degrees, a triangle may take its mirror's texels ...
MIRROR_BELOW_COS = 0.3
#: ... when the mirror's cos is larger by at least this much.
MIRROR_MARGIN = 0.2
#: Mirrored patches smaller than this (mm^2; a nostril seen on one side only) are filled instead.
MIN_MIRROR_PATCH_MM2 = 150.0
#: Fill vertices copy the texel of the nearest vertex seen at least this squarely (60 degrees).
DONOR_COS = 0.5
#: Diffusion length (mm) of the own/mirror choice where both are usable.
SMOOTHING_MM = 15.0
#: Jacobi passes averaging the texels of fill vertices with their neighbours'.
FILL_SMOOTHING = 4
#: Blends of a fill triangle's texels from anchored (0) to its donors' (1), tried in turn (see build_render_mesh).
FILL_BLEND = (0.0, 0.25, 0.5, 1.0)
#: Eye triangles: centroid inside the eye contour scaled by this factor about the contour's centre.
EYE_SCALE = 1.25

KIND_OWN, KIND_MIRROR, KIND_FALLBACK = 0, 1, 2


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


def _facing_cos(vertices: NDArray[np.float64], tris: NDArray[np.integer], sign: float) -> NDArray[np.float64]:
    """cos of the angle between each triangle's outward normal and its line of sight to the camera origin."""
    n = sign * face_normals(vertices, tris)
    c = vertices[tris].mean(axis=1)
    denom = np.linalg.norm(n, axis=1) * np.linalg.norm(c, axis=1)
    return np.where(denom > 0, -np.einsum("ij,ij->i", n, c) / np.where(denom > 0, denom, 1.0), -1.0)


def outward_sign(vertices: NDArray[np.floating], faces: NDArray[np.integer], head_rotation: NDArray) -> float:
    """+1 if the winding's normals point out of the face (towards -z of the head frame), else -1."""
    total = face_normals(vertices, faces).sum(axis=0)
    outward = -np.asarray(head_rotation, dtype=np.float64)[:, 2]
    return 1.0 if float(total @ outward) >= 0 else -1.0


def face_region_distance(record: ReconRecord) -> NDArray[np.float64]:
    """Signed distance (mm, positive inside) of each vertex to the jaw/eyebrow outline.

    Measured in the head frame's frontal (x, y) plane. Interpolating it over
    the triangles and keeping the positive side cuts the mask along the
    outline itself rather than along triangle edges.
    """
    pts = _head_frame(record, record.vertices)[:, :2]
    poly = _head_frame(record, record.landmarks_3d)[ibug68.FACE_OUTLINE, :2]
    ax, ay = poly[:, 0], poly[:, 1]
    abx, aby = np.roll(ax, -1) - ax, np.roll(ay, -1) - ay
    rx, ry = pts[:, 0:1] - ax, pts[:, 1:2] - ay  # (N, K): vertex relative to each edge's start
    s = np.clip((rx * abx + ry * aby) / np.maximum(abx * abx + aby * aby, 1e-12), 0.0, 1.0)
    dx, dy = rx - s * abx, ry - s * aby
    dist = np.sqrt((dx * dx + dy * dy).min(axis=1))
    inside = PolygonPath(poly).contains_points(pts)
    return np.where(inside, dist, -dist)


def _head_frame(record: ReconRecord, points: NDArray) -> NDArray[np.float64]:
    """Points from source-camera coordinates into the fitted head frame, R^T (p - t)."""
    R = np.asarray(record.head_rotation, dtype=np.float64)
    t = np.asarray(record.head_translation, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - t) @ R


def eye_triangles(record: ReconRecord) -> NDArray[np.int8]:
    """Per triangle: 0, or 1 / 2 when its centroid lies in the (enlarged) right / left eye contour (iBUG 36-41 / 42-47).

    Measured in the head frame's frontal plane.
    """
    v = np.asarray(record.vertices, dtype=np.float64)
    centroids = _head_frame(record, v[np.asarray(record.faces)].mean(axis=1))[:, :2]
    lm = _head_frame(record, record.landmarks_3d)[:, :2]
    label = np.zeros(len(centroids), dtype=np.int8)
    for k, eye in enumerate((ibug68.RIGHT_EYE, ibug68.LEFT_EYE), start=1):
        contour = lm[eye]
        centre = contour.mean(axis=0)
        label[PolygonPath(centre + EYE_SCALE * (contour - centre)).contains_points(centroids) & (label == 0)] = k
    return label


def _vertex_cos(vertices: NDArray[np.float64], faces: NDArray[np.int64], sign: float) -> NDArray[np.float64]:
    """cos of the angle between each outward vertex normal and the line of sight to the camera origin."""
    n = sign * vertex_normals(vertices, faces)
    return -np.einsum("ij,ij->i", n, vertices) / np.maximum(np.linalg.norm(vertices, axis=1), 1e-12)


def triangle_quality(
    record: ReconRecord, sign: float | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """(q, q', usable, usable') of the module docstring, for each triangle and its mirror."""
    v = np.asarray(record.vertices, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    mirror = np.asarray(record.mirror, dtype=np.int64)
    if sign is None:
        sign = outward_sign(v, faces, record.head_rotation)
    visible = np.asarray(record.visible, dtype=bool)
    # The mirror image of (a, b, c) is (m(a), m(b), m(c)) with the winding reversed.
    mfaces = mirror[faces][:, [0, 2, 1]]
    q_own = _facing_cos(v, faces, sign)
    q_mir = _facing_cos(v, mfaces, sign)
    own_ok = visible[faces].all(axis=1) & (q_own >= BACKFACE_COS)
    mir_ok = visible[mfaces].all(axis=1) & (q_mir >= BACKFACE_COS)
    return q_own, q_mir, own_ok, mir_ok


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
    return _classify(record, sign)[0]


def _classify(record: ReconRecord, sign: float | None) -> tuple[NDArray[np.int8], NDArray[np.bool_]]:
    """(kinds, usable) per triangle."""
    q_own, q_mir, own_ok, mir_ok = triangle_quality(record, sign)
    eyes = eye_triangles(record)
    # An eye the source saw (any of its triangles usable) keeps its own texels and is never mirrored.
    seen_eye = np.isin(eyes, [k for k in (1, 2) if np.any(own_ok & (eyes == k))])
    own_good = own_ok & (q_own >= GRAZING_COS)
    mir_good = mir_ok & (q_mir >= GRAZING_COS)
    oblique = own_ok & (q_own < MIRROR_BELOW_COS) & (q_mir >= q_own + MIRROR_MARGIN)
    use_mirror = ((mir_good & (~own_good | oblique)) | (mir_ok & ~own_ok)) & ~seen_eye
    # Where both sources are usable, the choice follows a smoothed field rather than each triangle's
    # own normal, so features that face the camera a little more (a moustache, a nose wing) do not stay
    # islands of own texture in a mirrored cheek: the triangles' choices (1 = mirror) are spread to the
    # vertices, diffused over about SMOOTHING_MM, and a free triangle mirrors where its corners' mean > 1/2.
    free = own_good & mir_good & ~seen_eye
    use_mirror[free] = _diffused_choice(record, use_mirror.astype(np.float64))[free] > 0.5
    nb = triangle_neighbours(np.asarray(record.faces))
    use_mirror &= ~small_patches(record.vertices, record.faces, use_mirror, MIN_MIRROR_PATCH_MM2, nb)
    kinds = np.full(len(q_own), KIND_FALLBACK, dtype=np.int8)
    kinds[own_ok & ~use_mirror] = KIND_OWN
    kinds[use_mirror] = KIND_MIRROR
    return kinds, own_ok


def _half_edges(faces: NDArray[np.int64]) -> NDArray[np.int64]:
    """(6F, 2) directed edges (a, b) and (b, a) of every triangle: interior edges appear twice, boundary ones once."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.concatenate([e, e[:, ::-1]])


def _diffused_choice(record: ReconRecord, choice: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per triangle: the mean over its corners of ``choice`` (per triangle) spread to vertices and diffused."""
    v = np.asarray(record.vertices, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    n = len(v)
    area = 0.5 * np.linalg.norm(face_normals(v, faces), axis=1)
    corners = faces.reshape(-1)
    w = np.repeat(area, 3)
    field = np.bincount(corners, weights=w * np.repeat(choice, 3), minlength=n)
    field /= np.maximum(np.bincount(corners, weights=w, minlength=n), 1e-12)
    edges = _half_edges(faces)
    length = float(np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1).mean())
    passes = int(np.ceil((SMOOTHING_MM / max(length, 1e-6)) ** 2))
    degree = np.maximum(np.bincount(edges[:, 0], minlength=n), 1)
    for _ in range(passes):
        field = 0.5 * field + 0.5 * np.bincount(edges[:, 0], weights=field[edges[:, 1]], minlength=n) / degree
    return field[faces].mean(axis=1)


def small_patches(
    vertices: NDArray[np.floating],
    faces: NDArray[np.integer],
    selected: NDArray[np.bool_],
    min_area_mm2: float,
    neighbours: NDArray[np.int64] | None = None,
) -> NDArray[np.bool_]:
    """Selected triangles whose edge-connected patch of selected triangles has less than ``min_area_mm2``."""
    f = np.asarray(faces, dtype=np.int64)
    nb = triangle_neighbours(f) if neighbours is None else neighbours
    idx = np.flatnonzero(selected)
    if not len(idx):
        return np.zeros(len(f), dtype=bool)
    pos = np.full(len(f), -1, dtype=np.int64)
    pos[idx] = np.arange(len(idx))
    a = np.repeat(np.arange(len(idx)), 3)
    b = pos[np.where(nb[idx] >= 0, nb[idx], 0)].reshape(-1)
    keep = (nb[idx].reshape(-1) >= 0) & (b >= 0)
    graph = coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(len(idx), len(idx)))
    _, label = connected_components(graph, directed=False)
    v = np.asarray(vertices, dtype=np.float64)
    area = 0.5 * np.linalg.norm(face_normals(v, f[idx]), axis=1)
    patch_area = np.bincount(label, weights=area)
    out = np.zeros(len(f), dtype=bool)
    out[idx] = patch_area[label] < min_area_mm2
    return out


def occlusion_visible(
    verts: NDArray[np.floating],
    faces: NDArray[np.integer],
    eps: float = 1e-3,
    max_angle_deg: float = MAX_VIEW_ANGLE_DEG,
    gap_mm: float = OCCLUSION_GAP_MM,
    margin_mm: float = OCCLUSION_MARGIN_MM,
) -> NDArray[np.bool_]:
    """Vertices that face a camera at the origin and that no other triangle hides from it (ray casting).

    The same rules as :func:`recon.visibility.visible_vertices`: a vertex
    normal more than ``max_angle_deg`` from the line of sight counts as
    unseen, and so do vertices within ``margin_mm`` of one hidden behind
    surface at least ``gap_mm`` in front of it.
    Normals follow the winding, which must point out of the surface. Cost:
    one ray per vertex against every triangle (vectorised; ~50 ms for the
    template), so it is meant for tools and tests, not the render loop.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    cos = -np.einsum("ij,ij->i", vertex_normals(verts, faces), verts) / np.linalg.norm(verts, axis=1)
    facing = cos > np.cos(np.radians(max_angle_deg))
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
    blocked = hit & ~incident
    visible = facing & ~blocked.any(axis=1)
    t_near = np.where(blocked, t, np.inf).min(axis=1)
    deep = facing & (np.linalg.norm(verts, axis=1) * (1.0 - t_near) >= gap_mm)
    if deep.any():
        dist, _ = cKDTree(verts[deep]).query(verts, distance_upper_bound=margin_mm)
        visible &= ~np.isfinite(dist)
    return visible


def fill_texcoords(
    record: ReconRecord, kinds: NDArray[np.int8], sign: float | None = None, anchored: bool = False
) -> tuple[NDArray[np.float64], Callable[[NDArray[np.float64]], NDArray[np.float64]]]:
    """(V, 2) texel of each vertex for fill triangles (see the module docstring, 3.), and a donor lookup.

    Each vertex starts from the texel of its nearest donor (itself if it is
    one); ``FILL_SMOOTHING`` Jacobi passes then average the non-donor vertices'
    texels with their neighbours'. With ``anchored``, every vertex of an own
    (else a mirror) triangle keeps that triangle's texel instead, and only the
    vertices of fill triangles alone are averaged: the fill then meets its
    neighbours without a seam. The lookup maps points (P, 3) to the texels
    (P, 2) of their nearest donors.
    """
    v = np.asarray(record.vertices, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    uv = np.asarray(record.uv, dtype=np.float64)
    mirror = np.asarray(record.mirror, dtype=np.int64)
    if sign is None:
        sign = outward_sign(v, faces, record.head_rotation)
    n = len(v)
    corners = faces.reshape(-1)
    k = np.repeat(kinds, 3)
    count = np.bincount(corners, minlength=n)
    all_own = np.bincount(corners, weights=k == KIND_OWN, minlength=n) == count
    all_mir = np.bincount(corners, weights=k == KIND_MIRROR, minlength=n) == count
    texel = np.where(all_mir[:, None], uv[mirror], uv)
    cos = _vertex_cos(v, faces, sign)
    texel_cos = np.where(all_mir, cos[mirror], cos)
    interior = (count > 0) & (all_own | all_mir)
    donors = np.flatnonzero(interior & (texel_cos >= DONOR_COS))
    if not len(donors):
        donors = np.flatnonzero(interior)
    if not len(donors):  # nothing seen at all: one texel at the landmarks' centre
        centre = np.asarray(record.landmarks_2d, dtype=np.float64).mean(axis=0)
        return np.repeat(centre[None], n, axis=0), lambda p: np.repeat(centre[None], len(p), axis=0)
    is_donor = np.zeros(n, dtype=bool)
    is_donor[donors] = True
    tree = cKDTree(v[donors])

    def lookup(points: NDArray[np.float64]) -> NDArray[np.float64]:
        return texel[donors[tree.query(points)[1]]].reshape(-1, 2)

    out = lookup(v)
    free = np.flatnonzero(~is_donor)
    if anchored:
        in_own = np.bincount(corners, weights=k == KIND_OWN, minlength=n) > 0
        in_mir = np.bincount(corners, weights=k == KIND_MIRROR, minlength=n) > 0
        out = np.where(in_own[:, None], uv, np.where(in_mir[:, None], uv[mirror], out))
        free = np.flatnonzero(~(in_own | in_mir))
    # Jacobi passes over the other vertices, averaging over the mesh edges.
    edges = _half_edges(faces)
    degree = np.maximum(np.bincount(edges[:, 0], minlength=n), 1).astype(np.float64)
    for _ in range(FILL_SMOOTHING):
        total = np.stack([np.bincount(edges[:, 0], weights=out[edges[:, 1], j], minlength=n) for j in (0, 1)], axis=1)
        out[free] = total[free] / degree[free, None]
    return out, lookup


#: Barycentric sample points of a fill triangle's texture footprint, checked against the seen texels.
_FOOTPRINT_SAMPLES = np.array(
    [
        [1 / 3, 1 / 3, 1 / 3],
        [0.9, 0.05, 0.05],
        [0.05, 0.9, 0.05],
        [0.05, 0.05, 0.9],
        [0.475, 0.475, 0.05],
        [0.05, 0.475, 0.475],
        [0.475, 0.05, 0.475],
        [2 / 3, 1 / 6, 1 / 6],
        [1 / 6, 2 / 3, 1 / 6],
        [1 / 6, 1 / 6, 2 / 3],
    ]
)


def seen_texels(
    uv: NDArray[np.floating], seen_faces: NDArray[np.integer]
) -> Callable[[NDArray[np.floating]], NDArray[np.bool_]]:
    """A test of texture footprints against the seen texels (see :func:`footprints_seen`), rasterised once."""
    uv = np.asarray(uv, dtype=np.float64)
    seen_faces = np.asarray(seen_faces, dtype=np.int64)
    lo = np.floor(uv.min(axis=0)) - 1
    hi = np.ceil(uv.max(axis=0)) + 2
    mask = np.zeros((int(hi[1] - lo[1]), int(hi[0] - lo[0])), dtype=np.uint8)
    fixed = np.round((uv[seen_faces] - lo) * 16.0).astype(np.int32)  # 4 bits of sub-pixel precision
    for t in fixed:
        cv2.fillConvexPoly(mask, t, 1, lineType=cv2.LINE_8, shift=4)

    def test(footprints: NDArray[np.floating]) -> NDArray[np.bool_]:
        fp = np.asarray(footprints, dtype=np.float64).reshape(-1, 3, 2)
        ij = np.round(np.einsum("sk,tkj->tsj", _FOOTPRINT_SAMPLES, fp) - lo).astype(np.int64)  # (T, S, 2)
        inside = (ij >= 0).all(axis=2) & (ij[..., 0] < mask.shape[1]) & (ij[..., 1] < mask.shape[0])
        ij = np.where(inside[..., None], ij, 0)
        return (inside & (mask[ij[..., 1], ij[..., 0]] > 0)).all(axis=1)

    return test


def footprints_seen(
    uv: NDArray[np.floating], seen_faces: NDArray[np.integer], footprints: NDArray[np.floating]
) -> NDArray[np.bool_]:
    """(T,): whether every sample point of each texture triangle ``footprints`` (T, 3, 2) lies on a seen texel.

    Seen texels: the source-image area covered by the triangles ``seen_faces``
    at their texture coordinates ``uv``, rasterised at one pixel.
    """
    return seen_texels(uv, seen_faces)(footprints)


def build_render_mesh(record: ReconRecord) -> RenderMesh:
    """The render mesh of one source frame, with unseen regions filled (see the module docstring)."""
    v = np.asarray(record.vertices, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    uv = np.asarray(record.uv, dtype=np.float64)
    mirror = np.asarray(record.mirror, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"record {record.source_file}: malformed mesh {v.shape}, {faces.shape}")
    sign = outward_sign(v, faces, record.head_rotation)
    kinds, usable = _classify(record, sign)
    n_faces = len(faces)

    # Texture coordinates per triangle corner.
    corner_uv = uv[faces]  # (F, 3, 2)
    is_mirror = kinds == KIND_MIRROR
    corner_uv[is_mirror] = uv[mirror[faces[is_mirror]]]
    fill = np.flatnonzero(kinds == KIND_FALLBACK)
    variant = np.zeros(n_faces, dtype=np.int64)  # fill: index into FILL_BLEND, len(FILL_BLEND) = flat
    if len(fill):
        # The first blend of the anchored texels (0) towards the donors' (1) whose footprint stays on texels
        # some usable triangle covers (not across a mouth, not beyond a silhouette); flat if none does.
        seen = seen_texels(uv, faces[usable])
        anchored, _ = fill_texcoords(record, kinds, sign, anchored=True)
        texel, donor_texel = fill_texcoords(record, kinds, sign)
        choice = np.full(len(fill), len(FILL_BLEND))
        fill_uv = np.empty((len(fill), 3, 2))
        for i, alpha in enumerate(FILL_BLEND):
            todo = np.flatnonzero(choice == len(FILL_BLEND))
            candidate = ((1.0 - alpha) * anchored + alpha * texel)[faces[fill[todo]]]
            ok = seen(candidate)
            fill_uv[todo[ok]] = candidate[ok]
            choice[todo[ok]] = i
        flat = choice == len(FILL_BLEND)
        fill_uv[flat] = donor_texel(v[faces[fill[flat]]].mean(axis=1))[:, None, :]
        corner_uv[fill] = fill_uv
        variant[fill] = choice

    # Unweld: one render vertex per (vertex, kind, fill variant), and per corner for flat fill triangles.
    corner_vertex = faces.reshape(-1)
    corner_kind = np.repeat(kinds, 3).astype(np.int64)
    corner_variant = np.repeat(variant, 3)
    corner_tri = np.where(corner_variant == len(FILL_BLEND), np.repeat(np.arange(n_faces), 3), -1)
    keys = ((corner_vertex * 3 + corner_kind) * (len(FILL_BLEND) + 1) + corner_variant) * (n_faces + 1) + (
        corner_tri + 1
    )
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
