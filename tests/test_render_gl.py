"""The moderngl/EGL renderer and the render mesh, on real renders of the face template.

Most checks use an "ID texture": every triangle is unwelded and all three of
its texture coordinates sit in the middle of its own 4x4 block of a small
texture, painted with a colour that encodes the triangle's index. A render
is then an exact visibility buffer: each face pixel says which triangle it
shows. Geometric expectations are computed independently on the CPU with
``nvsynth.core.geometry.project``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from render_records import posed_record

from nvsynth.core import geometry
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.template import FaceTemplate, load_template
from nvsynth.render.appearance import Light
from nvsynth.render.gl import FaceRenderer, clip_to_pixels, projection_matrix
from nvsynth.render.mesh import RenderMesh, build_render_mesh, occlusion_visible, vertex_normals
from nvsynth.render.uvlayout import TemplateChart

S = geometry.NORM_RENDER_SIZE
K_NORM = geometry.normalized_camera_matrix()
CENTRE = np.array([0.0, 0.0, geometry.NORM_DISTANCE])


@pytest.fixture(scope="module")
def template(template_path: Path) -> FaceTemplate:
    return load_template(template_path)


@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    r = FaceRenderer()
    yield r
    r.release()


# -- helpers ---------------------------------------------------------------------


def turn_about(centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """4x4 rigid transform: rotate about ``centre``."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = centre - rotation @ centre
    return T


def transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def id_colour(i: np.ndarray) -> np.ndarray:
    i = np.asarray(i)
    return np.stack([i & 0xFF, i >> 8, np.full_like(i, 255)], axis=-1).astype(np.uint8)  # BGR, R = 255 marker


def decode_ids(bgr: np.ndarray) -> np.ndarray:
    """Triangle index of each pixel of an ID render; -1 where no triangle is shown."""
    b, g, r = (bgr[..., k].astype(np.int64) for k in range(3))
    return np.where(r == 255, b + 256 * g, -1)


def id_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[RenderMesh, np.ndarray]:
    """Unwelded mesh whose triangle i samples only the colour id_colour(i) (flat per triangle)."""
    n = len(faces)
    cols = 64
    rows = -(-n // cols)
    tex = np.zeros((rows * 4, cols * 4, 3), dtype=np.uint8)
    ids = np.arange(n)
    for i in ids:
        r, c = divmod(int(i), cols)
        tex[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] = id_colour(i)
    centres = np.stack([(ids % cols) * 4 + 1.5, (ids // cols) * 4 + 1.5], axis=1)
    pos = np.asarray(vertices, dtype=np.float64)[faces].reshape(-1, 3)
    normals = vertex_normals(vertices, faces)[faces].reshape(-1, 3)
    mesh = RenderMesh(
        positions=pos.astype(np.float32),
        faces=np.arange(3 * n, dtype=np.int32).reshape(n, 3),
        texcoords=np.repeat(centres, 3, axis=0).astype(np.float32),
        normals=normals.astype(np.float32),
        seen=np.ones(3 * n, dtype=np.float32),
        landmarks=np.zeros((68, 3), dtype=np.float32),
    )
    return mesh, tex


def frontal_template(template: FaceTemplate) -> np.ndarray:
    """Template vertices facing the normalized camera, centred on the optical axis at 300 mm."""
    v = template.vertices
    centre = (v.max(axis=0) + v.min(axis=0)) / 2.0
    return v - centre + CENTRE


def pixel_depths(vertices: np.ndarray, faces: np.ndarray, pixel: np.ndarray) -> dict[int, float]:
    """Camera z of every triangle covering ``pixel`` (CPU ray cast through the pixel centre)."""
    ray = np.linalg.solve(K_NORM, np.array([pixel[0], pixel[1], 1.0]))
    out: dict[int, float] = {}
    for i, tri in enumerate(np.asarray(vertices, dtype=np.float64)[faces]):
        e1, e2 = tri[1] - tri[0], tri[2] - tri[0]
        m = np.stack([ray, -e1, -e2], axis=1)
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        t, a, b = np.linalg.solve(m, tri[0])
        if t > 0 and a >= 0 and b >= 0 and a + b <= 1:
            out[i] = float(t * ray[2])
    return out


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


# -- unseen regions (render/mesh.py) -------------------------------------------------------

SOURCE_K = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
GREEN = (0, 255, 0)
SKIN = np.array([120, 150, 200])


def source_record(
    template: FaceTemplate, yaw_deg: float, pitch_deg: float = 0.0, landmark_idx: np.ndarray | None = None
) -> ReconRecord:
    """The template at the given pose; landmarks: the 68 template vertices ``landmark_idx`` (default: any 68)."""
    R = geometry.head_rotation_from_pitchyaw(np.radians(pitch_deg), np.radians(yaw_deg))
    t = np.array([30.0, -20.0, 550.0])
    visible = occlusion_visible(template.vertices @ R.T + t, template.faces)  # the template's winding points outwards
    lm_idx = np.linspace(0, len(template.vertices) - 1, 68).astype(int) if landmark_idx is None else landmark_idx
    return posed_record(template, R, t, SOURCE_K, visible, lm_idx)


@pytest.fixture(scope="module")
def landmark_idx(shared: Path) -> np.ndarray:
    import json

    return np.array(json.loads((shared / "assets" / "dlib68_to_mp468.json").read_text())["empirical"])


def symmetric_colour(head_points: np.ndarray) -> np.ndarray:
    """A smooth BGR colour of head-frame points, the same at (x, y, z) and (-x, y, z), never green."""
    x, y = np.abs(head_points[..., 0]), head_points[..., 1]
    return np.stack(
        [128 + 90 * np.sin(x / 14.0), 70 + 30 * np.cos(y / 19.0), 150 + 70 * np.sin((x + y) / 23.0)], axis=-1
    )


def source_frame(record: ReconRecord, template: FaceTemplate) -> np.ndarray:
    """Green, except the triangles the source camera sees, each painted flat in its symmetric colour."""
    img = np.zeros((720, 1280, 3), dtype=np.uint8)
    img[:] = GREEN
    faces = np.asarray(record.faces)
    uv = np.asarray(record.uv, dtype=np.float64)
    colours = symmetric_colour(template.vertices[faces].mean(axis=1))
    v = np.asarray(record.vertices, dtype=np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    sign = 1.0 if np.sum(n @ -record.head_rotation[:, 2]) > 0 else -1.0
    facing = sign * np.einsum("ij,ij->i", n, -v[faces].mean(axis=1)) > 0
    painted = np.flatnonzero(facing & record.visible[faces].all(axis=1))
    for i in painted[np.argsort(-v[faces[painted]].mean(axis=1)[:, 2])]:  # far to near: nearer ones cover
        cv2.fillConvexPoly(img, np.round(uv[faces[i]] * 16).astype(np.int32), colours[i].tolist(), cv2.LINE_8, 4)
    return img


def view_of(record: ReconRecord, pitch_yaw_deg: tuple[float, float]) -> np.ndarray:
    """Transform to the normalized camera showing the record's head at the given (pitch, yaw)."""
    centre = np.asarray(record.vertices, dtype=np.float64).mean(axis=0)
    rot = geometry.head_rotation_from_pitchyaw(*np.radians(pitch_yaw_deg)) @ record.head_rotation.T
    return turn_about(CENTRE, rot) @ _translate(CENTRE - centre)


def _translate(d: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = d
    return T


@pytest.fixture(scope="module")
def chart(template: FaceTemplate) -> TemplateChart:
    return TemplateChart.of(template)


def test_the_render_mesh_is_the_records_welded_mesh_on_the_templates_uv_chart(
    template: FaceTemplate, chart: TemplateChart, landmark_idx: np.ndarray
) -> None:
    rec = source_record(template, yaw_deg=50.0, landmark_idx=landmark_idx)
    textured = build_render_mesh(rec, source_frame(rec, template), chart)
    mesh = textured.mesh
    np.testing.assert_array_equal(mesh.faces, rec.faces)
    np.testing.assert_allclose(mesh.positions, rec.vertices, atol=1e-5)
    # Texture coordinates: the template's UVs in atlas pixels (v up -> rows down, centres at integers).
    S = chart.size
    np.testing.assert_allclose(mesh.texcoords[:, 0], template.uv[:, 0] * S - 0.5, atol=1e-3)
    np.testing.assert_allclose(mesh.texcoords[:, 1], (1.0 - template.uv[:, 1]) * S - 0.5, atol=1e-3)
    assert textured.texture.shape == (S, S, 3) and textured.texture.dtype == np.uint8
    # The atlas keeps the source's own texels where the camera saw the surface squarely (all but a rim
    # feathered beside unseen triangles and the silhouette) and completes the surface turned away from it.
    assert np.all((mesh.seen >= 0) & (mesh.seen <= 1))
    v = np.asarray(rec.vertices, dtype=np.float64)
    f = np.asarray(rec.faces)
    n, c = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), v[f].mean(axis=1)
    cos = -np.einsum("ij,ij->i", n, c) / np.linalg.norm(n, axis=1) / np.linalg.norm(c, axis=1)
    own = _triangle_means(chart, textured.atlas.own)
    square = rec.visible[f].all(axis=1) & (cos > 0.6)
    assert square.sum() > 300 and np.mean(own[square] > 0.5) > 0.9
    assert (cos < 0).sum() > 100 and np.all(own[cos < 0] < 0.05)
    assert np.all(textured.atlas.mirror[textured.atlas.own > 0.999] < 1e-3)


def _triangle_means(chart: TemplateChart, values: np.ndarray) -> np.ndarray:
    """Mean of an atlas image over each triangle's texels."""
    tri = chart.layout(len(chart.uv)).triangle.reshape(-1)
    on = tri >= 0
    count = np.bincount(tri[on], minlength=len(chart.faces))
    return np.bincount(tri[on], weights=values.reshape(-1)[on], minlength=len(chart.faces)) / np.maximum(count, 1)


@pytest.mark.parametrize("source_yaw", [-45.0, 30.0])
def test_turned_heads_show_the_mirror_texture_where_the_source_saw_nothing(
    renderer: FaceRenderer, template: FaceTemplate, chart: TemplateChart, landmark_idx: np.ndarray, source_yaw: float
) -> None:
    rec = source_record(template, yaw_deg=source_yaw, landmark_idx=landmark_idx)
    frame = source_frame(rec, template)
    textured = build_render_mesh(rec, frame, chart)
    own, mirror = _triangle_means(chart, textured.atlas.own), _triangle_means(chart, textured.atlas.mirror)
    ids_mesh, ids_tex = id_mesh(np.asarray(rec.vertices, dtype=np.float64), template.faces)
    T = np.stack([view_of(rec, (0.0, y)) for y in (-np.sign(source_yaw) * 40.0, 0.0)])
    batch = renderer.render(textured.texture, textured.mesh, T)
    id_batch = renderer.render(ids_tex, ids_mesh, T)
    expected = symmetric_colour(template.vertices[template.faces].mean(axis=1))
    checked = {"own": 0, "mirror": 0}
    for b in range(len(T)):
        ids = decode_ids(id_batch.color[b])
        face = batch.alpha[b] > 0
        assert np.array_equal(face, ids >= 0), "same geometry, same coverage"
        px = batch.color[b][face].astype(int)
        greenish = (px[:, 1] > px[:, 2] + 40) & (px[:, 1] > px[:, 0] + 40)
        assert greenish.mean() < 0.002, f"{greenish.mean():.2%} of the face shows the source's background"
        # Pixels deep inside one triangle show that triangle's colour: its own, or its mirror's (the same).
        same = np.ones_like(face)
        for dy, dx in ((-4, 0), (4, 0), (0, -4), (0, 4), (-3, -3), (3, 3), (-3, 3), (3, -3)):
            same &= np.roll(ids, (dy, dx), axis=(0, 1)) == ids
        ys, xs = np.nonzero(same & face)
        tri = ids[ys, xs]
        err = np.abs(batch.color[b][ys, xs].astype(float) - np.round(expected[tri])).max(axis=1)
        for name, sel in (("own", own[tri] > 0.99), ("mirror", mirror[tri] > 0.99)):
            # The frame is sampled twice (frame -> atlas -> view), bilinearly: near a triangle's edge the
            # neighbour's (similar) colour mixes in.
            assert np.mean(err[sel] <= 6) > 0.9, f"view {b}, {name}: {np.mean(err[sel] <= 6):.1%} within 6"
            assert np.mean(err[sel] <= 20) > 0.98, f"view {b}, {name}: {np.mean(err[sel] <= 20):.1%} within 20"
            checked[name] += int(sel.sum())
    assert checked["mirror"] > 3000, "the turned view shows a good deal of mirrored texture"
    assert checked["own"] > 3000


def test_face_mask_is_inside_the_rendered_face_and_excludes_the_forehead(
    renderer: FaceRenderer, template: FaceTemplate, landmark_idx: np.ndarray
) -> None:
    lmap = landmark_idx
    rec = source_record(template, yaw_deg=10.0, landmark_idx=lmap)
    verts = np.asarray(rec.vertices, dtype=np.float64)
    textured = build_render_mesh(rec, source_frame(rec, template), TemplateChart.of(template))
    centre = verts.mean(axis=0)
    rot = rec.head_rotation.T
    T = np.eye(4)
    T[:3, :3] = rot
    T[:3, 3] = CENTRE + np.array([0.0, 0.0, 80.0]) - rot @ centre
    batch = renderer.render(textured.texture, textured.mesh, T[None])
    alpha, mask = batch.alpha[0] > 0, batch.mask[0] > 0
    assert np.all(alpha[mask]), "the face mask lies inside the rendered face"
    assert 0.5 < mask.sum() / alpha.sum() < 0.95
    # The outline's eyebrows bound the mask from above: nothing above the projected brows is in it.
    brows = geometry.project(transform(verts[lmap[17:27]], T), K_NORM)
    ys = np.nonzero(mask)[0]
    assert ys.min() >= brows[:, 1].min() - 2
    # The jaw line bounds it from below.
    jaw = geometry.project(transform(verts[lmap[0:17]], T), K_NORM)
    assert abs(ys.max() - jaw[:, 1].max()) <= 3


def _render_pickled(args: tuple[FaceRenderer, np.ndarray, RenderMesh, np.ndarray]) -> tuple[int, bytes]:
    import os

    renderer, tex, mesh, T = args
    return os.getpid(), bytes(np.ascontiguousarray(renderer.render(tex, mesh, T).color))


def _render_forked(_: int) -> str:
    from nvsynth.render.gl import ForkedContextError

    try:
        FaceRenderer().render(np.zeros((4, 4, 3), np.uint8), _FORK_MESH[0], np.eye(4)[None])
    except ForkedContextError as err:
        return str(err)
    return "rendered"


_FORK_MESH: list[RenderMesh] = []


def test_renderers_pickle_to_settings_and_render_identically_in_another_process(template: FaceTemplate) -> None:
    import multiprocessing
    import os

    v = frontal_template(template)
    mesh, tex = id_mesh(v, template.faces)
    T = turn_about(v.mean(axis=0), geometry.head_rotation_from_pitchyaw(0.2, -0.4))[None]
    parent = FaceRenderer()
    here = parent.render(tex, mesh, T)  # the parent holds GL objects; pickling must leave them behind
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        ((pid, blob),) = pool.map_async(_render_pickled, [(parent, tex, mesh, T)]).get(timeout=120)
    assert pid != os.getpid()
    assert blob == bytes(np.ascontiguousarray(here.color))
    assert np.array_equal(parent.render(tex, mesh, T).color, here.color)
    parent.release()


def test_a_process_forked_after_the_context_refuses_to_render_instead_of_hanging(template: FaceTemplate) -> None:
    import multiprocessing

    from nvsynth.render.gl import get_context

    get_context()  # this process has a context
    _FORK_MESH.append(id_mesh(frontal_template(template), template.faces)[0])
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            message = pool.map_async(_render_forked, [0]).get(timeout=60)[0]
    finally:
        _FORK_MESH.clear()
    assert "forked from process" in message and "spawn" in message
