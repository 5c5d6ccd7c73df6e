"""Eye textures: each eyeball's visible iris and sclera unwrapped from the source frame, the rest completed.

Parameterization (per eye, :data:`TEXTURE_SIZE` square, BGR like the source):
the azimuthal equidistant projection of the eyeball about its optical axis,
in the eye's own frame (:mod:`recon.eyeball`: Listing orientation, pole =
iris centre at :data:`recon.eyeball.FORWARD`). Texel (u, v) has the texture
coordinate st = ((u + 0.5) / N, (v + 0.5) / N); with
r = |2 st - 1| and the angle phi of (2 st - 1), its direction on the sphere is
polar angle theta = r * :data:`THETA_MAX` from the pole and azimuth phi
(phi = 0 toward the eye frame's +x, i.e. image-right of an eye looking at the
camera). :func:`direction_texcoords` is the map the renderer uses. Texture
coordinates outside [0, 1] clamp to the border (the back of the eyeball,
never seen through the eye opening, takes the border's sclera).

Unwrapping (:func:`unwrap_eyes`): every texel's sphere point in the source
camera is projected (with lens distortion) into the source frame; it is *seen*
when it faces the camera and falls inside the eye opening of MediaPipe Iris's
eyelid contour, shrunk by :data:`LID_MARGIN` of the eye's width (lashes and the
lid's shadow stay with the lid). Seen texels take the frame's pixel (bilinear).

Completion of the unseen texels:

* **iris** (theta below the measured iris angle, from the iris model's radius
  and the eye's depth): the iris is nearly rotationally symmetric, so each
  unseen texel takes the median colour of the seen texels of its ring (one
  texel wide); rings with fewer than :data:`MIN_RING_TEXELS` seen texels take
  the nearest ring that has them;
* **sclera**: continued from its seen part by push-pull (:func:`push_pull`):
  near the seen sclera its colours, smoothly coarser further away;
* **specular highlights** (the corneal reflection of the light) stay fixed
  relative to the camera and light, not the eye: seen texels of the iris
  region brighter than their ring's median by more than
  max(:data:`HIGHLIGHT_DELTA`, :data:`HIGHLIGHT_MADS` robust sigmas), dilated by
  one texel, are taken out of the eye texture (filled from the iris around them by push-pull)
  and kept as an additive layer, ``highlight`` (what they add above the
  completed iris), that the renderer draws at the highlight's place in the
  *source* eye frame: the highlight stays where it was relative to the head
  while the eye turns under it.

Self-contained (numpy and cv2 only): the textures could later be packed into
a face texture atlas.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.recon.eyeball import EyeballModel, SourceEyes
from nvsynth.recon.eyes import EYELID_POLYGON
from nvsynth.recon.record import ReconRecord

#: Texels per side of one eye's texture: the iris (about 26-30 degrees) spans ~19 texels of radius, as many as
#: the 448 render's pixels (5.9 mm at 300 mm with focal 960) and twice the stored 224 patch's.
TEXTURE_SIZE = 192
#: Polar angle (radians) at the edge of the texture's inscribed disc: 135 degrees covers what an eye turned by
#: up to 45 degrees shows through its opening (the opening's corners lie at about 90 degrees from the axis).
THETA_MAX = np.radians(135.0)
#: The eye opening used for seen texels: the eyelid contour shrunk by this fraction of the eye's width.
LID_MARGIN = 0.05
#: Iris completion: rings with fewer seen texels borrow the nearest ring that has enough.
MIN_RING_TEXELS = 4
#: Seen sclera texels within this many texels of the seen region's edge blend into the continuation.
SCLERA_FEATHER = 6.0
#: Push-pull fill: a coarse level's texel keeps its own colour when at least this share of it is known.
PUSH_PULL_SATURATION = 0.5
#: Highlights: brighter than the ring's median by at least this many grey levels ...
HIGHLIGHT_DELTA = 40.0
#: ... and by this many robust sigmas (1.4826 x the ring's median absolute deviation).
HIGHLIGHT_MADS = 3.0
#: Highlights are looked for up to this multiple of the iris angle (the cornea overlaps the limbus a little).
HIGHLIGHT_REACH = 1.15
#: Measured iris angles are clipped to this range (radians): 20-40 degrees.
IRIS_ANGLE_RANGE = (np.radians(20.0), np.radians(40.0))


@dataclass(frozen=True)
class EyeTextures:
    """Both eyes' textures (index 0: the subject's right eye)."""

    image: NDArray[np.uint8]  # (2, N, N, 3) BGR, completed
    highlight: NDArray[np.uint8]  # (2, N, N, 3) BGR, additive, zero outside highlights
    seen: NDArray[np.bool_]  # (2, N, N) texels the source showed (highlights included)
    iris_angle: NDArray[np.float64]  # (2,) radians, the iris angle used to split iris and sclera


@lru_cache(maxsize=4)
def texel_grid(n: int = TEXTURE_SIZE) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(theta (n, n), directions (n, n, 3)) of every texel in the eye frame (see the module docstring)."""
    st = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    s, t = np.meshgrid(st, st)  # s along u (x), t along v (y)
    r = np.hypot(s, t)
    theta = r * THETA_MAX
    phi = np.arctan2(t, s)
    sin = np.sin(theta)
    dirs = np.stack([sin * np.cos(phi), sin * np.sin(phi), -np.cos(theta)], axis=-1)
    return theta, dirs


def direction_texcoords(directions: ArrayLike) -> NDArray[np.float64]:
    """Texture coordinates st (..., 2) in [0, 1] (inscribed disc) of eye-frame unit directions (..., 3)."""
    w = np.asarray(directions, dtype=np.float64)
    theta = np.arccos(np.clip(-w[..., 2], -1.0, 1.0))
    xy = w[..., :2]
    norm = np.linalg.norm(xy, axis=-1, keepdims=True)
    unit = np.where(norm > 1e-12, xy / np.maximum(norm, 1e-12), 0.0)
    return 0.5 + 0.5 * (theta / THETA_MAX)[..., None] * unit


def measured_iris_angle(record: ReconRecord, eyes: SourceEyes, model: EyeballModel) -> NDArray[np.float64]:
    """(2,) the iris's angular radius on the sphere, from the iris model's points at the limbus's depth.

    The radius in pixels is half the longer of the two diameters the four
    boundary points span (the shorter one is foreshortened when the eye is
    turned from the camera), clipped to :data:`IRIS_ANGLE_RANGE`.
    """
    if record.iris_2d is None:
        return np.full(2, model.iris_angle)
    p = np.asarray(record.iris_2d, dtype=np.float64)
    r_px = 0.5 * np.maximum(np.linalg.norm(p[:, 1] - p[:, 3], axis=1), np.linalg.norm(p[:, 2] - p[:, 4], axis=1))
    f = float(np.sqrt(abs(np.linalg.det(np.asarray(record.camera_matrix)[:2, :2]))))
    limbus = eyes.centres + model.iris_depth_mm * eyes.optical
    r_mm = r_px * limbus[:, 2] / f
    angle = np.arcsin(np.clip(r_mm / model.radius_mm, 0.0, 1.0))
    return np.clip(angle, *IRIS_ANGLE_RANGE)


def eye_opening(contour: ArrayLike) -> NDArray[np.float64]:
    """The eye opening of one eye (16, 2), source pixels: its eyelid contour (first 16 of the 71 points,
    :data:`recon.eyes.EYELID_VERTICES` order) moved inward by :data:`LID_MARGIN` of the eye's width.

    Each point moves along the inward bisector of its two polygon edges (the lashes and the lid's shadow stay
    outside). The renderer's eye opening (:mod:`render.eyes`) and the seen texels use this same outline.
    """
    c = np.asarray(contour, dtype=np.float64)[:16]
    margin = LID_MARGIN * float(np.linalg.norm(c[8] - c[0]))
    poly = c[EYELID_POLYGON]
    centroid = poly.mean(axis=0)
    prev, nxt = np.roll(poly, 1, axis=0), np.roll(poly, -1, axis=0)
    normals = []
    for a, b in ((prev, poly), (poly, nxt)):
        e = b - a
        n = np.c_[-e[:, 1], e[:, 0]] / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)
        normals.append(n)
    n = normals[0] + normals[1]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    n *= np.sign(np.einsum("ij,ij->i", n, centroid - poly))[:, None]  # inward
    out = np.empty_like(c)
    out[EYELID_POLYGON] = poly + margin * n
    return out


def _opening_mask(contour: NDArray[np.float64], px: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which points ``px`` (..., 2) lie inside the eye opening (:func:`eye_opening`) of one eye."""
    poly = eye_opening(contour)[EYELID_POLYGON]
    lo = np.floor(poly.min(axis=0)) - 2
    scale = 4.0  # rasterise at 1/4 pixel
    size = np.ceil((poly.max(axis=0) - lo + 2) * scale).astype(int) + 1
    mask = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillPoly(mask, [np.round((poly - lo) * scale).astype(np.int32)], 1)
    ij = np.round((px - lo) * scale).astype(np.int64)
    inside = (ij >= 0).all(axis=-1) & (ij[..., 0] < size[0]) & (ij[..., 1] < size[1])
    ij = np.where(inside[..., None], ij, 0)
    return inside & (mask[ij[..., 1], ij[..., 0]] > 0)


def project_distorted(camera_matrix: ArrayLike, dist_coeffs: ArrayLike, points: ArrayLike) -> NDArray[np.float64]:
    """Camera points (..., 3) to distorted pixels (..., 2): OpenCV's model (k1, k2, p1, p2[, k3]) in numpy.

    The same numbers as ``cv2.projectPoints`` (checked in the tests), many times faster
    on a texture's worth of points; longer coefficient vectors go to OpenCV.
    """
    K = np.asarray(camera_matrix, dtype=np.float64)
    d = np.asarray(dist_coeffs, dtype=np.float64).ravel()
    p = np.asarray(points, dtype=np.float64)
    if len(d) > 5 and np.any(d[5:] != 0):
        px, _ = cv2.projectPoints(p.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, d)
        return px.reshape(*p.shape[:-1], 2)
    k1, k2, p1, p2, k3 = np.r_[d[:5], np.zeros(max(0, 5 - len(d)))]
    x, y = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], axis=-1)


def group_median(values: NDArray[np.floating], groups: NDArray[np.int64]) -> tuple[NDArray, NDArray, NDArray]:
    """Per group of ``groups`` (1-D ints): (group ids, counts, median of ``values`` (1-D)) in one sort."""
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    ids, start, count = np.unique(g, return_index=True, return_counts=True)
    med = 0.5 * (v[start + (count - 1) // 2] + v[start + count // 2])
    return ids, count, med


def _ring_fill(img: NDArray[np.float64], known: NDArray[np.bool_], ring: NDArray[np.int64],
               region: NDArray[np.bool_]) -> NDArray[np.float64]:  # fmt: skip
    """Per ring of ``region``: unknown texels take the median of the ring's known ones (nearest ring if too few)."""
    out = img.copy()
    idx = np.flatnonzero(region)
    if not len(idx):
        return out
    flat, ok, rings = img.reshape(-1, 3)[idx], known.reshape(-1)[idx], ring.reshape(-1)[idx]
    if not ok.any():
        return out
    per = [group_median(flat[ok, ch], rings[ok]) for ch in range(3)]
    ids, count = per[0][0], per[0][1]
    have = count >= MIN_RING_TEXELS
    if not have.any():
        return out
    med = np.stack([p[2] for p in per], axis=1)[have]  # (R, 3) per ring with enough seen texels
    ids = ids[have]
    todo = ~ok
    nearest = np.argmin(np.abs(rings[todo][:, None] - ids[None, :]), axis=1)
    out.reshape(-1, 3)[idx[todo]] = med[nearest]
    return out


def push_pull(img: NDArray[np.floating], weight: NDArray[np.floating]) -> NDArray[np.float32]:
    """Scattered-data fill by push-pull (Gortler et al., "The Lumigraph", SIGGRAPH 1996): every texel's colour
    continued from the known texels (``weight`` 1) nearby, smoothly, coarser where they are far.

    Push: area-halve the weighted colours and weights down to one texel. Pull:
    from the coarsest level up, each level keeps its own colour where its weight
    is saturated (>= :data:`PUSH_PULL_SATURATION`) and blends towards the enlarged
    coarser estimate where it is not.
    """
    c = (np.asarray(img, dtype=np.float32) * np.asarray(weight, dtype=np.float32)[..., None]).astype(np.float32)
    w = np.asarray(weight, dtype=np.float32)
    levels = []
    while min(w.shape) > 1:
        levels.append((c, w))
        half = (max(1, w.shape[1] // 2), max(1, w.shape[0] // 2))
        c = cv2.resize(c, half, interpolation=cv2.INTER_AREA)
        w = cv2.resize(w, half, interpolation=cv2.INTER_AREA)
    est = c / np.maximum(w, 1e-12)[..., None]
    for c, w in reversed(levels):
        up = cv2.resize(est, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        alpha = np.clip(w / PUSH_PULL_SATURATION, 0.0, 1.0)[..., None]
        est = alpha * (c / np.maximum(w, 1e-12)[..., None]) + (1.0 - alpha) * up
    return est


def _fill(img: NDArray[np.float64], known: NDArray[np.bool_], todo: NDArray[np.bool_]) -> NDArray[np.float64]:
    """``img`` with the texels ``todo`` replaced by the push-pull continuation of the ``known`` ones."""
    out = img.copy()
    if todo.any() and known.any():
        out[todo] = push_pull(img, known.astype(np.float32))[todo]
    return out


Unwrapped = tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.bool_]]


def unwrap_eye(image: NDArray[np.uint8], record: ReconRecord, eyes: SourceEyes, model: EyeballModel,
               eye: int, iris_angle: float) -> Unwrapped:  # fmt: skip
    """(texture, highlight, seen) of one eye (see the module docstring)."""
    n = TEXTURE_SIZE
    theta, dirs = texel_grid(n)
    flat_dirs = dirs.reshape(-1, 3)
    rot, c = eyes.orientation[eye], eyes.centres[eye]
    # a sphere point faces the camera when its normal n meets the ray: n . (c + R n) < 0
    cand = np.flatnonzero(flat_dirs @ (rot.T @ c) + model.radius_mm < 0)
    pts = c + model.radius_mm * flat_dirs[cand] @ rot.T
    px = project_distorted(record.camera_matrix, record.dist_coeffs, pts)
    contour = np.asarray(record.eye_contour_2d, dtype=np.float64)[eye]
    inside = _opening_mask(contour, px)
    seen_idx, px = cand[inside], px[inside].astype(np.float32)
    seen = np.zeros(n * n, dtype=bool)
    seen[seen_idx] = True
    seen = seen.reshape(n, n)
    img = np.zeros((n * n, 3), dtype=np.float32)
    if len(seen_idx):
        sampled = cv2.remap(image, px[:, None, 0], px[:, None, 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        img[seen_idx] = sampled.reshape(-1, 3)
    img = img.reshape(n, n, 3)
    ring = np.floor(theta / THETA_MAX * (n / 2)).astype(np.int64)
    iris = theta < iris_angle
    # highlights: much brighter than their ring, in the iris region (and just beyond: the cornea)
    spec = np.zeros(n * n, dtype=bool)
    idx = seen_idx[theta.reshape(-1)[seen_idx] < HIGHLIGHT_REACH * iris_angle]
    grey = img.reshape(-1, 3)[idx] @ np.array([0.114, 0.587, 0.299])
    if len(idx):
        rings = ring.reshape(-1)[idx]
        ids, _count, med = group_median(grey, rings)
        at = np.searchsorted(ids, rings)
        _ids, _c, mad = group_median(np.abs(grey - med[at]), rings)
        spec[idx] = grey > med[at] + np.maximum(HIGHLIGHT_DELTA, HIGHLIGHT_MADS * 1.4826 * mad[at])
    spec = spec.reshape(n, n)
    if spec.any():
        spec = cv2.dilate(spec.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & seen
    known = seen & ~spec
    # the iris: highlights from their neighbours (within the iris's box), what the lids hid from its rings
    filled = img.copy()
    if spec.any():
        h = min(n // 2, int(np.ceil(HIGHLIGHT_REACH * iris_angle / THETA_MAX * n / 2)) + 2)
        box = np.s_[n // 2 - h : n // 2 + h, n // 2 - h : n // 2 + h]
        filled[box] = _fill(img[box], (known & iris)[box], (spec & iris)[box])
    filled = _ring_fill(filled, known | (spec & iris), ring, iris)
    # the sclera: continued from its seen interior by push-pull, the seen edge feathered into it (no line
    # where the lids were)
    sclera = known & ~iris
    if sclera.any():
        inside = cv2.distanceTransform(np.pad(sclera, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        core = sclera & (inside >= SCLERA_FEATHER)
        smooth = push_pull(img, (core if core.any() else sclera).astype(np.float32))
        alpha = np.clip(inside / SCLERA_FEATHER, 0.0, 1.0)[..., None]
        filled = np.where(sclera[..., None], alpha * filled + (1.0 - alpha) * smooth, filled)
        filled = np.where((~iris & ~known)[..., None], smooth, filled)
    highlight = np.where(spec[..., None], np.clip(img - filled, 0, 255), 0.0)
    return (np.clip(np.round(filled), 0, 255).astype(np.uint8), np.round(highlight).astype(np.uint8), seen)


def unwrap_eyes(image: NDArray[np.uint8], record: ReconRecord, eyes: SourceEyes, model: EyeballModel) -> EyeTextures:
    """Both eyes' textures from the source frame ``image`` (BGR)."""
    angles = measured_iris_angle(record, eyes, model)
    parts = [unwrap_eye(image, record, eyes, model, e, float(angles[e])) for e in range(2)]
    return EyeTextures(
        image=np.stack([p[0] for p in parts]),
        highlight=np.stack([p[1] for p in parts]),
        seen=np.stack([p[2] for p in parts]),
        iris_angle=angles,
    )
