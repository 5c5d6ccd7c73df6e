"""GL side of redirected eyes: the face with lids and eye openings, and the eyeballs, in one pass per view.

Two programs (made once per process, :class:`EyeShaders`):

* the **face** program is :mod:`render.shading`'s (same light, darkening, texture
  lookup and fragment shader) with two additions in the vertex shader: the lid
  vertices turn about their eyeball's centre around the head's x axis by their
  weights times the view's lid angles (:mod:`render.eyes`), and the opening's
  backing is pushed :data:`render.eyes.BACKING_PUSH_MM` along the view ray;
* the **eyeball** program draws both spheres (one draw call): position =
  view . model[eye] . direction, the eye texture at the sphere's own texture
  coordinates, plus the highlight layer looked up at the same surface point's
  coordinates in the *source* eye frame (``relative[eye]``), so the highlight
  stays put while the eye turns. The eyeballs are lit like the face, inside the
  face mask and ``seen``, and drawn :data:`render.eyes.EYE_DEPTH_BIAS_MM` deeper
  along each view ray than they are (same pixels): where a lid turned with the
  eye stretches a skin triangle into the globe, the skin wins.

Both draw into the same framebuffer with the depth test, face first: the eyes
show through the openings, the backing only where no eyeball is.
"""

from __future__ import annotations

from dataclasses import dataclass

import moderngl
import numpy as np
from numpy.typing import NDArray

from nvsynth.render.appearance import Light
from nvsynth.render.camera import Camera
from nvsynth.render.eye_texture import THETA_MAX
from nvsynth.render.eyes import BACKING_PUSH_MM, EYE_DEPTH_BIAS_MM, EyePose, EyeRig
from nvsynth.render.shading import FRAGMENT_SHADER, light_uniforms
from nvsynth.render.upload import VERTEX_FORMAT, texture_crop, vertex_data

_LIGHTING = """
    float lambert = max(dot(n, light.xyz), 0.0);
    v_shade = mix(vec3(1.0), light_color.xyz * (light.w + (1.0 - light.w) * lambert), light_color.w) * dark;
"""

FACE_VERTEX_SHADER = (
    """
#version 330 core
uniform vec4 tex_xform;
uniform mat4 view;  // source camera mm -> normalized camera mm
uniform mat4 proj;
uniform mat3 rot;
uniform vec4 light;
uniform vec4 light_color;
uniform float dark;
uniform vec3 lid_axis;  // the head's x axis, source camera
uniform vec3 lid_centre[2];
uniform vec2 lid_angle[2];  // upper, lower
uniform float push_mm;
in vec3 in_pos;
in vec2 in_tex;
in vec3 in_normal;
in float in_seen;
in float in_region;
in vec4 in_lid;  // eye (-1 none), upper weight, lower weight, push (1 on the opening's backing)
out vec2 v_st;
out vec3 v_shade;
out vec2 v_aux;
vec3 turn(vec3 v, vec3 k, float a) {
    float c = cos(a);
    return v * c + cross(k, v) * sin(a) + k * dot(k, v) * (1.0 - c);
}
void main() {
    vec3 p = in_pos;
    vec3 n0 = in_normal;
    if (in_lid.x > -0.5) {
        int e = int(in_lid.x + 0.5);
        float a = in_lid.y * lid_angle[e].x + in_lid.z * lid_angle[e].y;
        p = lid_centre[e] + turn(in_pos - lid_centre[e], lid_axis, a);
        n0 = turn(in_normal, lid_axis, a);
    }
    vec4 pv = view * vec4(p, 1.0);
    if (in_lid.w > 0.5) {
        pv.xyz *= 1.0 + push_mm / length(pv.xyz);
    }
    gl_Position = proj * pv;
    v_st = (in_tex + tex_xform.zw) * tex_xform.xy;
    vec3 n = normalize(rot * n0);
"""
    + _LIGHTING
    + """
    v_aux = vec2(in_region, in_seen);
}
"""
)

EYE_VERTEX_SHADER = (
    """
#version 330 core
uniform mat4 view;
uniform mat4 proj;
uniform mat3 rot;
uniform vec4 light;
uniform vec4 light_color;
uniform float dark;
uniform mat4 model[2];  // unit sphere, eye frame -> source camera mm
uniform mat3 relative[2];  // eye frame -> the source's eye frame
uniform float theta_max;
uniform float depth_bias_mm;
in vec3 in_dir;
in vec2 in_st;
in float in_eye;
out vec2 v_st;
out vec2 v_hl;
out vec3 v_shade;
void main() {
    int e = int(in_eye + 0.5);
    vec4 pv = view * (model[e] * vec4(in_dir, 1.0));
    pv.xyz *= 1.0 + depth_bias_mm / length(pv.xyz);  // same pixel, a little deeper: skin near the globe wins
    gl_Position = proj * pv;
    v_st = in_st;
    vec3 w = relative[e] * in_dir;
    float th = acos(clamp(-w.z, -1.0, 1.0));
    float len_xy = length(w.xy);
    vec2 u = len_xy > 1e-6 ? w.xy / len_xy : vec2(0.0);
    vec2 st = clamp(0.5 + 0.5 * (th / theta_max) * u, 0.0, 1.0);
    v_hl = vec2(0.5 * (st.x + float(e)), st.y);
    vec3 n = normalize(rot * (mat3(model[e]) * in_dir));
"""
    + _LIGHTING
    + """
}
"""
)

EYE_FRAGMENT_SHADER = """
#version 330 core
uniform sampler2D eye_tex;
uniform sampler2D highlight_tex;
uniform float composited;
uniform float dark;
in vec2 v_st;
in vec2 v_hl;
in vec3 v_shade;
layout(location = 0) out vec4 out_color;
layout(location = 1) out vec2 out_aux;
void main() {
    vec3 c = texture(eye_tex, v_st).rgb * v_shade + texture(highlight_tex, v_hl).rgb * dark;
    out_color = vec4(c, 1.0 - composited);
    out_aux = vec2(1.0, 1.0);
}
"""

#: Winding of the eyeballs' outer faces in window coordinates (the camera's y axis points down the image, which
#: mirrors the outward counter-clockwise winding of :func:`render.eyes.sphere_mesh`).
EYE_FRONT_FACE = "cw"
#: Texture units: the face's source crop is unit 0 (render.upload), the eyes use the next two.
EYE_TEXTURE_UNIT = 1
HIGHLIGHT_TEXTURE_UNIT = 2


class EyeShaders:
    """The two programs of redirected eyes in one context."""

    def __init__(self, ctx: moderngl.Context) -> None:
        self.face = ctx.program(vertex_shader=FACE_VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
        self.eye = ctx.program(vertex_shader=EYE_VERTEX_SHADER, fragment_shader=EYE_FRAGMENT_SHADER)
        self.face["tex"] = 0
        self.face["push_mm"] = BACKING_PUSH_MM
        self.eye["eye_tex"] = EYE_TEXTURE_UNIT
        self.eye["highlight_tex"] = HIGHLIGHT_TEXTURE_UNIT
        self.eye["theta_max"] = float(THETA_MAX)
        self.eye["depth_bias_mm"] = EYE_DEPTH_BIAS_MM

    def release(self) -> None:
        self.face.release()
        self.eye.release()


def _texture(ctx: moderngl.Context, image: NDArray[np.uint8]) -> moderngl.Texture:
    img = np.ascontiguousarray(image)
    tex = ctx.texture((img.shape[1], img.shape[0]), 3, img.tobytes(), alignment=1)
    tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
    tex.repeat_x = False
    tex.repeat_y = False
    return tex


@dataclass(frozen=True)
class EyeScene:
    """Redirected eyes for one renderer call: the source's rig and each view's eye pose."""

    rig: EyeRig
    poses: tuple[EyePose, ...]


@dataclass(frozen=True)
class EyeUpload:
    """One source's GL objects for redirected eyes: face texture and vertices with lids, eyeballs and textures."""

    objects: tuple  # everything to release
    face_vao: moderngl.VertexArray
    eye_vao: moderngl.VertexArray

    @classmethod
    def create(cls, ctx: moderngl.Context, shaders: EyeShaders, image: NDArray[np.uint8], rig: EyeRig) -> EyeUpload:
        h, w = image.shape[:2]
        mesh = rig.face
        crop = texture_crop(w, h, mesh.texcoords)
        face_tex = _texture(ctx, image[crop.y0 : crop.y1, crop.x0 : crop.x1])
        shaders.face["tex_xform"] = (1.0 / crop.width, 1.0 / crop.height, 0.5 - crop.x0, 0.5 - crop.y0)
        vbo = ctx.buffer(vertex_data(mesh).tobytes())
        lid = ctx.buffer(np.ascontiguousarray(rig.lids, dtype=np.float32).tobytes())
        ibo = ctx.buffer(np.ascontiguousarray(mesh.faces, dtype=np.int32).tobytes())
        face_vao = ctx.vertex_array(shaders.face, [(vbo, *VERTEX_FORMAT), (lid, "4f", "in_lid")], index_buffer=ibo,
                                    index_element_size=4)  # fmt: skip
        t = rig.textures
        eye_tex = _texture(ctx, np.concatenate([t.image[0], t.image[1]], axis=1))
        hl_tex = _texture(ctx, np.concatenate([t.highlight[0], t.highlight[1]], axis=1))
        s = rig.sphere
        sphere = np.concatenate([s.directions, s.texcoords, s.eye[:, None]], axis=1).astype(np.float32)
        svbo = ctx.buffer(sphere.tobytes())
        sibo = ctx.buffer(np.ascontiguousarray(s.faces, dtype=np.int32).tobytes())
        eye_vao = ctx.vertex_array(shaders.eye, [(svbo, "3f 2f 1f", "in_dir", "in_st", "in_eye")], index_buffer=sibo,
                                   index_element_size=4)  # fmt: skip
        face_tex.use(location=0)
        eye_tex.use(location=EYE_TEXTURE_UNIT)
        hl_tex.use(location=HIGHLIGHT_TEXTURE_UNIT)
        return cls((face_vao, eye_vao, vbo, lid, ibo, svbo, sibo, face_tex, eye_tex, hl_tex), face_vao, eye_vao)

    def draw(self, shaders: EyeShaders, camera: Camera, transform: NDArray[np.float64], pose: EyePose,
             light: Light | None, darkening: float, alpha_mode: float) -> None:  # fmt: skip
        """One view: set both programs' uniforms, draw the face (lids, openings, backing), then the eyeballs."""
        view = np.ascontiguousarray(transform.T, dtype="f4").tobytes()  # column-major
        proj = np.ascontiguousarray(camera.projection.T, dtype="f4").tobytes()
        rot = np.ascontiguousarray(transform[:3, :3].T, dtype="f4").tobytes()
        light_u, color_u = light_uniforms(light)
        for prog in (shaders.face, shaders.eye):
            prog["view"].write(view)
            prog["proj"].write(proj)
            prog["rot"].write(rot)
            prog["light"].write(light_u)
            prog["light_color"].write(color_u)
            prog["dark"] = float(darkening)
        shaders.face["composited"] = alpha_mode
        shaders.eye["composited"] = alpha_mode
        f = shaders.face
        f["lid_axis"].write(np.asarray(pose.lid_axis, dtype="f4").tobytes())
        f["lid_centre"].write(np.asarray(pose.centres, dtype="f4").tobytes())
        f["lid_angle"].write(np.asarray(pose.lid_angles, dtype="f4").tobytes())
        self.face_vao.render(moderngl.TRIANGLES)
        e = shaders.eye
        e["model"].write(np.ascontiguousarray(np.transpose(pose.model, (0, 2, 1)), dtype="f4").tobytes())
        e["relative"].write(np.ascontiguousarray(np.transpose(pose.relative, (0, 2, 1)), dtype="f4").tobytes())
        ctx = e.ctx
        ctx.enable(moderngl.CULL_FACE)  # the back of the eyeballs is never seen
        ctx.front_face = EYE_FRONT_FACE
        self.eye_vao.render(moderngl.TRIANGLES)
        ctx.disable(moderngl.CULL_FACE)

    def release(self) -> None:
        for obj in self.objects:
            obj.release()
