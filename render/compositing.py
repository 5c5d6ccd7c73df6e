"""Render targets: what a view is drawn into, what is in it before the face, and what is read back.

The renderer has one draw loop (:mod:`render.renderer`); a target decides the
rest. Per view it makes (once, pooled) the framebuffer, fills it before the
draw, gives the face darkening and the alpha mode (:mod:`render.shading`), and
reads the finished pixels into its arrays. Two targets:

* :class:`LayerTarget` (:meth:`FaceRenderer.render`): the face alone, as
  layers to composite on the CPU (:func:`render.compose.finish_views`). An
  RGBA8 target cleared to transparent black (colour and alpha = coverage) and
  an RG8 target (face mask, ``seen``), read back as a :class:`RenderBatch`.
* :class:`BackdropTarget` (:meth:`FaceRenderer.render_composited`, what the
  pipeline uses): finished views. Each view's :class:`Backdrop` is put into
  the colour target before the face is drawn -- a background image is written
  into the target texture as it is, a flat colour is the clear colour -- and
  the face's darkening is a shader uniform, so the target holds the finished
  view at render size. Its alpha holds the complement of the face mask
  (0 = face mask, 255 = background or face outside the mask: the background's
  own alpha). One target, one readback of (S, S, 4) per view and no per-pixel
  compositing on the CPU: the CPU only uploads the background and
  area-resizes the result (:func:`render.compose.finish_composited`).

Every view is rendered into its own framebuffer with identical window
coordinates, so a view's pixels do not depend on the batch it is in or its
position in it (a shared atlas would change them by rounding: measured, a few
hundred pixels by one grey level). :class:`FramebufferPool` keeps them across
calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import cv2
import moderngl
import numpy as np
from numpy.typing import NDArray

from nvsynth.render.shading import ALPHA_COVERAGE, ALPHA_NOT_MASK


@dataclass(frozen=True)
class RenderBatch:
    """The raw renders of B views at ``size``; ``color`` and ``alpha`` are views into one BGRA buffer."""

    color: NDArray[np.uint8]  # (B, S, S, 3) BGR
    alpha: NDArray[np.uint8]  # (B, S, S) 0/255 coverage
    mask: NDArray[np.uint8]  # (B, S, S) 0/255 face-mask attribute
    seen: NDArray[np.uint8] | None = None  # (B, S, S) 255 where the texel is the vertex's own

    def __len__(self) -> int:
        return int(self.color.shape[0])

    @property
    def bgra(self) -> NDArray[np.uint8]:
        """(B, S, S, 4) colour with alpha, contiguous (no copy when the batch came from the renderer)."""
        base = self.color.base
        if isinstance(base, np.ndarray) and base.shape == (*self.color.shape[:3], 4) and base.flags.c_contiguous:
            return base
        return np.ascontiguousarray(np.concatenate([self.color, self.alpha[..., None]], axis=-1))


@dataclass(frozen=True)
class Backdrop:
    """What one view is composited over in :meth:`FaceRenderer.render_composited`, and its face darkening.

    ``image`` (S, S, 3) BGR is used as it is (darken it first if the background
    is darkened too); without an image the background is the flat BGR ``color``.
    """

    image: NDArray[np.uint8] | None = None
    color: tuple[int, int, int] = (0, 0, 0)
    darkening: float = 1.0  # multiplies the face colour (1 = none)


class Target(Protocol):
    """Where the views of one renderer call go (see the module docstring)."""

    kind: ClassVar[str]  # framebuffers are pooled per kind
    alpha_mode: ClassVar[float]  # render.shading.ALPHA_*

    @staticmethod
    def new_framebuffer(ctx: moderngl.Context, size: int) -> moderngl.Framebuffer: ...

    def darkening(self, view: int) -> float: ...

    def fill(self, fbo: moderngl.Framebuffer, view: int) -> None:
        """Bind ``fbo`` and put what lies behind the face of ``view`` in it, depth cleared."""

    def read(self, fbo: moderngl.Framebuffer, view: int) -> None:
        """Read ``view``'s finished pixels from ``fbo``."""


class LayerTarget:
    """The face alone: BGRA (alpha = coverage) and the mask / ``seen`` layer, as a :class:`RenderBatch`."""

    kind: ClassVar[str] = "layers"
    alpha_mode: ClassVar[float] = ALPHA_COVERAGE

    def __init__(self, views: int, size: int) -> None:
        self.bgra = np.empty((views, size, size, 4), dtype=np.uint8)
        self.aux = np.empty((views, size, size, 2), dtype=np.uint8)

    @staticmethod
    def new_framebuffer(ctx: moderngl.Context, size: int) -> moderngl.Framebuffer:
        shape = (size, size)
        return ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(shape, 4), ctx.renderbuffer(shape, 2)],
            depth_attachment=ctx.depth_renderbuffer(shape),
        )

    def darkening(self, view: int) -> float:
        return 1.0  # the CPU darkens the face when compositing (render.compose)

    def fill(self, fbo: moderngl.Framebuffer, view: int) -> None:
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)

    def read(self, fbo: moderngl.Framebuffer, view: int) -> None:
        fbo.read_into(self.bgra[view], components=4, attachment=0)
        fbo.read_into(self.aux[view], components=2, attachment=1)

    def batch(self, with_seen: bool) -> RenderBatch:
        return RenderBatch(
            color=self.bgra[..., :3],
            alpha=self.bgra[..., 3],
            mask=self.aux[..., 0],
            seen=self.aux[..., 1] if with_seen else None,
        )


class BackdropTarget:
    """Finished views: each face drawn over its :class:`Backdrop`, alpha = 255 - face mask, into ``out``."""

    kind: ClassVar[str] = "backdrop"
    alpha_mode: ClassVar[float] = ALPHA_NOT_MASK

    def __init__(self, backdrops: Sequence[Backdrop], size: int, out: NDArray[np.uint8] | None = None) -> None:
        n, S = len(backdrops), size
        for bd in backdrops:
            if bd.image is not None:
                img = np.asarray(bd.image)
                if img.shape != (S, S, 3) or img.dtype != np.uint8:
                    raise ValueError(f"backdrop image must be uint8 ({S}, {S}, 3), got {img.dtype} {img.shape}")
        if out is None:
            out = np.empty((n, S, S, 4), dtype=np.uint8)
        elif out.shape != (n, S, S, 4) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous uint8 {(n, S, S, 4)}, got {out.dtype} {out.shape}")
        self.backdrops = list(backdrops)
        self.out = out
        self._staging = np.empty((S, S, 4), dtype=np.uint8)  # a background image with alpha 255

    @staticmethod
    def new_framebuffer(ctx: moderngl.Context, size: int) -> moderngl.Framebuffer:
        shape = (size, size)
        return ctx.framebuffer(
            color_attachments=[ctx.texture(shape, 4)], depth_attachment=ctx.depth_renderbuffer(shape)
        )

    def darkening(self, view: int) -> float:
        return float(self.backdrops[view].darkening)

    def fill(self, fbo: moderngl.Framebuffer, view: int) -> None:
        bd = self.backdrops[view]
        if bd.image is None:
            fbo.use()
            c = np.asarray(bd.color, dtype=np.float64) / 255.0
            fbo.clear(float(c[0]), float(c[1]), float(c[2]), 1.0, depth=1.0)
            return
        cv2.cvtColor(np.asarray(bd.image), cv2.COLOR_BGR2BGRA, dst=self._staging)  # alpha 255: not face
        texture = fbo.color_attachments[0]
        assert isinstance(texture, moderngl.Texture)  # made by new_framebuffer
        texture.write(self._staging)  # before the framebuffer is bound, so Mesa need not wait for pending draws
        fbo.use()
        fbo.color_mask = (False, False, False, False)  # clear the depth only
        fbo.clear(depth=1.0)
        fbo.color_mask = (True, True, True, True)
        fbo.use()  # moderngl applies the colour mask when the framebuffer is bound

    def read(self, fbo: moderngl.Framebuffer, view: int) -> None:
        fbo.read_into(self.out[view], components=4, attachment=0)


class FramebufferPool:
    """Framebuffers of one target kind, made on demand by ``make`` and reused across calls."""

    def __init__(self, make: Callable[[], moderngl.Framebuffer]) -> None:
        self._make = make
        self._fbos: list[moderngl.Framebuffer] = []

    def take(self, count: int) -> list[moderngl.Framebuffer]:
        """The first ``count`` framebuffers, making the missing ones."""
        while len(self._fbos) < count:
            self._fbos.append(self._make())
        return self._fbos[:count]

    def release(self) -> None:
        """Free every framebuffer and its attachments."""
        for fbo in self._fbos:
            for att in (*fbo.color_attachments, fbo.depth_attachment):
                att.release()
            fbo.release()
        self._fbos = []
