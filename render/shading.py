"""Shading: the GLSL program (one pass, two render targets), the texture lookup and the light as uniforms.

The vertex shader places the vertex with the view's MVP matrix
(:mod:`render.camera`), turns its texture coordinate (source pixels) into a
normalized one as (u + 0.5) / width of the uploaded crop
(:mod:`render.upload`), and evaluates the view's :class:`~render.appearance.Light`
per vertex: Lambert with an ambient term, from the vertex normal rotated with
the view, interpolated across the triangle (Gouraud). The mesh is fine enough
for that, and it is cheaper on llvmpipe than per-fragment shading. Unlit views
get exactly the texel. The face darkening factor multiplies the shade.

The fragment shader writes two targets in one pass:

* location 0, RGBA: the source texel (BGR, the texture's order) times the
  shade; alpha per :data:`ALPHA_COVERAGE` (1 wherever the face is drawn) or
  :data:`ALPHA_NOT_MASK` (0 where the face mask is set, 1 elsewhere on the face),
  chosen by the render target (:mod:`render.compositing`);
* location 1, RG: the face-mask attribute (a signed distance, interpolated,
  kept where >= 0) and the interpolated ``seen`` attribute. Targets without a
  second attachment drop it.
"""

from __future__ import annotations

import moderngl
import numpy as np

from nvsynth.render.appearance import Light
from nvsynth.render.camera import ViewUniforms

VERTEX_SHADER = """
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

FRAGMENT_SHADER = """
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

#: Values of the ``composited`` uniform: what the colour target's alpha holds where the face is drawn.
ALPHA_COVERAGE = 0.0  # 1 (255): the face covers the pixel
ALPHA_NOT_MASK = 1.0  # 0 where the face mask is set, 1 (255) elsewhere

_UNLIT = np.zeros(4, "f4").tobytes()
_UNIFORMS = ("tex", "tex_xform", "mvp", "rot", "light", "light_color", "dark", "composited")


def light_uniforms(light: Light | None) -> tuple[bytes, bytes]:
    """The ``light`` and ``light_color`` uniforms (float32 vec4 each) of a view's light; None = unlit."""
    if light is None:
        return _UNLIT, _UNLIT
    d = np.asarray(light.direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    c = np.asarray(light.color, dtype=np.float64)[::-1]  # RGB -> BGR, the texture's order
    return (
        np.array([*d, light.ambient], dtype="f4").tobytes(),
        np.array([*c, 1.0], dtype="f4").tobytes(),
    )


class Shader:
    """The compiled program in one context, and the uniforms it reads per source and per view."""

    def __init__(self, ctx: moderngl.Context) -> None:
        self.program = ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
        self._u = {name: self._uniform(name) for name in _UNIFORMS}
        self._u["tex"].value = 0  # the source texture is bound to unit 0 (render.upload)

    def _uniform(self, name: str) -> moderngl.Uniform:
        member = self.program[name]
        if not isinstance(member, moderngl.Uniform):
            raise TypeError(f"{name!r} is not a uniform of the program")
        return member

    def set_texture_crop(self, x0: int, y0: int, width: int, height: int) -> None:
        """Texture coordinates are source pixels; the uploaded texture is the crop at (x0, y0) of that size."""
        self._u["tex_xform"].value = (1.0 / width, 1.0 / height, 0.5 - x0, 0.5 - y0)

    def set_view(self, view: ViewUniforms, light: Light | None, darkening: float, alpha_mode: float) -> None:
        """One view's uniforms: its matrices, light, face darkening and what alpha holds."""
        u = self._u
        u["mvp"].write(view.mvp)
        u["rot"].write(view.rotation)
        light_u, color_u = light_uniforms(light)
        u["light"].write(light_u)
        u["light_color"].write(color_u)
        u["dark"].value = darkening
        u["composited"].value = alpha_mode

    def release(self) -> None:
        self.program.release()
