"""The face renderer: moderngl on a headless EGL context (Mesa llvmpipe on CPU, NVIDIA EGL on GPUs).

One OpenGL context per process, created lazily by the first :meth:`FaceRenderer.render`
in that process (never at import). Contexts do not survive ``fork``: a
renderer pickles to its settings only, and a process forked from one that
already had a context refuses to render (:func:`get_context`) rather than
hang in Mesa.

Camera
------
The normalized camera (:func:`nvsynth.core.geometry.normalized_camera_matrix`):
focal 960, principal point (224, 224), 448 x 448, OpenCV axes. The GL
projection is built from the 3x3 camera matrix (:func:`projection_matrix`) so
a vertex lands at exactly the pixel :func:`nvsynth.core.geometry.project` gives,
pixel centres at integer coordinates; image row 0 is the first row read back,
so no flip is needed. Rendering is depth-tested and perspective-correct, with
no MSAA (the 448 -> 224 area resize in :mod:`render.compose` supersamples).

Batching
--------
The B views of one source share one upload of the texture and the mesh.
Each view is one draw call into its own framebuffer (a pool, reused across
calls), with the view's MVP matrix, normal rotation and light as uniforms;
all B draws are issued before the first readback, so llvmpipe rasterizes
while Python issues the next view. Every view is rendered with identical
window coordinates, so a view's pixels do not depend on the batch it is in
or its position in it (a shared atlas would change them by rounding:
measured, a few hundred pixels by one grey level). Measured on llvmpipe, this
costs the same CPU time as one instanced draw into an atlas.

Render targets (one pass): 0 = RGBA8, the source texel (BGR) times the
view's light and alpha = coverage; 1 = RG8, the face-mask attribute
(a signed distance, interpolated, kept where >= 0) and the interpolated
``seen`` attribute.

Composited views (:meth:`FaceRenderer.render_composited`, what the pipeline
uses): each view's :class:`Backdrop` is put into the colour target before the
face is drawn -- a background image is written into the target texture as it
is, a flat colour is the clear colour -- and the face's darkening factor is a
uniform, so the target holds the finished view at render size. Its alpha
holds the complement of the face mask (0 = face mask, 255 = background or
face outside the mask: the background's own alpha). One target, one readback
of (S, S, 4) per view and no per-pixel compositing on the CPU: the CPU only
uploads the background and area-resizes the result (:mod:`render.compose`).
The Lambert light is evaluated per vertex from the vertex normals and
interpolated (Gouraud): the mesh is fine enough, and it is cheaper on
llvmpipe than per-fragment shading. Unlit views get exactly the texel.

Texture: the source frame (BGR uint8), cropped to the bounding box of the
mesh's texture coordinates plus a margin, uploaded per call; texture
coordinates are source pixels, turned into normalized ones in the vertex
shader as (u + 0.5) / width. Nothing of one source outlives its
:meth:`FaceRenderer.render` call: only the context, the program and the
framebuffers are reused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import moderngl
import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import geometry
from nvsynth.render.appearance import Light
from nvsynth.render.mesh import RenderMesh

#: Near and far planes (mm) of the GL projection; the face sits at ~300 mm.
NEAR_MM = 10.0
FAR_MM = 3000.0
#: Texture crop margin around the texture coordinates' bounding box, pixels.
TEXTURE_MARGIN = 3

_VERTEX_SHADER = """
#version 330 core
uniform vec4 tex_xform;  // (1/width, 1/height, 0.5 - crop_x, 0.5 - crop_y)
uniform mat4 mvp;
uniform mat3 rot;  // rotation of the view, for the normals
uniform vec4 light;  // direction towards the light (xyz), ambient (w)
uniform vec4 light_color;  // BGR order (xyz), 1 if relit (w)
uniform float dark;  // face darkening factor (1 = none)
in vec3 in_pos;
in vec2 in_tex;
in vec3 in_normal;
in float in_seen;
in float in_region;
out vec2 v_st;
out vec3 v_shade;
out vec2 v_aux;
void main() {
    gl_Position = mvp * vec4(in_pos, 1.0);
    v_st = (in_tex + tex_xform.zw) * tex_xform.xy;
    vec3 n = normalize(rot * in_normal);
    float lambert = max(dot(n, light.xyz), 0.0);
    v_shade = mix(vec3(1.0), light_color.xyz * (light.w + (1.0 - light.w) * lambert), light_color.w) * dark;
    v_aux = vec2(in_region, in_seen);
}
"""

_FRAGMENT_SHADER = """
#version 330 core
uniform sampler2D tex;
uniform float composited;  // 0: alpha = coverage; 1: alpha = 1 - face mask (render_composited)
in vec2 v_st;
in vec3 v_shade;
in vec2 v_aux;
layout(location = 0) out vec4 out_color;
layout(location = 1) out vec2 out_aux;
void main() {
    float in_mask = step(0.0, v_aux.x);
    out_color = vec4(texture(tex, v_st).rgb * v_shade, 1.0 - composited * in_mask);
    out_aux = vec2(in_mask, v_aux.y);
}
"""

_CONTEXT: tuple[int, moderngl.Context] | None = None


class ForkedContextError(RuntimeError):
    """This process was forked from one that had already made an EGL context."""


def get_context() -> moderngl.Context:
    """This process's standalone EGL context, created on first use.

    Mesa keeps one driver screen per process, with llvmpipe's rasterizer
    threads; a forked child inherits the screen but not the threads, and its
    first readback waits for them forever. So a process forked after its
    parent made a context cannot render: it raises :class:`ForkedContextError`
    at once. Make renderers in the worker processes (pool initializer), or
    start workers with ``spawn`` / ``forkserver``.
    """
    global _CONTEXT
    pid = os.getpid()
    if _CONTEXT is not None and _CONTEXT[0] != pid:
        raise ForkedContextError(
            f"process {pid} was forked from process {_CONTEXT[0]}, which had already created an EGL context; "
            "create the renderer only in the worker processes, or use the 'spawn'/'forkserver' start method"
        )
    if _CONTEXT is None:
        _CONTEXT = (pid, moderngl.create_standalone_context(backend="egl"))
    return _CONTEXT[1]


def projection_matrix(
    camera_matrix: ArrayLike, width: int, height: int, near: float = NEAR_MM, far: float = FAR_MM
) -> NDArray[np.float64]:
    """GL projection of an OpenCV camera: pixel (u, v) of a point is where :func:`geometry.project` puts it.

    Window x = u + 0.5 and window y = v + 0.5 (GL samples pixel centres at
    half-integers, OpenCV puts them at integers), so with ``glReadPixels``
    row 0 is image row 0. Depth maps [near, far] to [-1, 1].
    """
    K = np.asarray(camera_matrix, dtype=np.float64)
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    return np.array(
        [
            [2.0 * fx / width, 2.0 * s / width, (2.0 * cx + 1.0) / width - 1.0, 0.0],
            [0.0, 2.0 * fy / height, (2.0 * cy + 1.0) / height - 1.0, 0.0],
            [0.0, 0.0, (far + near) / (far - near), -2.0 * far * near / (far - near)],
            [0.0, 0.0, 1.0, 0.0],
        ]
    )


def clip_to_pixels(clip: ArrayLike, width: int, height: int) -> NDArray[np.float64]:
    """Inverse of the viewport mapping used by :func:`projection_matrix`: clip coords (..., 4) to pixels (..., 2)."""
    c = np.asarray(clip, dtype=np.float64)
    ndc = c[..., :2] / c[..., 3:4]
    return np.stack([(ndc[..., 0] + 1.0) * width / 2.0 - 0.5, (ndc[..., 1] + 1.0) * height / 2.0 - 0.5], axis=-1)


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


def _light_uniforms(light: Light | None) -> tuple[bytes, bytes]:
    if light is None:
        return np.zeros(4, "f4").tobytes(), np.zeros(4, "f4").tobytes()
    d = np.asarray(light.direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    c = np.asarray(light.color, dtype=np.float64)[::-1]  # RGB -> BGR, the texture's order
    return (
        np.array([*d, light.ambient], dtype="f4").tobytes(),
        np.array([*c, 1.0], dtype="f4").tobytes(),
    )


@dataclass
class _Upload:
    """The GL objects of one source (texture crop, vertices, indices), released after its views."""

    texture: moderngl.Texture
    vbo: moderngl.Buffer
    ibo: moderngl.Buffer
    vao: moderngl.VertexArray

    def release(self) -> None:
        self.vao.release()
        self.ibo.release()
        self.vbo.release()
        self.texture.release()


class FaceRenderer:
    """Renders a textured :class:`RenderMesh` under B rigid transforms into the normalized camera.

    ``pool`` bounds the number of framebuffers kept (one per view of a
    batch); larger batches are rendered in rounds of ``pool`` views.
    """

    def __init__(
        self,
        size: int = geometry.NORM_RENDER_SIZE,
        camera_matrix: ArrayLike | None = None,
        near: float = NEAR_MM,
        far: float = FAR_MM,
        pool: int = 32,
    ) -> None:
        self.size = int(size)
        K = geometry.normalized_camera_matrix(self.size) if camera_matrix is None else camera_matrix
        self.camera_matrix = np.asarray(K, dtype=np.float64).copy()
        self.near = float(near)
        self.far = float(far)
        self.pool = max(1, int(pool))
        self._projection = projection_matrix(self.camera_matrix, self.size, self.size, self.near, self.far)
        self._pid: int | None = None
        self._ctx: moderngl.Context | None = None
        self._prog: moderngl.Program | None = None
        self._fbos: list[moderngl.Framebuffer] = []  # render(): RGBA8 + RG8 renderbuffers and depth
        self._cfbos: list[moderngl.Framebuffer] = []  # render_composited(): one RGBA8 texture and depth

    def __getstate__(self) -> dict[str, object]:
        """Pickle the settings only: GL objects never leave their process."""
        state = self.__dict__.copy()
        state.update(_pid=None, _ctx=None, _prog=None, _fbos=[], _cfbos=[])
        return state

    # -- GL objects ----------------------------------------------------------------
    def _ensure_context(self) -> moderngl.Context:
        pid = os.getpid()
        if self._ctx is None or self._pid != pid:
            self._ctx = get_context()
            self._pid = pid
            self._prog = self._ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
            self._prog["tex"].value = 0
            self._fbos = []
            self._cfbos = []
        return self._ctx

    def _framebuffers(self, count: int) -> list[moderngl.Framebuffer]:
        ctx = self._ensure_context()
        shape = (self.size, self.size)
        while len(self._fbos) < count:
            self._fbos.append(
                ctx.framebuffer(
                    color_attachments=[ctx.renderbuffer(shape, 4), ctx.renderbuffer(shape, 2)],
                    depth_attachment=ctx.depth_renderbuffer(shape),
                )
            )
        return self._fbos[:count]

    def _composite_framebuffers(self, count: int) -> list[moderngl.Framebuffer]:
        ctx = self._ensure_context()
        shape = (self.size, self.size)
        while len(self._cfbos) < count:
            self._cfbos.append(
                ctx.framebuffer(
                    color_attachments=[ctx.texture(shape, 4)], depth_attachment=ctx.depth_renderbuffer(shape)
                )
            )
        return self._cfbos[:count]

    # -- rendering -------------------------------------------------------------------
    @staticmethod
    def _check(
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

    def render(
        self,
        texture_bgr: NDArray[np.uint8],
        mesh: RenderMesh,
        transforms: ArrayLike,
        lights: Sequence[Light | None] | None = None,
        with_seen: bool = False,
    ) -> RenderBatch:
        """Render ``mesh`` textured by ``texture_bgr`` under each of the B ``transforms``.

        ``transforms[b]`` (4x4) maps source-camera mm to normalized-camera mm;
        ``lights[b]`` is that view's light (None = unlit). With ``with_seen``
        the batch also carries the ``seen`` attribute.
        """
        tex_img, T, light_list = self._check(texture_bgr, transforms, lights)
        n = len(T)
        S = self.size
        bgra = np.empty((n, S, S, 4), dtype=np.uint8)
        aux = np.empty((n, S, S, 2), dtype=np.uint8)
        if n:
            ctx = self._ensure_context()
            up = self._upload(tex_img, mesh)
            try:
                ctx.enable_only(moderngl.DEPTH_TEST)
                for start in range(0, n, self.pool):
                    views = range(start, min(n, start + self.pool))
                    fbos = self._framebuffers(len(views))
                    for fbo, b in zip(fbos, views, strict=True):
                        self._set_view(T[b], light_list[b], 1.0, composited=False)
                        fbo.use()
                        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                        up.vao.render(moderngl.TRIANGLES)
                    for fbo, b in zip(fbos, views, strict=True):
                        fbo.read_into(bgra[b], components=4, attachment=0)
                        fbo.read_into(aux[b], components=2, attachment=1)
            finally:
                up.release()
        return RenderBatch(
            color=bgra[..., :3],
            alpha=bgra[..., 3],
            mask=aux[..., 0],
            seen=aux[..., 1] if with_seen else None,
        )

    def render_composited(
        self,
        texture_bgr: NDArray[np.uint8],
        mesh: RenderMesh,
        transforms: ArrayLike,
        lights: Sequence[Light | None] | None,
        backdrops: Sequence[Backdrop],
        out: NDArray[np.uint8] | None = None,
    ) -> NDArray[np.uint8]:
        """Finished views at render size, composited in the same pass: (B, S, S, 4) uint8.

        Channels 0-2: the view in BGR (the face, darkened by
        ``backdrops[b].darkening`` and lit by ``lights[b]``, over
        ``backdrops[b]``'s image or colour); channel 3: 0 where the face mask is
        set, 255 elsewhere (the complement of :attr:`RenderBatch.mask`).
        ``out`` (C-contiguous, that shape) is filled and returned instead of a
        new array: a worker that keeps one saves the page faults of 13 MB per source.
        """
        tex_img, T, light_list = self._check(texture_bgr, transforms, lights)
        n = len(T)
        if len(backdrops) != n:
            raise ValueError(f"{len(backdrops)} backdrops for {n} views")
        S = self.size
        if out is None:
            out = np.empty((n, S, S, 4), dtype=np.uint8)
        elif out.shape != (n, S, S, 4) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous uint8 {(n, S, S, 4)}, got {out.dtype} {out.shape}")
        if not n:
            return out
        ctx = self._ensure_context()
        up = self._upload(tex_img, mesh)
        bgra = np.empty((S, S, 4), dtype=np.uint8)  # staging for background images
        try:
            ctx.enable_only(moderngl.DEPTH_TEST)
            for start in range(0, n, self.pool):
                views = range(start, min(n, start + self.pool))
                fbos = self._composite_framebuffers(len(views))
                for fbo, b in zip(fbos, views, strict=True):
                    bd = backdrops[b]
                    self._set_view(T[b], light_list[b], float(bd.darkening), composited=True)
                    if bd.image is None:
                        fbo.use()
                        c = np.asarray(bd.color, dtype=np.float64) / 255.0
                        fbo.clear(float(c[0]), float(c[1]), float(c[2]), 1.0, depth=1.0)
                    else:
                        img = np.asarray(bd.image)
                        if img.shape != (S, S, 3) or img.dtype != np.uint8:
                            raise ValueError(f"backdrop image must be uint8 ({S}, {S}, 3), got {img.dtype} {img.shape}")
                        cv2.cvtColor(img, cv2.COLOR_BGR2BGRA, dst=bgra)  # alpha 255: not face
                        # written before the framebuffer is bound, so Mesa need not wait for pending draws
                        fbo.color_attachments[0].write(bgra)
                        fbo.use()
                        fbo.color_mask = (False, False, False, False)  # clear the depth only
                        fbo.clear(depth=1.0)
                        fbo.color_mask = (True, True, True, True)
                        fbo.use()  # moderngl applies the colour mask when the framebuffer is bound
                    up.vao.render(moderngl.TRIANGLES)
                for fbo, b in zip(fbos, views, strict=True):
                    fbo.read_into(out[b], components=4, attachment=0)
        finally:
            up.release()
        return out

    def _set_view(self, T: NDArray[np.float64], light: Light | None, darkening: float, composited: bool) -> None:
        prog = self._prog
        assert prog is not None
        prog["mvp"].write((self._projection @ T).T.astype("f4").tobytes())  # column-major
        prog["rot"].write(np.ascontiguousarray(T[:3, :3].T, dtype="f4").tobytes())
        light_u, color_u = _light_uniforms(light)
        prog["light"].write(light_u)
        prog["light_color"].write(color_u)
        prog["dark"].value = darkening
        prog["composited"].value = 1.0 if composited else 0.0

    def _upload(self, tex_img: NDArray[np.uint8], mesh: RenderMesh) -> _Upload:
        """The source's texture crop, vertices and indices, bound for drawing."""
        ctx = self._ensure_context()
        prog = self._prog
        assert prog is not None
        h, w = tex_img.shape[:2]
        uv = np.asarray(mesh.texcoords, dtype=np.float64)
        x0 = int(np.clip(np.floor(uv[:, 0].min()) - TEXTURE_MARGIN, 0, w - 1))
        y0 = int(np.clip(np.floor(uv[:, 1].min()) - TEXTURE_MARGIN, 0, h - 1))
        x1 = int(np.clip(np.ceil(uv[:, 0].max()) + TEXTURE_MARGIN + 1, x0 + 1, w))
        y1 = int(np.clip(np.ceil(uv[:, 1].max()) + TEXTURE_MARGIN + 1, y0 + 1, h))
        crop = np.ascontiguousarray(tex_img[y0:y1, x0:x1])
        vertices = np.concatenate(
            [
                np.asarray(mesh.positions, dtype=np.float32),
                np.asarray(mesh.texcoords, dtype=np.float32),
                np.asarray(mesh.normals, dtype=np.float32),
                np.asarray(mesh.seen, dtype=np.float32)[:, None],
                np.asarray(mesh.region(), dtype=np.float32)[:, None],
            ],
            axis=1,
        )
        indices = np.ascontiguousarray(mesh.faces, dtype=np.int32)
        prog["tex_xform"].value = (1.0 / (x1 - x0), 1.0 / (y1 - y0), 0.5 - x0, 0.5 - y0)
        texture = ctx.texture((x1 - x0, y1 - y0), 3, crop.tobytes(), alignment=1)
        texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
        texture.repeat_x = False
        texture.repeat_y = False
        vbo = ctx.buffer(vertices.tobytes())
        ibo = ctx.buffer(indices.tobytes())
        vao = ctx.vertex_array(
            prog,
            [(vbo, "3f 2f 3f 1f 1f", "in_pos", "in_tex", "in_normal", "in_seen", "in_region")],
            index_buffer=ibo,
            index_element_size=4,
        )
        texture.use(location=0)
        return _Upload(texture, vbo, ibo, vao)

    def release(self) -> None:
        """Free this renderer's GL objects (the process's context stays for other renderers)."""
        if self._ctx is not None and self._pid == os.getpid():
            for fbo in (*self._fbos, *self._cfbos):
                for att in (*fbo.color_attachments, fbo.depth_attachment):
                    att.release()
                fbo.release()
            if self._prog is not None:
                self._prog.release()
        self._ctx = None
        self._prog = None
        self._fbos = []
        self._cfbos = []
        self._pid = None
