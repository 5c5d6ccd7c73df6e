"""The camera (render/camera.py): GL projection of an OpenCV camera matrix, view matrices, pixel centres.

Expectations are computed independently on the CPU with ``nvsynth.core.geometry.project``.
"""

from __future__ import annotations

import numpy as np
import pytest
from render_scenes import CENTRE, K_NORM, S, transform, turn_about

from nvsynth.core import geometry
from nvsynth.render.camera import Camera
from nvsynth.render.gl import FaceRenderer, clip_to_pixels, projection_matrix
from nvsynth.render.mesh import RenderMesh

# -- projection ------------------------------------------------------------------


def test_projection_matrix_matches_geometry_project() -> None:
    rng = np.random.default_rng(1)
    pts = np.stack([rng.uniform(-120, 120, 500), rng.uniform(-120, 120, 500), rng.uniform(150, 600, 500)], axis=1)
    for K, w, h in ((K_NORM, S, S), (np.array([[1000.0, 0.5, 640.0], [0.0, 990.0, 360.0], [0, 0, 1]]), 1280, 720)):
        P = projection_matrix(K, w, h)
        clip = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ P.T
        np.testing.assert_allclose(clip_to_pixels(clip, w, h), geometry.project(pts, K), atol=1e-9)
        ndc_z = clip[:, 2] / clip[:, 3]
        assert np.all((ndc_z > -1) & (ndc_z < 1))


def test_rasterized_triangle_covers_exactly_the_pixel_centres_inside_its_projection(renderer: FaceRenderer) -> None:
    # A triangle with vertices at different depths; coverage must match the pixel centres (integers,
    # OpenCV convention) inside the triangle that geometry.project draws.
    tri3 = np.array([[-40.3, -31.7, 280.0], [52.1, -12.9, 330.0], [-7.7, 48.3, 300.0]])
    mesh = RenderMesh(
        positions=tri3.astype(np.float32),
        faces=np.array([[0, 1, 2]], dtype=np.int32),
        texcoords=np.full((3, 2), 1.0, dtype=np.float32),
        normals=np.tile([0.0, 0.0, -1.0], (3, 1)).astype(np.float32),
        seen=np.ones(3, dtype=np.float32),
        landmarks=np.zeros((68, 3), dtype=np.float32),
    )
    texture = np.full((4, 4, 3), 200, dtype=np.uint8)
    batch = renderer.render(texture, mesh, np.eye(4)[None])
    p = geometry.project(tri3, K_NORM)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)

    def edge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0])

    e = np.stack([edge(p[0], p[1]), edge(p[1], p[2]), edge(p[2], p[0])])
    inside = np.all(e > 0, axis=0) | np.all(e < 0, axis=0)
    rendered = batch.alpha[0] > 0
    assert inside.sum() > 5000
    assert np.count_nonzero(rendered != inside) <= 2
    assert np.all(batch.color[0][rendered] == 200)


def test_view_uniforms_are_the_column_major_mvp_and_the_rotation_of_the_normals() -> None:
    cam = Camera.normalized()
    T = turn_about(CENTRE, geometry.head_rotation_from_pitchyaw(0.3, -0.5))
    T[:3, 3] += [5.0, -7.0, 20.0]
    u = cam.view_uniforms(T)
    mvp = np.frombuffer(u.mvp, dtype="f4").reshape(4, 4).T  # GL reads matrices column by column
    np.testing.assert_allclose(mvp, cam.projection @ T, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.frombuffer(u.rotation, dtype="f4").reshape(3, 3).T, T[:3, :3], atol=1e-7)
    # A point through the float32 MVP lands where geometry.project puts it, well within a pixel.
    pts = CENTRE + np.random.default_rng(2).uniform(-60.0, 60.0, (200, 3))
    clip = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ mvp.T.astype(np.float64)
    np.testing.assert_allclose(clip_to_pixels(clip, S, S), geometry.project(transform(pts, T), K_NORM), atol=1e-3)


def test_camera_defaults_to_the_normalized_camera_and_keeps_its_own_matrix() -> None:
    K = K_NORM.copy()
    cam = Camera(K, S)
    K[0, 0] = 1.0  # the caller's array changes; the camera's does not
    assert cam.camera_matrix[0, 0] == geometry.NORM_FOCAL
    assert np.array_equal(cam.projection, Camera.normalized().projection)
    r = FaceRenderer(size=224)
    assert r.size == 224 and np.array_equal(r.camera_matrix, geometry.normalized_camera_matrix(224))
    assert np.array_equal(r.camera.projection, projection_matrix(geometry.normalized_camera_matrix(224), 224, 224))
    with pytest.raises(ValueError, match="3x3"):
        Camera(np.eye(4), S)
