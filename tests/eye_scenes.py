"""Eyes with known geometry for the gaze tests and benchmark: closed lids, synthetic irises."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def closed_contour(contour: ArrayLike, eye: int) -> NDArray[np.float32]:
    """The eye contour (2, 71, 2) with ``eye``'s upper lid (points 9-15) lowered onto its lower lid (1-7): a blink."""
    c = np.array(contour, dtype=np.float32)
    c[eye, 9:16] = c[eye, 1:8] + np.array([0.0, -0.3], dtype=np.float32)
    return c


def procedural_eye(theta: NDArray[np.float64], phi: NDArray[np.float64], iris_angle: float) -> NDArray[np.float64]:
    """A known eye texture (BGR float) by polar angle from the pole and azimuth: black pupil, brown iris with a
    darker limbal ring (a function of theta only), sclera whose shade varies with the azimuth."""
    out = np.empty((*np.shape(theta), 3))
    sclera = np.array([205.0, 215.0, 228.0])
    out[:] = sclera * (0.9 + 0.1 * np.cos(phi))[..., None]
    iris = theta < iris_angle
    out[iris] = (np.array([40.0, 75.0, 120.0]) * (1.0 - 0.4 * (theta / iris_angle) ** 4)[..., None])[iris]
    out[theta < 0.4 * iris_angle] = (15.0, 15.0, 18.0)
    return out


def paint_eyes(image: NDArray[np.uint8], record, model, orientation: NDArray[np.float64],
               highlight_px: NDArray[np.float64] | None = None) -> NDArray[np.uint8]:  # fmt: skip
    """``image`` with both eyes replaced by spheres of ``model`` at ``orientation`` (2, 3, 3, eye frame -> camera)
    carrying :func:`procedural_eye`, ray-cast inside MediaPipe Iris's eyelid polygon of ``record``; optionally a
    white 3x3 specular highlight at the pixels ``highlight_px`` (2, 2)."""
    import cv2
    from matplotlib.path import Path as PolygonPath

    from nvsynth.recon.eyeball import eye_centres
    from nvsynth.recon.eyes import EYELID_POLYGON

    out = image.copy()
    K = np.asarray(record.camera_matrix, dtype=np.float64)
    d = np.asarray(record.dist_coeffs, dtype=np.float64).ravel()
    centres = eye_centres(record.vertices, record.head_rotation, model.offset_mm)
    for e in range(2):
        poly = np.asarray(record.eye_contour_2d, dtype=np.float64)[e, :16][EYELID_POLYGON]
        lo, hi = np.floor(poly.min(0)).astype(int), np.ceil(poly.max(0)).astype(int)
        ys, xs = np.mgrid[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
        px = np.c_[xs.ravel(), ys.ravel()].astype(np.float64)
        px = px[PolygonPath(poly).contains_points(px)]
        rays = np.c_[cv2.undistortPoints(px.reshape(-1, 1, 2), K, d).reshape(-1, 2), np.ones(len(px))]
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        c = centres[e]
        b = rays @ c
        disc = b * b - (c @ c - model.radius_mm**2)
        ok = disc >= 0
        pts = rays[ok] * (b[ok] - np.sqrt(disc[ok]))[:, None]
        w = (pts - c) @ orientation[e] / model.radius_mm  # eye frame
        theta = np.arccos(np.clip(-w[:, 2], -1, 1))
        phi = np.arctan2(w[:, 1], w[:, 0])
        colour = procedural_eye(theta, phi, model.iris_angle)
        ij = px[ok].astype(int)
        out[ij[:, 1], ij[:, 0]] = np.clip(colour, 0, 255).astype(np.uint8)
        if highlight_px is not None:
            x, y = np.round(highlight_px[e]).astype(int)
            out[y - 1 : y + 2, x - 1 : x + 2] = 255
    return out


def with_known_eyes(record, image: NDArray[np.uint8], model, gaze_pitchyaw_deg: tuple[float, float] = (0.0, 0.0),
                    highlight: bool = False):  # fmt: skip
    """(record, image) of a frame whose eyes are a known eyeball (``model``) looking ``gaze_pitchyaw_deg`` from the
    fitted face's forward direction (head frame): the image painted by :func:`paint_eyes`, the record's iris points
    those of the painted irises (centre and the four boundary points of the limbus), the truth orientations."""
    import dataclasses

    from nvsynth.core import geometry
    from nvsynth.recon.eyeball import FORWARD, eye_centres, listing_rotation
    from nvsynth.render.eye_texture import project_distorted

    R = np.asarray(record.head_rotation, dtype=np.float64)
    d = geometry.vector_from_pitchyaw(np.radians(gaze_pitchyaw_deg))
    orient = np.stack([R @ listing_rotation(d)] * 2)
    centres = eye_centres(record.vertices, R, model.offset_mm)
    iris = np.empty((2, 5, 2))
    for e in range(2):
        axis = orient[e] @ FORWARD
        limbus = centres[e] + model.iris_depth_mm * axis
        ex, ey = orient[e][:, 0], orient[e][:, 1]
        ring = [limbus + model.iris_radius_mm * v for v in (ex, -ey, -ex, ey)]  # right, top, left, bottom
        pts = np.stack([limbus, *ring])
        iris[e] = project_distorted(record.camera_matrix, record.dist_coeffs, pts)
    radius = np.linalg.norm(iris[:, 1:] - iris[:, :1], axis=2).mean(axis=1)
    spec = iris[:, 0] + radius[:, None] * np.array([-0.65, -0.2]) if highlight else None  # on the iris
    painted = paint_eyes(image, record, model, orient, spec)
    rec = dataclasses.replace(record, iris_2d=iris.astype(np.float32), iris_radius_px=radius.astype(np.float32))
    return rec, painted, orient
