"""The face renderer: a camera, a shader and a render target around one draw loop.

Like PyTorch3D's ``MeshRenderer(rasterizer, shader)``, :class:`FaceRenderer`
only composes pieces, each in its own module:

* :mod:`render.context`: the process's EGL context and its fork guard;
* :mod:`render.camera`: the GL projection of the normalized camera, per-view matrices;
* :mod:`render.upload`: one source's texture crop and mesh on the GL side;
* :mod:`render.shading`: the program, the light and darkening as uniforms;
* :mod:`render.compositing`: the render targets -- what is behind the face, what is read back.

Batching: the B views of one source share one upload of the texture and the
mesh. Each view is one draw call into its own framebuffer (a pool per target
kind, reused across calls) with the view's uniforms; all the views of a round
(at most ``pool``) are drawn before the first readback, so llvmpipe
rasterizes while Python issues the next view. Measured on llvmpipe, this
costs the same CPU time as one instanced draw into an atlas.

GL objects belong to the process that made them: a renderer pickles to its
settings only and makes its program and framebuffers again, lazily, in the
process that next uses it. Nothing of one source outlives its renderer call:
only the context, the program and the framebuffers are reused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import moderngl
import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import geometry
from nvsynth.render.appearance import Light
from nvsynth.render.camera import FAR_MM, NEAR_MM, Camera
from nvsynth.render.compositing import Backdrop, BackdropTarget, FramebufferPool, LayerTarget, RenderBatch, Target
from nvsynth.render.context import get_context
from nvsynth.render.mesh import RenderMesh
from nvsynth.render.shading import Shader
from nvsynth.render.upload import MeshUpload

if TYPE_CHECKING:
    from nvsynth.render.eye_gl import EyeScene, EyeShaders, EyeUpload


@dataclass
class _ProcessObjects:
    """A renderer's GL objects in the process that made them: program and framebuffer pools."""

    pid: int
    ctx: moderngl.Context
    shader: Shader
    pools: dict[str, FramebufferPool] = field(default_factory=dict)
    eye_shaders: EyeShaders | None = None  # made on the first call with redirected eyes

    def pool(self, target: Target, size: int) -> FramebufferPool:
        if target.kind not in self.pools:
            ctx, make = self.ctx, target.new_framebuffer
            self.pools[target.kind] = FramebufferPool(lambda: make(ctx, size))
        return self.pools[target.kind]

    def release(self) -> None:
        for pool in self.pools.values():
            pool.release()
        self.pools = {}
        self.shader.release()
        if self.eye_shaders is not None:
            self.eye_shaders.release()
            self.eye_shaders = None

    def eyes(self) -> EyeShaders:
        """The programs of redirected eyes (:mod:`render.eye_gl`), made on first use."""
        if self.eye_shaders is None:
            from nvsynth.render.eye_gl import EyeShaders

            self.eye_shaders = EyeShaders(self.ctx)
        return self.eye_shaders


def _check_inputs(
    texture_bgr: NDArray[np.uint8], transforms: ArrayLike, lights: Sequence[Light | None] | None
) -> tuple[NDArray[np.uint8], NDArray[np.float64], list[Light | None]]:
    tex_img = np.asarray(texture_bgr)
    if tex_img.dtype != np.uint8 or tex_img.ndim != 3 or tex_img.shape[2] != 3:
        raise ValueError(f"texture must be uint8 (H, W, 3) BGR, got {tex_img.dtype} {tex_img.shape}")
    T = np.asarray(transforms, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise ValueError(f"transforms must be (B, 4, 4), got {T.shape}")
    n = len(T)
    light_list: list[Light | None] = [None] * n if lights is None else list(lights)
    if len(light_list) != n:
        raise ValueError(f"{len(light_list)} lights for {n} views")
    return tex_img, T, light_list


class FaceRenderer:
    """Renders a textured :class:`RenderMesh` under B rigid transforms into the normalized camera.

    ``camera_matrix`` (3x3) replaces the normalized camera at ``size``.
    ``pool`` bounds the number of framebuffers kept per target (one per view
    of a batch); larger batches are rendered in rounds of ``pool`` views.
    """

    def __init__(
        self,
        size: int = geometry.NORM_RENDER_SIZE,
        camera_matrix: ArrayLike | None = None,
        near: float = NEAR_MM,
        far: float = FAR_MM,
        pool: int = 32,
    ) -> None:
        size = int(size)
        K = geometry.normalized_camera_matrix(size) if camera_matrix is None else camera_matrix
        self.camera = Camera(np.asarray(K, dtype=np.float64), size, near, far)
        self.pool = max(1, int(pool))
        self._gl: _ProcessObjects | None = None

    @property
    def size(self) -> int:
        return self.camera.size

    @property
    def camera_matrix(self) -> NDArray[np.float64]:
        return self.camera.camera_matrix

    @property
    def near(self) -> float:
        return self.camera.near

    @property
    def far(self) -> float:
        return self.camera.far

    def __getstate__(self) -> dict[str, object]:
        """Pickle the settings only: GL objects never leave their process."""
        return {**self.__dict__, "_gl": None}

    def _objects(self) -> _ProcessObjects:
        """This process's GL objects, made on first use (after unpickling or a fork: made anew)."""
        pid = os.getpid()
        if self._gl is None or self._gl.pid != pid:
            ctx = get_context()
            self._gl = _ProcessObjects(pid, ctx, Shader(ctx))
        return self._gl

    # -- the two ways to call it, one draw path ------------------------------------------
    def render(
        self,
        texture_bgr: NDArray[np.uint8],
        mesh: RenderMesh,
        transforms: ArrayLike,
        lights: Sequence[Light | None] | None = None,
        with_seen: bool = False,
        eyes: EyeScene | None = None,
    ) -> RenderBatch:
        """Render ``mesh`` textured by ``texture_bgr`` under each of the B ``transforms``.

        ``transforms[b]`` (4x4) maps source-camera mm to normalized-camera mm;
        ``lights[b]`` is that view's light (None = unlit). With ``with_seen``
        the batch also carries the ``seen`` attribute. With ``eyes`` the face is
        ``eyes.rig.face`` with its eyeballs turned to ``eyes.poses[b]`` (:mod:`render.eye_gl`).
        """
        tex_img, T, light_list = _check_inputs(texture_bgr, transforms, lights)
        target = LayerTarget(len(T), self.size)
        self._draw(tex_img, mesh, T, light_list, target, eyes)
        return target.batch(with_seen)

    def render_composited(
        self,
        texture_bgr: NDArray[np.uint8],
        mesh: RenderMesh,
        transforms: ArrayLike,
        lights: Sequence[Light | None] | None,
        backdrops: Sequence[Backdrop],
        out: NDArray[np.uint8] | None = None,
        eyes: EyeScene | None = None,
    ) -> NDArray[np.uint8]:
        """Finished views at render size, composited in the same pass: (B, S, S, 4) uint8.

        Channels 0-2: the view in BGR (the face, darkened by
        ``backdrops[b].darkening`` and lit by ``lights[b]``, over
        ``backdrops[b]``'s image or colour); channel 3: 0 where the face mask is
        set, 255 elsewhere (the complement of :attr:`RenderBatch.mask`).
        ``out`` (C-contiguous, that shape) is filled and returned instead of a
        new array: a worker that keeps one saves the page faults of 13 MB per source.
        ``eyes``: redirected eyes, as in :meth:`render`.
        """
        tex_img, T, light_list = _check_inputs(texture_bgr, transforms, lights)
        if len(backdrops) != len(T):
            raise ValueError(f"{len(backdrops)} backdrops for {len(T)} views")
        target = BackdropTarget(backdrops, self.size, out)
        self._draw(tex_img, mesh, T, light_list, target, eyes)
        return target.out

    def _draw(
        self,
        tex_img: NDArray[np.uint8],
        mesh: RenderMesh,
        T: NDArray[np.float64],
        lights: list[Light | None],
        target: Target,
        eyes: EyeScene | None = None,
    ) -> None:
        """The one draw loop: upload once, then per round draw every view into its framebuffer, then read."""
        n = len(T)
        if not n:
            return
        if eyes is not None and len(eyes.poses) != n:
            raise ValueError(f"{len(eyes.poses)} eye poses for {n} views")
        gl = self._objects()
        framebuffers = gl.pool(target, self.size)
        upload: MeshUpload | EyeUpload
        if eyes is None:
            upload = face = MeshUpload.create(gl.ctx, gl.shader, tex_img, mesh)

            def draw_view(b: int) -> None:
                gl.shader.set_view(self.camera.view_uniforms(T[b]), lights[b], target.darkening(b), target.alpha_mode)
                face.draw()

        else:  # redirected eyes: the face and eyeball programs of render.eye_gl
            from nvsynth.render.eye_gl import EyeUpload

            shaders, scene = gl.eyes(), eyes
            upload = with_eyes = EyeUpload.create(gl.ctx, shaders, tex_img, scene.rig)

            def draw_view(b: int) -> None:
                with_eyes.draw(shaders, self.camera, T[b], scene.poses[b], lights[b], target.darkening(b),
                               target.alpha_mode)  # fmt: skip

        try:
            gl.ctx.enable_only(moderngl.DEPTH_TEST)
            for start in range(0, n, self.pool):
                views = range(start, min(n, start + self.pool))
                fbos = framebuffers.take(len(views))
                for fbo, b in zip(fbos, views, strict=True):
                    target.fill(fbo, b)
                    draw_view(b)
                for fbo, b in zip(fbos, views, strict=True):
                    target.read(fbo, b)
        finally:
            upload.release()

    def release(self) -> None:
        """Free this renderer's GL objects (the process's context stays for other renderers)."""
        if self._gl is not None and self._gl.pid == os.getpid():
            self._gl.release()
        self._gl = None
