"""Shading (render/shading.py): the light as uniforms and Gouraud Lambert relighting on a real render."""

from __future__ import annotations

import numpy as np
from render_scenes import frontal_template

from nvsynth.recon.template import FaceTemplate
from nvsynth.render.appearance import Light
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import RenderMesh, vertex_normals
from nvsynth.render.shading import light_uniforms


def test_light_uniforms_are_a_unit_direction_with_ambient_and_a_bgr_colour() -> None:
    unlit_dir, unlit_col = light_uniforms(None)
    assert np.array_equal(np.frombuffer(unlit_dir, "f4"), np.zeros(4)), "w = 0: no ambient term"
    assert np.array_equal(np.frombuffer(unlit_col, "f4"), np.zeros(4)), "w = 0: the texel, unshaded"
    d, c = light_uniforms(Light(np.array([3.0, 0.0, -4.0]), np.array([0.9, 1.0, 1.2]), 0.25))
    np.testing.assert_allclose(np.frombuffer(d, "f4"), [0.6, 0.0, -0.8, 0.25], rtol=1e-6)
    np.testing.assert_allclose(np.frombuffer(c, "f4"), [1.2, 1.0, 0.9, 1.0], rtol=1e-6)  # RGB -> BGR, relit


def test_relighting_follows_the_normals(renderer: FaceRenderer, template: FaceTemplate) -> None:
    v = frontal_template(template)
    grey = np.full((8, 8, 3), 200, dtype=np.uint8)
    n = vertex_normals(v, template.faces)
    if np.sum(n[:, 2]) > 0:  # outward normals face the camera (-z)
        n = -n
    mesh = RenderMesh(
        positions=v.astype(np.float32),
        faces=template.faces,
        texcoords=np.full((len(v), 2), 3.5, dtype=np.float32),
        normals=n.astype(np.float32),
        seen=np.ones(len(v), dtype=np.float32),
        landmarks=np.zeros((68, 3), dtype=np.float32),
    )
    from_left = Light(np.array([-1.0, 0.0, -1.0]) / np.sqrt(2), np.ones(3), 0.3)
    batch = renderer.render(grey, mesh, np.stack([np.eye(4)] * 2), [None, from_left])
    assert np.all(batch.color[0][batch.alpha[0] > 0] == 200)
    lit = batch.color[1][..., 1].astype(float)
    cover = batch.alpha[1] > 0
    cols = np.flatnonzero(cover.any(axis=0))
    left = lit[:, cols[0] : cols[0] + 60][cover[:, cols[0] : cols[0] + 60]].mean()
    right = lit[:, cols[-1] - 60 : cols[-1]][cover[:, cols[-1] - 60 : cols[-1]]].mean()
    assert left > right + 40, "the side facing the light is brighter"
    assert lit[cover].max() <= 200 and lit[cover].min() >= 0.3 * 200 - 1, "ambient bounds the shading"
