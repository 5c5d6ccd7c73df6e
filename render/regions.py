"""Regions of the face drawn by dlib landmarks, measured in the fitted head frame's frontal plane.

A region is a polygon of landmarks in the head frame's (x, y) plane; the
mesh carries, per vertex, its signed distance (mm, positive inside) to the
polygon. Interpolated over the triangles (by the renderer, or over the atlas
texels) and cut at 0, it follows the polygon itself, not the triangle
edges, and it is a fixed region of the face whatever the pose.

* The face mask: the outline of the jaw line 0-16 and the eyebrows 26-17
  (the region of Gaze-NV-Rendering's ``get_mask_index``).
* The eyes: the contours 36-41 and 42-47, scaled by ``EYE_SCALE`` about
  their centres (eyelids included).
"""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolygonPath
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import ibug68
from nvsynth.recon.record import ReconRecord

#: iBUG indices of the face outline (jaw, then the brows back) and of the two eye contours.
FACE_OUTLINE = ibug68.FACE_OUTLINE
EYES = (ibug68.RIGHT_EYE, ibug68.LEFT_EYE)
#: Eye regions: the eye contour scaled by this factor about its centre.
EYE_SCALE = 1.25


def head_frame(record: ReconRecord, points: ArrayLike) -> NDArray[np.float64]:
    """Points from source-camera coordinates into the fitted head frame, R^T (p - t)."""
    R = np.asarray(record.head_rotation, dtype=np.float64)
    t = np.asarray(record.head_translation, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - t) @ R


def signed_distance(points: ArrayLike, polygon: ArrayLike) -> NDArray[np.float64]:
    """Distance (N,) of 2D ``points`` (N, 2) to the closed ``polygon`` (K, 2), positive inside."""
    pts = np.asarray(points, dtype=np.float64)
    poly = np.asarray(polygon, dtype=np.float64)
    ax, ay = poly[:, 0], poly[:, 1]
    abx, aby = np.roll(ax, -1) - ax, np.roll(ay, -1) - ay
    rx, ry = pts[:, 0:1] - ax, pts[:, 1:2] - ay  # (N, K): point relative to each edge's start
    s = np.clip((rx * abx + ry * aby) / np.maximum(abx * abx + aby * aby, 1e-12), 0.0, 1.0)
    dx, dy = rx - s * abx, ry - s * aby
    dist = np.sqrt((dx * dx + dy * dy).min(axis=1))
    return np.where(PolygonPath(poly).contains_points(pts), dist, -dist)


def face_region_distance(record: ReconRecord) -> NDArray[np.float64]:
    """Signed distance (mm, positive inside) of each vertex to the jaw/eyebrow outline."""
    lm = head_frame(record, record.landmarks_3d)[:, :2]
    return signed_distance(head_frame(record, record.vertices)[:, :2], lm[FACE_OUTLINE])


def eye_distances(record: ReconRecord) -> NDArray[np.float64]:
    """(V, 2): signed distance (mm, positive inside) of each vertex to the enlarged contour of each eye."""
    lm = head_frame(record, record.landmarks_3d)[:, :2]
    xy = head_frame(record, record.vertices)[:, :2]
    out = []
    for eye in EYES:
        contour = lm[list(eye)]
        centre = contour.mean(axis=0)
        out.append(signed_distance(xy, centre + EYE_SCALE * (contour - centre)))
    return np.stack(out, axis=1)
