"""Which vertices of the fitted mesh the source camera sees.

A small software z-buffer (no render/ dependency): front-facing triangles are
painted far-to-near (painter's algorithm, ``cv2.fillConvexPoly``) into a
triangle-id image of the face's bounding box. A vertex is visible when

* the triangle painted at its pixel is one of its own, or lies no more than
  ``depth_tolerance_mm`` nearer than the vertex there (depth of that
  triangle's plane along the vertex's ray), and
* its surface is not seen at a grazing angle: the angle between the vertex
  normal and the ray to the camera is below ``max_angle_deg``. Texels of
  grazing surface are stretched smears of the image, so they count as unseen
  -- except in the interior of the face's image, farther than
  ``interior_mm`` (at the face's distance) from any pixel the face does not
  cover (its outline, the eye and mouth openings): there a surface seen edge-on (the nostrils under
  the nose tip, the folds of the nose wings) still faces the camera, and its
  texels, though stretched, show that part of the face, not background,
* and it is not just beside an occlusion silhouette: where surface hides a
  vertex from at least ``gap_mm`` in front of it (the nose in front of the far
  cheek, not a shallow crease such as the nostril base or the lip corners,
  whose gaps are a few mm), the visible vertices within ``margin_mm`` of the
  hidden one count as unseen too: with a fit error of a few pixels their
  texels may show the occluder (nose texels painted onto the cheek when the
  head turns).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from nvsynth.recon.meshops import face_normals, vertex_normals

#: Surface seen more obliquely than this counts as unseen.
MAX_VIEW_ANGLE_DEG = 80.0
#: Hidden by at most this much (mm) of surface in front of it, a vertex counts as seen: in a crease (the
#: nostrils behind the nose tip, the lip corners) that surface is its own neighbourhood, whose texels are
#: the right colour for it; a deep occluder (the nose in front of the far cheek) is 14 mm or more in front.
DEPTH_TOLERANCE_MM = 6.0
#: Grazing surface farther than this (mm at the face's distance) from the face's outline and openings is seen.
INTERIOR_MM = 8.0
#: Hidden behind surface at least this far (mm) in front of it, a vertex marks an occlusion silhouette ...
OCCLUSION_GAP_MM = 10.0
#: ... and visible vertices within this distance (mm) of it count as unseen.
OCCLUSION_MARGIN_MM = 8.0
#: Longest side of the z-buffer (the face's bounding box is rasterised at this size or less).
ZBUFFER_SIZE = 256


def visible_vertices(
    vertices: ArrayLike,
    faces: ArrayLike,
    camera_matrix: ArrayLike,
    max_angle_deg: float = MAX_VIEW_ANGLE_DEG,
    depth_tolerance_mm: float = DEPTH_TOLERANCE_MM,
    zbuffer_size: int = ZBUFFER_SIZE,
    gap_mm: float = OCCLUSION_GAP_MM,
    margin_mm: float = OCCLUSION_MARGIN_MM,
    interior_mm: float = INTERIOR_MM,
) -> NDArray[np.bool_]:
    """Boolean (V,): seen by the pinhole camera ``camera_matrix`` at the origin, looking along +z."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    K = np.asarray(camera_matrix, dtype=np.float64)
    z = v[:, 2]
    if np.any(z <= 0):
        raise ValueError("mesh reaches behind the camera")
    px = np.c_[K[0, 0] * v[:, 0] / z + K[0, 2], K[1, 1] * v[:, 1] / z + K[1, 2]]

    # facing and grazing
    n = vertex_normals(v, f)
    ray = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos_view = -np.einsum("ij,ij->i", n, ray)
    facing = cos_view > np.cos(np.radians(max_angle_deg))

    fn = face_normals(v, f)
    front = np.einsum("ij,ij->i", fn, v[f].mean(axis=1)) < 0.0

    # z-buffer of front triangles over the mesh's bounding box
    lo = px.min(axis=0) - 2.0
    span = float(max(np.ptp(px[:, 0]), np.ptp(px[:, 1]))) + 4.0
    s = min(1.0, zbuffer_size / span)
    q = (px - lo) * s
    size = (int(np.ceil(q[:, 1].max())) + 2, int(np.ceil(q[:, 0].max())) + 2)
    ids = np.full(size, -1, dtype=np.int32)
    tri = np.flatnonzero(front)
    order = tri[np.argsort(-v[f[tri]].mean(axis=1)[:, 2])]  # far to near
    fixed = np.round(q * 16.0).astype(np.int32)  # 4 bits of sub-pixel precision
    for t in order:
        cv2.fillConvexPoly(ids, fixed[f[t]], int(t), lineType=cv2.LINE_8, shift=4)

    iq = np.clip(np.round(q).astype(np.int64), 0, np.array([size[1] - 1, size[0] - 1]))
    hit = ids[iq[:, 1], iq[:, 0]]
    r = max(1, int(np.ceil(interior_mm * K[0, 0] / float(np.median(z)) * s)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    near_outside = cv2.dilate((ids < 0).astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    interior = near_outside[iq[:, 1], iq[:, 0]] == 0
    facing |= interior & (cos_view > 0.0)
    visible = np.zeros(len(v), dtype=bool)
    none = hit < 0
    visible[none] = True  # on the silhouette, outside every painted pixel
    has = ~none
    vid = np.flatnonzero(has)
    t = hit[has]
    own = np.any(f[t] == vid[:, None], axis=1)
    # depth of triangle t's plane along the ray through vertex vid
    a = v[f[t, 0]]
    nrm = fn[t]
    denom = np.einsum("ij,ij->i", nrm, ray[vid])
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.einsum("ij,ij->i", nrm, a) / denom  # distance along the unit ray
    r_len = np.linalg.norm(v[vid], axis=1)
    in_front_ok = ~np.isfinite(dist) | (dist >= r_len - depth_tolerance_mm)
    visible[vid] = own | in_front_ok
    visible &= facing
    # Margin beside occlusion silhouettes with a large depth gap.
    gap = np.where(own | ~np.isfinite(dist), 0.0, r_len - dist)
    deep = np.zeros(len(v), dtype=bool)
    deep[vid] = facing[vid] & ~visible[vid] & (gap >= gap_mm)
    if deep.any():
        d, _ = cKDTree(v[deep]).query(v, distance_upper_bound=margin_mm)
        visible &= ~np.isfinite(d)
    return visible
