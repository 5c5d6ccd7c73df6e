"""The texture atlas of one source: its frame unwrapped into the template's UV chart, then completed.

Unwrap
------
Every texel of the chart (:class:`render.uvlayout.UVLayout`) is a barycentric
point of one triangle of the fitted mesh; that 3D point is projected into the
source frame and the frame is sampled there (``cv2.remap``, bilinear). The
pinhole projection is exact per texel (homogeneous coordinates interpolated,
then divided); the lens distortion, a smooth offset of a few pixels, is
interpolated from the vertices' (recon's own projection), which is exact to
well under 0.01 px over a triangle.

How well the source saw a texel
-------------------------------
``usable`` (0..1): its triangle's three vertices are ``record.visible`` (see
:mod:`recon.visibility`: depth test letting shallow creases through, the
grazing limit except well inside the face, a margin beside deep occluders),
its point projects inside the frame, and its interpolated normal is not
turned away from the camera (``cos`` >= ``BACKFACE_COS``, ramped: a crease
such as a nostril whose vertices are plainly seen keeps its own texels). The
usable region is feathered over ``FEATHER_TEXELS`` inside its border, so no
completion meets it at a hard edge.

Completion
----------
Three layers, composited per texel, own over mirror over fill:

1. *own*: the unwrapped texel, with alpha ``usable`` reduced where the
   mirror texel was seen clearly more squarely (cos larger by
   ``MIRROR_MARGIN``) and the own texel obliquely (cos below
   ``MIRROR_BELOW_COS``): both ramps are smooth, so the two sides cross-fade.
2. *mirror*: the texel at the mirror point (the chart's exact left/right map),
   with alpha its own ``usable``, brightness-matched: the low-frequency
   difference own - mirror, measured where both sides were seen squarely (eyes
   excluded) on a grid of ``MATCH_CELL`` texels and spread over the whole atlas
   by push-pull, is added to it, so a face lit from one side shows no seam
   where mirrored and own texture meet (a membrane correction, the low-pass
   part of Poisson blending). An eye the source saw (any usable texel inside
   its enlarged dlib contour) is never
   mirrored (:mod:`render.regions`), nor its surroundings within
   ``EYE_MARGIN_MM``: its iris would contradict the gaze label.
3. *fill*: what neither side saw (under the chin and nose of a face seen from
   above, the sides of the head, the unseen part of a seen eye, and the
   gutters around the chart, so that bilinear sampling at the chart's edge
   does not bleed) is filled by push-pull (pyramid normalized convolution,
   Gortler et al. 1996) of the two layers above: smooth continuations of the
   texture around it, never a flat triangle.

Everything is float32 numpy/OpenCV on a 384 x 384 atlas (``uvlayout.ATLAS_SIZE``) and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.recon.meshops import face_normals, vertex_normals
from nvsynth.recon.record import ReconRecord
from nvsynth.render import skin
from nvsynth.render.regions import eye_distances
from nvsynth.render.uvlayout import UVLayout

#: A texel whose normal is turned from the camera further than this cos is not usable (ramp start) ...
BACKFACE_COS = -0.35
#: ... and fully usable from this cos on.
USABLE_COS = -0.15
#: Own texels seen more obliquely than this cos give way to a clearly better mirror (fully at 0.2 less).
MIRROR_BELOW_COS = 0.45
#: The mirror texel is clearly better when its cos is larger by this much (ramp over 0.2 more).
MIRROR_MARGIN = 0.1
#: The usable region fades out over this many texels inside its border (6 at 512 texels: the same width).
FEATHER_TEXELS = 4.5
#: Grid cell (texels) of the own - mirror brightness match (16 at 512 texels: the same 32 x 32 cells).
MATCH_CELL = 12
#: Own and mirror texels seen at least this squarely (cos) measure the brightness match.
MATCH_COS = 0.4
#: Texels whose point lies closer than this (source pixels) to the outline of the projected mesh are not
#: usable: with a fit error of a pixel or two, they may show the background beside the face.
SILHOUETTE_MARGIN_PX = 3.0
#: The skin test (render.skin) judges blocks of this many half-grid texels along each side ...
SKIN_BLOCK = 4
#: ... and blocks of this many along the border of its background blocks (SKIN_BLOCK is a multiple of it).
SKIN_REFINE = 2
#: Seen eyes are not mirrored within EYE_CLEAR_MM outside their (enlarged) contours, nor, ramped, within
#: EYE_CLEAR_MM + this.
EYE_MARGIN_MM = 2.0
#: The clear band (mm): the half grid's alphas, upsampled, reach one half-grid texel past it (1 mm was enough at
#: 512 texels, not at 384: a seen eye's edge took 0.1 % of its mirror at 45 degrees of yaw).
EYE_CLEAR_MM = 1.5


@dataclass(frozen=True)
class Atlas:
    """The completed texture of one source in its UV layout."""

    texture: NDArray[np.uint8]  # (S, S, 3) BGR
    own: NDArray[np.float32]  # (S, S) alpha of the source's own texels (1 = seen well, 0 = completed)
    mirror: NDArray[np.float32]  # (S, S) share of the mirror layer in the texel
    seen_eyes: tuple[bool, bool]  # eye 36-41, eye 42-47: seen by the source, so never mirrored


@dataclass(frozen=True)
class Unwrapped:
    """The source's own texels in the layout, and what it saw of them."""

    colour: NDArray[np.uint8]  # (S, S, 3) BGR sampled from the frame (gutter: as its nearest chart texel)
    seen: NDArray[np.bool_]  # (S, S) triangle's vertices visible and the point inside the frame
    inner: NDArray[np.bool_]  # (S/2, S/2) the point at least SILHOUETTE_MARGIN_PX inside the projected outline
    cos: NDArray[np.float32]  # (S/2, S/2) cos of the angle between the normal and the line of sight, 0 off the chart
    eyes: NDArray[np.float32]  # (S/2, S/2, 2) signed distance (mm, positive inside) to each eye region


def project_distorted(points: NDArray[np.floating], camera_matrix: NDArray, dist_coeffs: NDArray) -> NDArray:
    """Camera points (..., 3) -> distorted pixels (..., 2) as ``cv2.projectPoints`` (k1 k2 p1 p2 [k3 [k4 k5 k6]]).

    Computed in the points' float type; thin-prism and tilt terms are left to OpenCV.
    """
    p = np.asarray(points)
    K = np.asarray(camera_matrix, dtype=np.float64)
    dc = np.asarray(dist_coeffs, dtype=np.float64).ravel()
    if len(dc) > 8 and np.any(dc[8:] != 0):
        out, _ = cv2.projectPoints(p.reshape(-1, 1, 3).astype(np.float64), np.zeros(3), np.zeros(3), K, dc)
        return out.reshape(*p.shape[:-1], 2).astype(p.dtype)
    k1, k2, p1, p2, k3, k4, k5, k6 = (float(c) for c in np.pad(dc[:8], (0, max(0, 8 - len(dc)))))
    x, y = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
    xx, yy, xy = x * x, y * y, x * y
    r2 = xx + yy
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    if k4 or k5 or k6:
        radial = radial / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + (2 * p1) * xy + p2 * (r2 + 2 * xx)
    yd = y * radial + p1 * (r2 + 2 * yy) + (2 * p2) * xy
    fx, s, cx, fy, cy = (float(c) for c in (K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]))
    return np.stack([fx * xd + s * yd + cx, fy * yd + cy], axis=-1)


def _ramp(x: NDArray, lo: float, hi: float) -> NDArray:
    """Smoothstep from 0 at ``lo`` to 1 at ``hi``."""
    t = np.clip((x - lo) * (1.0 / (hi - lo)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def push_pull(values: NDArray[np.float32], weights: NDArray[np.float32]) -> NDArray[np.float32]:
    """Fill ``values`` (H, W, C) where ``weights`` (H, W, in [0, 1]) is below 1 (pyramid normalized convolution).

    Texels of weight 1 keep their value; the others blend theirs with the
    upsampled estimate of the coarser levels, each a weighted mean of what is
    known around it, so holes get smooth continuations of their surroundings.
    """
    w = np.clip(weights, 0.0, 1.0).astype(np.float32)
    pyramid = [(_channels(values.astype(np.float32) * w[..., None]), w)]
    while min(pyramid[-1][1].shape) > 1:
        v, ww = pyramid[-1]
        pyramid.append((_channels(cv2.pyrDown(v)), cv2.pyrDown(ww)))
    fill = np.zeros_like(pyramid[-1][0])
    for level, (v, ww) in enumerate(reversed(pyramid)):
        mean = v / np.maximum(ww, 1e-12)[..., None]
        # A coarse texel a quarter known is trusted; the finest level keeps the given weights.
        alpha = (ww if level == len(pyramid) - 1 else np.minimum(1.0, 4.0 * ww))[..., None]
        up = fill if level == 0 else _channels(cv2.pyrUp(fill, dstsize=(ww.shape[1], ww.shape[0])))
        fill = alpha * mean + (1.0 - alpha) * up
    return fill


def _channels(a: NDArray[np.float32]) -> NDArray[np.float32]:
    """OpenCV drops a single channel axis: put it back."""
    return a if a.ndim == 3 else a[..., None]


def outward_sign(vertices: NDArray[np.floating], faces: NDArray[np.integer], head_rotation: NDArray) -> float:
    """+1 if the winding's normals point out of the face (towards -z of the head frame), else -1."""
    total = face_normals(vertices, faces).sum(axis=0)
    outward = -np.asarray(head_rotation, dtype=np.float64)[:, 2]
    return 1.0 if float(total @ outward) >= 0 else -1.0


def _vertex_cos(record: ReconRecord) -> NDArray[np.float64]:
    """cos of the angle between each outward vertex normal and its line of sight to the camera."""
    v = np.asarray(record.vertices, dtype=np.float64)
    f = np.asarray(record.faces, dtype=np.int64)
    n = outward_sign(v, f, record.head_rotation) * vertex_normals(v, f)
    return -np.einsum("ij,ij->i", n, v) / np.maximum(np.linalg.norm(v, axis=1), 1e-12)


def _feather(mask: NDArray[np.bool_], chart: NDArray[np.bool_], texels: float) -> NDArray[np.float32]:
    """0 at the border of ``mask`` with texels of the ``chart`` outside it, rising to 1 over ``texels`` inside."""
    keep = (mask | ~chart).astype(np.uint8)  # the chart's own outline is no border
    dist = cv2.distanceTransform(keep, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.where(mask, np.clip((dist - 1.0) * (1.0 / texels), 0.0, 1.0), 0.0).astype(np.float32)


def _outline_distance(
    silhouette: skin.Silhouette, x: NDArray[np.float32], y: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Distance (source pixels) from each texel's point (``x``, ``y``) to the outline of the projected mesh."""
    dist = cv2.distanceTransform(silhouette.mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    x0, y0 = (np.float32(c) for c in silhouette.origin)
    return cv2.remap(dist, x - x0, y - y0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _on_atlas(layout: UVLayout, values: NDArray[np.float32]) -> NDArray[np.float32]:
    """Values of the chart's texels (``layout.texels``) as an atlas: the gutter copies its chart texel, 0 elsewhere."""
    out = np.zeros(layout.size * layout.size, dtype=np.float32)
    out[layout.texels] = values
    out[layout.gutter] = out[layout.gutter_source]
    return out.reshape(layout.size, layout.size)


def unwrap(
    record: ReconRecord, image: NDArray[np.uint8], layout: UVLayout, silhouette: skin.Silhouette | None = None
) -> Unwrapped:
    """The source frame sampled at every texel's surface point, and what the source saw of it.

    ``silhouette``: the record's projected mesh (:class:`render.skin.Silhouette`), made here if not given.
    """
    if not np.array_equal(np.asarray(record.faces), layout.faces) or layout.half is None:
        raise ValueError(f"record {record.source_file}: its mesh is not the topology of the UV layout")
    v = np.asarray(record.vertices, dtype=np.float64)
    # Per texel, one sparse product: the camera point (the pinhole projection is exact) and the lens
    # distortion's offset (smooth: interpolated from the vertices', which recon projected).
    K = np.asarray(record.camera_matrix, dtype=np.float64)
    ideal = v @ K.T
    offset = project_distorted(v, K, record.dist_coeffs) - ideal[:, :2] / ideal[:, 2:3]
    attrs = np.ascontiguousarray(np.concatenate([ideal, offset], axis=1).astype(np.float32).T)
    ix, iy, z, ox, oy = (layout.texel_weights @ a for a in attrs)  # on the chart's texels
    z[z <= 0] = 1.0
    x, y = _on_atlas(layout, ix / z + ox), _on_atlas(layout, iy / z + oy)
    colour = cv2.remap(image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    h, w = image.shape[:2]
    in_frame = cv2.bitwise_and(cv2.inRange(x, 0.0, w - 1.0), cv2.inRange(y, 0.0, h - 1.0)) > 0
    seen_tri = np.append(np.asarray(record.visible, dtype=bool)[layout.faces].all(axis=1), False)
    # The normal's cos and the eye distances are smooth: half resolution.
    smooth = layout.half.interpolate(np.concatenate([_vertex_cos(record)[:, None], eye_distances(record)], axis=1))
    half = layout.half.size
    sil = skin.Silhouette.of(record) if silhouette is None else silhouette
    inner = _outline_distance(sil, *(cv2.resize(c, (half, half), interpolation=cv2.INTER_AREA) for c in (x, y)))
    return Unwrapped(
        colour, seen_tri[layout.triangle] & in_frame, inner >= SILHOUETTE_MARGIN_PX, smooth[..., 0], smooth[..., 1:3]
    )


def build_atlas(
    record: ReconRecord, image: NDArray[np.uint8], layout: UVLayout, judge: NDArray[np.uint8] | None = None
) -> Atlas:
    """Unwrap the source frame into ``layout`` and complete what it did not see (module docstring).

    The colours are full resolution; the layers' alphas, the brightness match
    and the fill are smooth and computed on the half-resolution grid.
    ``judge``: the frame whose colours decide which texels show the background
    (:mod:`render.skin`); ``image`` itself by default (a benchmark textures with
    another image of the same frame, e.g. the true head's coverage, and passes the source).
    """
    silhouette = skin.Silhouette.of(record)
    own = unwrap(record, image, layout, silhouette)
    assert layout.half is not None
    S, H = layout.size, layout.half.size
    cos = own.cos
    seen = own.seen[: 2 * H, : 2 * H]
    seen_h = seen[0::2, 0::2] & seen[1::2, 0::2] & seen[0::2, 1::2] & seen[1::2, 1::2] & own.inner  # all four seen
    colour8 = cv2.resize(own.colour, (H, H), interpolation=cv2.INTER_AREA)
    colour = colour8.astype(np.float32)
    # Own texels whose colour is the scene beside the face (a fitted outline wider than the face) are unseen.
    judged = (
        colour8
        if judge is None
        else cv2.resize(unwrap(record, judge, layout, silhouette).colour, (H, H), interpolation=cv2.INTER_AREA)
    )
    interior = layout.half.interpolate(skin.interior_distance(record)[:, None])[..., 0]
    # judged on blocks of the half grid (a block is tested where any of its texels is; all of them follow it):
    # coarse SKIN_BLOCK blocks, then SKIN_REFINE blocks along the border of what the coarse pass judged
    # background (a coarse block half scene, half face has the colour of neither)
    tested = seen_h & (cos > BACKFACE_COS)
    ring = skin.ring_colours(record, image if judge is None else judge, silhouette)

    def blocks(b: int) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.float32]]:
        q = H // b
        return (cv2.resize(judged, (q, q), interpolation=cv2.INTER_AREA),
                tested[: b * q, : b * q].reshape(q, b, q, b).any(axis=(1, 3)),
                cv2.resize(interior, (q, q), interpolation=cv2.INTER_AREA))  # fmt: skip

    coarse = blocks(SKIN_BLOCK)
    test = skin.SkinTest.of(*coarse, ring)  # face samples from the coarse blocks
    bg_c = test.background(*coarse)
    bg = np.zeros_like(seen_h)
    if bg_c.any():
        # coarse background blocks whose eight neighbours are background too stay so; the border between
        # the two classes (one coarse block on either side) is judged again on the fine blocks
        ring8 = np.ones((3, 3), np.uint8)
        inner = cv2.erode(bg_c.astype(np.uint8), ring8, borderType=cv2.BORDER_REPLICATE) > 0
        border = (cv2.dilate(bg_c.astype(np.uint8), ring8) > 0) & ~inner
        k, f = SKIN_BLOCK // SKIN_REFINE, SKIN_REFINE
        fine_colour, fine_tested, fine_interior = blocks(f)
        fine_tested &= np.repeat(np.repeat(border, k, axis=0), k, axis=1)
        bg_f = test.background(fine_colour, fine_tested, fine_interior) | np.repeat(np.repeat(inner, k, 0), k, 1)
        q = H // f
        bg[: f * q, : f * q] = np.repeat(np.repeat(bg_f, f, axis=0), f, axis=1)
    seen_h &= ~bg
    usable = _feather(seen_h & (cos > BACKFACE_COS), layout.half.inside, FEATHER_TEXELS / 2)
    usable *= _ramp(cos, BACKFACE_COS, USABLE_COS)
    # The mirror layer, by normalized interpolation (texels off the chart carry no weight).
    pre = np.dstack([colour * usable[..., None], usable, cos * usable])
    mir = cv2.remap(pre, layout.half.mirror_xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    m_usable = mir[..., 3]
    m_colour = mir[..., :3] / np.maximum(m_usable, 1e-6)[..., None]
    m_cos = mir[..., 4] / np.maximum(m_usable, 1e-6)
    # Eyes the source saw are never mirrored (nor their surroundings within EYE_MARGIN_MM, ramped).
    seen_eyes = (bool(np.any(usable[own.eyes[..., 0] > 0] > 0)), bool(np.any(usable[own.eyes[..., 1] > 0] > 0)))
    for k in range(2):
        if seen_eyes[k]:
            m_usable = m_usable * (1.0 - _ramp(own.eyes[..., k], -EYE_MARGIN_MM - EYE_CLEAR_MM, -EYE_CLEAR_MM))
    # Brightness match of the mirror layer: the low-frequency own - mirror where both were seen squarely.
    eye_any = _ramp(np.maximum(own.eyes[..., 0], own.eyes[..., 1]), -EYE_MARGIN_MM, 0.0)
    w_match = usable * m_usable * (1.0 - eye_any) * (cos >= MATCH_COS) * (m_cos >= MATCH_COS)
    match = _low_frequency(colour - m_colour, w_match.astype(np.float32), H)
    # Own over mirror: an own texel gives way where it is oblique and its mirror clearly better.
    better = _ramp(m_cos - cos, MIRROR_MARGIN, MIRROR_MARGIN + 0.2) * (
        1.0 - _ramp(cos, MIRROR_BELOW_COS - 0.2, MIRROR_BELOW_COS)
    )
    a_own = usable * (1.0 - better * m_usable)
    a_mir = (1.0 - a_own) * m_usable
    weight = a_own + a_mir
    known = a_own[..., None] * colour + a_mir[..., None] * (m_colour + _resize(match, H))
    fill = push_pull(known / np.maximum(weight, 1e-6)[..., None], weight)
    # Full resolution: own texels (never where the source did not see them) over brightness-matched
    # mirrored ones, over the fill.
    a_own_f = _resize(a_own, S) * own.seen
    a_mir_f = _resize(a_mir, S)
    mirrored = cv2.remap(own.colour, layout.mirror_xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mirrored = cv2.add(mirrored, _resize(match, S), dtype=cv2.CV_8U)
    layers = cv2.blendLinear(own.colour, mirrored, a_own_f, a_mir_f)
    fill_f = cv2.convertScaleAbs(_resize(fill, S))
    texture = cv2.blendLinear(layers, fill_f, a_own_f + a_mir_f, 1.0 - a_own_f - a_mir_f)
    return Atlas(texture=texture, own=a_own_f, mirror=a_mir_f, seen_eyes=seen_eyes)


def _resize(a: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Bilinear upsampling to ``size`` x ``size`` (pixel centres aligned), channels kept."""
    out = cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)
    return out if out.ndim == a.ndim else out[..., None]


def _low_frequency(diff: NDArray[np.float32], weight: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """The weighted mean of ``diff`` over cells of MATCH_CELL texels (full resolution), filled by push-pull."""
    cells = max(1, 2 * size // MATCH_CELL)
    num = cv2.resize(diff * weight[..., None], (cells, cells), interpolation=cv2.INTER_AREA)
    den = cv2.resize(weight, (cells, cells), interpolation=cv2.INTER_AREA)
    coarse = push_pull(num / np.maximum(den, 1e-6)[..., None], np.minimum(4.0 * den, 1.0))
    return cv2.GaussianBlur(coarse, (0, 0), 1.0)
