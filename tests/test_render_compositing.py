"""Render targets (render/compositing.py) and the two routes of render/compose.py, on real renders.

``render`` (the face as layers, composited on the CPU) and
``render_composited`` (the face drawn over each view's backdrop in the same
pass) share one draw loop; here they must give the same pictures: exactly
where the face is not darkened, within one grey level where it is (the GPU
darkens before rounding to 8 bits, the CPU after).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from render_scenes import CENTRE, S, frontal_template, turn_about

from nvsynth.core import geometry
from nvsynth.recon.template import FaceTemplate, load_template
from nvsynth.render.appearance import VARIANTS, AppearanceParams, Light
from nvsynth.render.backgrounds import BackgroundSource
from nvsynth.render.compose import backdrops, finish_composited, finish_views
from nvsynth.render.gl import Backdrop, FaceRenderer
from nvsynth.render.mesh import RenderMesh, vertex_normals

SOURCE_K = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def scene(template_path: Path) -> tuple[np.ndarray, RenderMesh, np.ndarray, list[Light | None]]:
    """The template at 500 mm in a 1280x720 camera, textured by a patterned frame; four turned views."""
    tpl: FaceTemplate = load_template(template_path)
    v = frontal_template(tpl) + np.array([0.0, 0.0, 200.0])
    n = vertex_normals(v, tpl.faces)
    if np.sum(n[:, 2]) > 0:  # outward normals face the camera (-z)
        n = -n
    centre = v.mean(axis=0)
    mesh = RenderMesh(
        positions=v.astype(np.float32),
        faces=tpl.faces,
        texcoords=geometry.project(v, SOURCE_K).astype(np.float32),
        normals=n.astype(np.float32),
        seen=np.ones(len(v), np.float32),
        landmarks=np.zeros((68, 3), np.float32),
        face_region=(25.0 - np.abs(v[:, 0] - centre[0])).astype(np.float32),  # a band: mask != coverage
    )
    yy, xx = np.mgrid[0:720, 0:1280]
    frame = np.stack([(xx * 3) % 256, (yy * 5) % 256, (xx + 2 * yy) % 256], axis=-1).astype(np.uint8)
    shift = np.eye(4)
    shift[:3, 3] = CENTRE - centre
    T = np.stack([turn_about(CENTRE, geometry.head_rotation_from_pitchyaw(p, y)) @ shift for p, y in
                  ((0.0, 0.0), (0.2, -0.5), (-0.3, 0.6), (0.1, 0.3))])  # fmt: skip
    key = np.array([0.4, -0.3, -0.87])
    lights = [None, Light(key / np.linalg.norm(key), np.array([1.1, 1.0, 0.9]), 0.4), None, None]
    return frame, mesh, T, lights


def appearance(kind: str, dark: float = 1.0, color=(0, 0, 0), bg_id: int = -1, darken_bg: bool = False):
    variant = VARIANTS.index(kind + ("-dark" if dark != 1.0 else ""))
    return AppearanceParams(variant, kind, bg_id, np.array(color, np.uint8), dark, None, darken_bg)


def test_composited_views_are_the_layers_over_their_backdrops(scene) -> None:
    frame, mesh, T, lights = scene
    image = cv2.resize(BackgroundSource(None).image(3), (S, S), interpolation=cv2.INTER_AREA)
    looks = [Backdrop(color=(10, 200, 30)), Backdrop(image=image), Backdrop(), Backdrop(image=image, darkening=0.5)]
    r = FaceRenderer()
    try:
        layers = r.render(frame, mesh, T, lights)
        views = r.render_composited(frame, mesh, T, lights, looks)
        again = r.render(frame, mesh, T, lights)  # the targets' framebuffers do not disturb each other
    finally:
        r.release()
    assert views.shape == (4, S, S, 4) and views.dtype == np.uint8
    assert np.array_equal(again.bgra, layers.bgra) and np.array_equal(again.mask, layers.mask)
    assert np.array_equal(views[..., 3], 255 - layers.mask), "alpha = complement of the face mask"
    for b, bd in enumerate(looks):
        face = layers.alpha[b] > 0
        assert 0.1 * S * S < face.sum() < 0.9 * S * S
        mask = layers.mask[b] > 0
        assert 0.2 * face.sum() < mask.sum() < 0.8 * face.sum() and not np.any(mask & ~face)
        behind = np.broadcast_to(np.asarray(bd.color, np.uint8), (S, S, 3)) if bd.image is None else bd.image
        assert np.array_equal(views[b, ..., :3][~face], behind[~face]), "the backdrop as it is, outside the face"
        if bd.darkening == 1.0:
            assert np.array_equal(views[b, ..., :3][face], layers.color[b][face])
        else:
            darkened = np.round(layers.color[b][face] * bd.darkening)
            assert np.abs(views[b, ..., :3][face].astype(float) - darkened).max() <= 1


def test_the_two_routes_of_compose_give_the_same_patches(scene) -> None:
    frame, mesh, T, lights = scene
    bgs = BackgroundSource(None)
    params = [
        appearance("black"),
        appearance("color", color=(200, 10, 60)),
        appearance("image", bg_id=11),
        appearance("image", dark=0.6, bg_id=12, darken_bg=True),
    ]
    r = FaceRenderer()
    try:
        cpu_patches, cpu_masks = finish_views(r.render(frame, mesh, T, lights), params, bgs)
        gl_patches, gl_masks = finish_composited(r.render_composited(frame, mesh, T, lights, backdrops(params, bgs, S)))
    finally:
        r.release()
    assert np.array_equal(gl_masks, cpu_masks) and 0 < np.count_nonzero(gl_masks) < gl_masks.size
    assert np.array_equal(gl_patches[:3], cpu_patches[:3]), "undarkened views: the same bytes"
    assert np.abs(gl_patches[3].astype(int) - cpu_patches[3]).max() <= 1, "darkened: one rounding instead of two"


def test_composited_views_do_not_depend_on_the_pool_and_fill_out(scene) -> None:
    frame, mesh, T, lights = scene
    looks = [Backdrop(color=(b * 40, 255 - b * 40, 7), darkening=1.0 - 0.1 * b) for b in range(len(T))]
    r1, r2 = FaceRenderer(), FaceRenderer(pool=3)  # two rounds: three framebuffers, then one
    try:
        a = r1.render_composited(frame, mesh, T, lights, looks)
        out = np.zeros_like(a)
        b = r2.render_composited(frame, mesh, T, lights, looks, out=out)
        single = r2.render_composited(frame, mesh, T[3:], lights[3:], looks[3:])
    finally:
        r1.release()
        r2.release()
    assert b is out and np.array_equal(a, b)
    assert np.array_equal(single[0], a[3])


def test_bad_backdrops_are_refused_before_anything_is_drawn(scene) -> None:
    frame, mesh, T, lights = scene
    r = FaceRenderer()
    try:
        small = np.zeros((S // 2, S // 2, 3), np.uint8)
        with pytest.raises(ValueError, match="backdrop image must be uint8"):
            r.render_composited(frame, mesh, T, lights, [Backdrop(), Backdrop(), Backdrop(), Backdrop(image=small)])
        with pytest.raises(ValueError, match="3 backdrops for 4 views"):
            r.render_composited(frame, mesh, T, lights, [Backdrop()] * 3)
        with pytest.raises(ValueError, match="out must be C-contiguous"):
            r.render_composited(frame, mesh, T, lights, [Backdrop()] * 4, out=np.zeros((4, S, S, 3), np.uint8))
        empty = r.render_composited(frame, mesh, T[:0], [], [])
        assert empty.shape == (0, S, S, 4)
        after = r.render_composited(frame, mesh, T, lights, [Backdrop()] * 4)
    finally:
        r.release()
    fresh = FaceRenderer()
    try:
        assert np.array_equal(after, fresh.render_composited(frame, mesh, T, lights, [Backdrop()] * 4))
    finally:
        fresh.release()
