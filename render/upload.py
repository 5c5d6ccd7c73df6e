"""One source's GL objects: the texture crop of its frame and its mesh's vertices and indices.

The texture is the source frame (BGR uint8) cropped to the bounding box of the
mesh's texture coordinates plus :data:`TEXTURE_MARGIN`, uploaded once per
source and sampled bilinearly, clamped at its edges; texture coordinates stay
source pixels (the shader subtracts the crop origin, :mod:`render.shading`).
The vertices are interleaved (position, texture coordinate, normal, ``seen``,
face-mask region) in one buffer, the triangles in an index buffer.

All B views of a source share this one upload; nothing of it outlives the
renderer call that made it (:meth:`MeshUpload.release`).
"""

from __future__ import annotations

from dataclasses import dataclass

import moderngl
import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.render.mesh import RenderMesh
from nvsynth.render.shading import Shader

#: Texture crop margin around the texture coordinates' bounding box, pixels.
TEXTURE_MARGIN = 3
#: The interleaved vertex layout and the vertex shader inputs it feeds, in order.
VERTEX_FORMAT = ("3f 2f 3f 1f 1f", "in_pos", "in_tex", "in_normal", "in_seen", "in_region")


@dataclass(frozen=True)
class TextureCrop:
    """The box [x0, x1) x [y0, y1) of the source frame that is uploaded."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def texture_crop(width: int, height: int, texcoords: ArrayLike) -> TextureCrop:
    """The crop of a ``width`` x ``height`` frame that holds every texture coordinate plus the margin (never empty)."""
    uv = np.asarray(texcoords, dtype=np.float64)
    x0 = int(np.clip(np.floor(uv[:, 0].min()) - TEXTURE_MARGIN, 0, width - 1))
    y0 = int(np.clip(np.floor(uv[:, 1].min()) - TEXTURE_MARGIN, 0, height - 1))
    x1 = int(np.clip(np.ceil(uv[:, 0].max()) + TEXTURE_MARGIN + 1, x0 + 1, width))
    y1 = int(np.clip(np.ceil(uv[:, 1].max()) + TEXTURE_MARGIN + 1, y0 + 1, height))
    return TextureCrop(x0, y0, x1, y1)


def vertex_data(mesh: RenderMesh) -> NDArray[np.float32]:
    """(V, 10) float32 rows in :data:`VERTEX_FORMAT` order."""
    return np.concatenate(
        [
            np.asarray(mesh.positions, dtype=np.float32),
            np.asarray(mesh.texcoords, dtype=np.float32),
            np.asarray(mesh.normals, dtype=np.float32),
            np.asarray(mesh.seen, dtype=np.float32)[:, None],
            np.asarray(mesh.region(), dtype=np.float32)[:, None],
        ],
        axis=1,
    )


@dataclass(frozen=True)
class MeshUpload:
    """The GL objects of one source (texture crop, vertices, indices), bound for drawing with ``shader``."""

    texture: moderngl.Texture
    vbo: moderngl.Buffer
    ibo: moderngl.Buffer
    vao: moderngl.VertexArray

    @classmethod
    def create(cls, ctx: moderngl.Context, shader: Shader, image: NDArray[np.uint8], mesh: RenderMesh) -> MeshUpload:
        """Upload ``image`` (H, W, 3) BGR uint8 (its crop) and ``mesh``; binds the texture to unit 0."""
        h, w = image.shape[:2]
        crop = texture_crop(w, h, mesh.texcoords)
        pixels = np.ascontiguousarray(image[crop.y0 : crop.y1, crop.x0 : crop.x1])
        vertices = vertex_data(mesh)
        indices = np.ascontiguousarray(mesh.faces, dtype=np.int32)
        shader.set_texture_crop(crop.x0, crop.y0, crop.width, crop.height)
        texture = ctx.texture((crop.width, crop.height), 3, pixels.tobytes(), alignment=1)
        texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
        texture.repeat_x = False
        texture.repeat_y = False
        vbo = ctx.buffer(vertices.tobytes())
        ibo = ctx.buffer(indices.tobytes())
        vao = ctx.vertex_array(shader.program, [(vbo, *VERTEX_FORMAT)], index_buffer=ibo, index_element_size=4)
        texture.use(location=0)
        return cls(texture, vbo, ibo, vao)

    def draw(self) -> None:
        """Draw the triangles into the bound framebuffer with the shader's current uniforms."""
        self.vao.render(moderngl.TRIANGLES)

    def release(self) -> None:
        self.vao.release()
        self.ibo.release()
        self.vbo.release()
        self.texture.release()
