"""Finishing rendered views: background, darkening, and the 448 -> 224 area resize.

Per view, at the render size (448): the face is multiplied by the view's
darkening factor (``darken_background`` applies it to the background too),
pasted over the background where the render's alpha is set, and the result
is reduced to 224 with ``cv2.INTER_AREA`` (2 x 2 supersampling, the ETH-XGaze
convention). The face mask is reduced the same way and kept where at least
two of the four render pixels are face (0/255).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.geometry import NORM_PATCH_SIZE
from render.appearance import AppearanceParams
from render.backgrounds import BackgroundSource
from render.gl import RenderBatch


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
    for b, p in enumerate(params):
        bg = background_for(p, backgrounds, size, None if rngs is None else rngs[b])
        full = composite(bgra[b], bg, p.darkening, p.darken_background)
        patches[b] = cv2.resize(full, (out_size, out_size), interpolation=cv2.INTER_AREA)
        m = cv2.resize(np.ascontiguousarray(batch.mask[b]), (out_size, out_size), interpolation=cv2.INTER_AREA)
        masks[b] = cv2.threshold(m, 127, 255, cv2.THRESH_BINARY)[1]
    return patches, masks
