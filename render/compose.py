"""Finishing rendered views: background, darkening, and the reduction from the render size to 224.

Per view, at the render size (``render.render_size``: 320 by default, 448 for
the 2 x 2 supersampling of the ETH-XGaze convention): the face is multiplied by
the view's darkening factor (``darken_background`` applies it to the background
too), pasted over the background where the render's alpha is set, and the
result is reduced to 224 (:func:`reduction`: ``cv2.INTER_AREA`` at 448,
bilinear at 320). The face mask is reduced the same way and kept where at
least half of the pixel's weight is face (at 448: two of its four render
pixels), 0/255.

Two routes give the same pictures:

* :func:`finish_views` composites a :class:`~render.compositing.RenderBatch`
  (:meth:`~render.renderer.FaceRenderer.render`) on the CPU;
* the pipeline's route composites in the renderer's pass:
  :func:`backdrops` describes each view's background and darkening,
  :meth:`~render.renderer.FaceRenderer.render_composited` draws the face over it
  (:class:`~render.compositing.BackdropTarget`),
  and :func:`finish_composited` only area-resizes and splits the result.
  The face is darkened before its colour is rounded to 8 bits (one rounding
  instead of two), so darkened faces may differ by one grey level.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.core.geometry import NORM_PATCH_SIZE
from nvsynth.render.appearance import AppearanceParams
from nvsynth.render.backgrounds import BackgroundSource
from nvsynth.render.compositing import Backdrop, RenderBatch


def background_for(
    params: AppearanceParams, backgrounds: BackgroundSource, size: int, rng: np.random.Generator | None = None
) -> NDArray[np.uint8]:
    """The (size, size, 3) BGR background of one view."""
    if params.background_kind == "image":
        bg = backgrounds.image(params.background_id, rng)
        if bg.shape[:2] != (size, size):
            bg = cv2.resize(bg, (size, size), interpolation=cv2.INTER_AREA)
        return bg
    if params.background_kind == "color":
        row = np.empty((1, size, 3), dtype=np.uint8)
        row[:] = np.asarray(params.background_color, dtype=np.uint8)
        return np.ascontiguousarray(np.broadcast_to(row, (size, size, 3)))  # ~60x faster than np.full here
    return np.zeros((size, size, 3), dtype=np.uint8)


def composite(
    bgra: NDArray[np.uint8], background: NDArray[np.uint8], darkening: float, darken_background: bool
) -> NDArray[np.uint8]:
    """One view at render size: the darkened face over ``background`` (modified in place and returned)."""
    face = cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR)
    alpha = cv2.extractChannel(bgra, 3)
    dark = darkening != 1.0
    if dark and not darken_background:
        face = cv2.convertScaleAbs(face, alpha=darkening)
    cv2.copyTo(face, alpha, background)
    if dark and darken_background:
        background = cv2.convertScaleAbs(background, alpha=darkening)
    return background


def finish_views(
    batch: RenderBatch,
    params: Sequence[AppearanceParams],
    backgrounds: BackgroundSource,
    rngs: Sequence[np.random.Generator] | None = None,
    out_size: int = NORM_PATCH_SIZE,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Patches (B, 224, 224, 3) BGR and face masks (B, 224, 224) 0/255 of a rendered batch."""
    n = len(batch)
    if len(params) != n or (rngs is not None and len(rngs) != n):
        raise ValueError(f"{n} views but {len(params)} appearance parameters / {len(rngs or params)} generators")
    size = batch.color.shape[1]
    bgra = batch.bgra
    patches = np.empty((n, out_size, out_size, 3), dtype=np.uint8)
    masks = np.empty((n, out_size, out_size), dtype=np.uint8)
    interpolation = reduction(size, out_size)
    for b, p in enumerate(params):
        bg = background_for(p, backgrounds, size, None if rngs is None else rngs[b])
        full = composite(bgra[b], bg, p.darkening, p.darken_background)
        patches[b] = cv2.resize(full, (out_size, out_size), interpolation=interpolation)
        m = cv2.resize(np.ascontiguousarray(batch.mask[b]), (out_size, out_size), interpolation=interpolation)
        masks[b] = cv2.threshold(m, 127, 255, cv2.THRESH_BINARY)[1]
    return patches, masks


def backdrop_for(params: AppearanceParams, backgrounds: BackgroundSource, size: int) -> Backdrop:
    """The :class:`~render.compositing.Backdrop` of one view: its background (darkened if asked) and face darkening."""
    dark = float(params.darkening)
    if params.background_kind == "image":
        image = background_for(params, backgrounds, size)
        if dark != 1.0 and params.darken_background:
            image = cv2.convertScaleAbs(image, alpha=dark)
        return Backdrop(image=image, darkening=dark)
    color = np.zeros(3, dtype=np.float64)
    if params.background_kind == "color":
        color = np.asarray(params.background_color, dtype=np.float64)
        if dark != 1.0 and params.darken_background:
            color = cv2.convertScaleAbs(color.reshape(1, 1, 3), alpha=dark).reshape(3).astype(np.float64)
    b, g, r = (int(v) for v in color)
    return Backdrop(color=(b, g, r), darkening=dark)


def backdrops(params: Sequence[AppearanceParams], backgrounds: BackgroundSource, size: int) -> list[Backdrop]:
    """:func:`backdrop_for` of every view."""
    return [backdrop_for(p, backgrounds, size) for p in params]


def reduction(size: int, out_size: int = NORM_PATCH_SIZE) -> int:
    """The OpenCV interpolation that reduces a ``size`` render to ``out_size``.

    ``INTER_AREA`` at whole ratios (448 -> 224: the mean of 2 x 2) and beyond
    2; between 1 and 2 (the shipped 320 -> 224) bilinear, which there still
    weighs every render pixel (at 1.5: 3/4 and 1/4 along each side, where the
    area filter weighs 2/3 and 1/3) and costs 0.07 ms per view against 0.45-0.7
    for OpenCV's general area path.
    """
    if size % out_size == 0 or size >= 2 * out_size:
        return cv2.INTER_AREA
    return cv2.INTER_LINEAR


def finish_composited(
    views: NDArray[np.uint8], out_size: int = NORM_PATCH_SIZE
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Patches (B, 224, 224, 3) BGR and masks (B, 224, 224) 0/255 from ``render_composited`` output.

    One resize per view (:func:`reduction`) reduces colour and mask together
    (channel 3 is 255 - mask); a 224 pixel is face when at least half of its
    weight is (at 448: two of its four render pixels), i.e. when the reduced
    complement is at most 128.
    """
    v = np.asarray(views)
    if v.dtype != np.uint8 or v.ndim != 4 or v.shape[3] != 4:
        raise ValueError(f"views must be uint8 (B, S, S, 4), got {v.dtype} {v.shape}")
    n = len(v)
    interpolation = reduction(v.shape[1], out_size)
    patches = np.empty((n, out_size, out_size, 3), dtype=np.uint8)
    masks = np.empty((n, out_size, out_size), dtype=np.uint8)
    small = np.empty((out_size, out_size, 4), dtype=np.uint8)
    for b in range(n):
        cv2.resize(v[b], (out_size, out_size), dst=small, interpolation=interpolation)
        cv2.cvtColor(small, cv2.COLOR_BGRA2BGR, dst=patches[b])
        cv2.threshold(cv2.extractChannel(small, 3), 128, 255, cv2.THRESH_BINARY_INV, dst=masks[b])
    return patches, masks
