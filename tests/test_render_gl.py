"""The whole renderer (render/renderer.py through render/gl.py) on real renders of the face template.

Most checks use an "ID texture" (tests/render_scenes.py): every triangle is
unwelded and all three of its texture coordinates sit in the middle of its own
4x4 block of a small texture, painted with a colour that encodes the
triangle's index. A render is then an exact visibility buffer: each face pixel
says which triangle it shows. Geometric expectations are computed
independently on the CPU with ``nvsynth.core.geometry.project``.

Elsewhere: the camera (test_render_camera.py), shading (test_render_shading.py),
render targets (test_render_compositing.py), texture upload
(test_render_upload.py), the per-process context (test_render_context.py) and
render meshes of turned heads (test_render_mesh.py).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from render_scenes import CENTRE, K_NORM, S, decode_ids, frontal_template, id_mesh, pixel_depths, transform, turn_about

from nvsynth.core import geometry
from nvsynth.recon.template import FaceTemplate
from nvsynth.render.appearance import Light
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import RenderMesh

# -- (a) mask centroid and extent ---------------------------------------------------


@pytest.mark.parametrize("pitch_yaw_deg", [(0.0, 0.0), (15.0, -35.0), (-20.0, 50.0)])
def test_mask_centroid_and_extent_match_the_projected_mesh(
    renderer: FaceRenderer, template: FaceTemplate, pitch_yaw_deg: tuple[float, float]
) -> None:
    v = frontal_template(template) + np.array([8.0, -5.0, 60.0])  # smaller, off-centre: the whole face in view
    mesh, tex = id_mesh(v, template.faces)
    centre = v.mean(axis=0)
    T = turn_about(centre, geometry.head_rotation_from_pitchyaw(*np.radians(pitch_yaw_deg)))
    batch = renderer.render(tex, mesh, T[None])
    expected = np.zeros((S, S), dtype=np.uint8)
    shift = 8  # sub-pixel precision of cv2.fillPoly
    pts = np.round(geometry.project(transform(v, T), K_NORM) * (1 << shift)).astype(np.int32)
    for tri in pts[template.faces]:  # one by one: fillPoly on overlapping polygons would cancel them out
        cv2.fillConvexPoly(expected, tri, 255, lineType=cv2.LINE_8, shift=shift)
    for got in (batch.alpha[0], batch.mask[0]):
        ys, xs = np.nonzero(got)
        ye, xe = np.nonzero(expected)
        assert abs(xs.mean() - xe.mean()) < 2 and abs(ys.mean() - ye.mean()) < 2
        for a, b in ((xs, xe), (ys, ye)):
            assert abs(a.min() - b.min()) <= 2 and abs(a.max() - b.max()) <= 2
        assert abs(len(xs) - len(xe)) < 0.02 * len(xe)
    assert 0.2 * S * S < np.count_nonzero(batch.alpha[0]) < 0.9 * S * S


# -- (b) depth test ------------------------------------------------------------------


def test_depth_test_hides_the_far_cheek_behind_the_nose_at_60_degrees_yaw(
    renderer: FaceRenderer, template: FaceTemplate
) -> None:
    v = frontal_template(template)
    faces = template.faces
    mesh, tex = id_mesh(v, faces)
    T = turn_about(v.mean(axis=0), geometry.head_rotation_from_pitchyaw(0.0, np.radians(60.0)))
    vt = transform(v, T)
    batch = renderer.render(tex, mesh, np.stack([T, np.eye(4)]))
    ids, frontal_ids = decode_ids(batch.color[0]), decode_ids(batch.color[1])
    # Positive yaw turns the nose towards image-left (x < 0), so the cheek on that side (x < 0 in the head
    # frame, the subject's right) turns away behind the nose. Head frame: y down, eyes at y ~ -30.
    centroids = v[faces].mean(axis=1) - v.mean(axis=0)
    nose = set(np.flatnonzero((np.abs(centroids[:, 0]) < 15) & (centroids[:, 1] > -25) & (centroids[:, 1] < 35)))
    far_cheek = np.flatnonzero((centroids[:, 0] < -25) & (centroids[:, 0] > -55) & (np.abs(centroids[:, 1]) < 35))
    pix = np.round(geometry.project(vt[faces].mean(axis=1), K_NORM)).astype(int)
    hidden = []
    for i in far_cheek:
        x, y = pix[i]
        if int(ids[y, x]) in nose:
            depths = pixel_depths(vt, faces, np.array([x, y], dtype=float))  # CPU ray cast
            if i in depths:  # the cheek triangle does lie under this pixel (thin ones may miss its centre)
                hidden.append((i, int(ids[y, x]), depths))
    assert len(hidden) >= 10, "at 60 degrees the nose covers part of the far cheek"
    for i, shown, depths in hidden:
        assert shown == min(depths, key=depths.get), "the nearest triangle is the one shown"
        assert depths[shown] < depths[i] - 10.0
    # The same cheek is in full view from the front, and all but gone at 60 degrees.
    assert np.isin(frontal_ids, far_cheek).sum() > 5000
    assert np.isin(ids, far_cheek).sum() < 0.02 * np.isin(frontal_ids, far_cheek).sum()


# -- (c) colours at known texels ---------------------------------------------------------


def test_every_triangle_shows_its_own_texels(renderer: FaceRenderer, template: FaceTemplate) -> None:
    v = frontal_template(template) + np.array([0.0, 0.0, 80.0])
    faces = template.faces
    mesh, tex = id_mesh(v, faces)
    batch = renderer.render(tex, mesh, np.eye(4)[None])
    ids = decode_ids(batch.color[0])
    face_px = batch.alpha[0] > 0
    assert np.all(ids[face_px] >= 0), "every covered pixel shows a texel of some triangle, exactly"
    assert np.all(ids[~face_px] == -1)
    # At the projected centroid of every clearly visible, front-facing triangle, that triangle is shown.
    pts = geometry.project(v, K_NORM)
    p = pts[faces]
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    area = 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])
    big = np.flatnonzero(area > 30)
    cen = np.round(p[big].mean(axis=1)).astype(int)
    inside = (cen >= 0).all(axis=1) & (cen < S).all(axis=1)
    shown = ids[cen[inside, 1], cen[inside, 0]]
    assert inside.sum() > 300
    assert np.mean(shown == big[inside]) > 0.97


def test_texture_coordinates_are_perspective_correct_with_opencv_pixel_centres(renderer: FaceRenderer) -> None:
    # A plane tilted 60 degrees in depth, textured with a linear ramp R = 4 x, G = 4 y (x, y texel indices).
    tex = np.zeros((64, 64, 3), dtype=np.uint8)
    tex[..., 2] = (4 * np.arange(64))[None, :]
    tex[..., 1] = (4 * np.arange(64))[:, None]
    tex[..., 0] = 128
    tilt = geometry.rot_y(np.radians(60.0))
    corners_uv = np.array([[0.0, 0.0], [63.0, 0.0], [63.0, 63.0], [0.0, 63.0]])
    local = np.array([[-60.0, -60.0, 0.0], [60.0, -60.0, 0.0], [60.0, 60.0, 0.0], [-60.0, 60.0, 0.0]])
    pos = local @ tilt.T + CENTRE
    mesh = RenderMesh(
        positions=pos.astype(np.float32),
        faces=np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32),
        texcoords=corners_uv.astype(np.float32),
        normals=np.tile(tilt @ [0.0, 0.0, -1.0], (4, 1)).astype(np.float32),
        seen=np.ones(4, dtype=np.float32),
        landmarks=np.zeros((68, 3), dtype=np.float32),
    )
    img = renderer.render(tex, mesh, np.eye(4)[None]).color[0].astype(np.float64)
    # Exact texel coordinate of each pixel centre: intersect its ray with the plane.
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    rays = np.stack([xx, yy, np.ones_like(xx)], axis=-1) @ np.linalg.inv(K_NORM).T
    normal, origin = tilt @ [0.0, 0.0, 1.0], pos[0]
    t = (origin @ normal) / (rays @ normal)
    hit = rays * t[..., None] - origin
    a = hit @ (pos[1] - pos[0]) / np.sum((pos[1] - pos[0]) ** 2)
    b = hit @ (pos[3] - pos[0]) / np.sum((pos[3] - pos[0]) ** 2)
    tx, ty = 63.0 * a, 63.0 * b
    ok = (tx > 1) & (tx < 62) & (ty > 1) & (ty < 62)
    assert ok.sum() > 20000
    err_r = np.abs(img[..., 2][ok] - 4 * tx[ok])
    err_g = np.abs(img[..., 1][ok] - 4 * ty[ok])
    assert err_r.max() <= 1.5 and err_g.max() <= 1.5
    assert np.all(img[..., 0][ok] == 128)


# -- (e) determinism and batching ---------------------------------------------------------


def test_renders_are_deterministic_and_independent_of_batching(template: FaceTemplate) -> None:
    v = frontal_template(template)
    mesh, tex = id_mesh(v, template.faces)
    rng = np.random.default_rng(5)
    T = np.stack(
        [turn_about(v.mean(axis=0), geometry.head_rotation_from_pitchyaw(*rng.uniform(-0.7, 0.7, 2))) for _ in range(5)]
    )
    key = np.array([0.3, -0.4, -0.87])
    lights = [None, Light(key / np.linalg.norm(key), np.array([1.0, 0.9, 1.1]), 0.5), None, None, None]
    r1, r2, r3 = FaceRenderer(), FaceRenderer(pool=2), FaceRenderer()
    try:
        a = r1.render(tex, mesh, T, lights, with_seen=True)
        b = r2.render(tex, mesh, T, lights, with_seen=True)  # three rounds of at most two framebuffers
        singles = [r3.render(tex, mesh, T[i : i + 1], lights[i : i + 1]) for i in range(5)]
        again = r1.render(tex, mesh, T, lights, with_seen=True)
    finally:
        for r in (r1, r2, r3):
            r.release()
    for other in (b, again):
        assert np.array_equal(a.color, other.color)
        assert np.array_equal(a.alpha, other.alpha)
        assert np.array_equal(a.mask, other.mask)
        assert np.array_equal(a.seen, other.seen)
    for i, s in enumerate(singles):
        assert np.array_equal(a.color[i], s.color[0]) and np.array_equal(a.mask[i], s.mask[0])
    assert not np.array_equal(a.color[0], a.color[1])
