"""The texture atlas (render/atlas.py, render/uvlayout.py): unwrap, mirror completion, fill.

The face template is placed in a calibrated camera at known poses; visibility
is :func:`recon.visibility.visible_vertices` (what ``nvsynth recon`` stores)
and the 68 landmarks come from the shared dlib -> template map, so the eye and
nose regions are those of a real record. Source frames are rendered by the
real renderer from a known texture, or painted where the face projects.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from render_records import posed_record

from nvsynth.core import geometry
from nvsynth.recon.fit import subdivision
from nvsynth.recon.meshops import vertex_normals
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.template import FaceTemplate, load_template
from nvsynth.recon.visibility import visible_vertices
from nvsynth.render.atlas import build_atlas, project_distorted, push_pull, unwrap
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import RenderMesh, build_render_mesh
from nvsynth.render.regions import eye_distances, face_region_distance
from nvsynth.render.skin import interior_distance
from nvsynth.render.uvlayout import TemplateChart

K = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
GREEN = np.array([0, 255, 0])


@pytest.fixture(scope="module")
def template(template_path: Path) -> FaceTemplate:
    return load_template(template_path)


@pytest.fixture(scope="module")
def chart(template: FaceTemplate) -> TemplateChart:
    return TemplateChart.of(template)


@pytest.fixture(scope="module")
def landmark_map(shared: Path) -> np.ndarray:
    return np.array(json.loads((shared / "assets" / "dlib68_to_mp468.json").read_text())["empirical"])


def record_at(
    template: FaceTemplate, landmark_map: np.ndarray, yaw_deg: float, pitch_deg: float, camera: np.ndarray = K
) -> ReconRecord:
    R = geometry.head_rotation_from_pitchyaw(np.radians(pitch_deg), np.radians(yaw_deg))
    t = np.array([20.0, -10.0, 600.0])
    visible = visible_vertices(template.vertices @ R.T + t, template.faces, camera)
    return posed_record(template, R, t, camera, visible, landmark_map)


def painted_frame(rec: ReconRecord, colour: np.ndarray) -> np.ndarray:
    """``colour`` (720, 1280, 3) where the source saw the face (its visible triangles), green elsewhere."""
    painted = np.zeros((720, 1280), dtype=np.uint8)
    uv = np.asarray(rec.uv, dtype=np.float64)
    for t in np.asarray(rec.faces)[rec.visible[rec.faces].all(axis=1)]:
        cv2.fillConvexPoly(painted, np.round(uv[t] * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    return np.where(painted[..., None] > 0, np.round(colour), GREEN).astype(np.uint8)


def smooth_colour(shape: tuple[int, int]) -> np.ndarray:
    """Smooth BGR gradients, never greenish (G <= 120 <= R)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return np.stack(
        [120 + 60 * np.sin(xx / 61.0), 90 + 30 * np.cos(yy / 47.0), 170 + 50 * np.sin((xx + yy) / 83.0)], axis=-1
    )


def greenish(bgr: np.ndarray) -> np.ndarray:
    c = bgr.astype(np.int64)
    return (c[..., 1] > c[..., 2] + 40) & (c[..., 1] > c[..., 0] + 40)


def test_the_distortion_matches_opencv() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform([-150, -100, 400], [150, 100, 800], size=(500, 3))
    for dist in (np.array([-0.1, 0.08, 0.001, -0.002, 0.01]), np.array([0.2, -0.1, 0.0, 0.0, 0.0, 0.05, 0.01, -0.02])):
        want, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, dist)
        np.testing.assert_allclose(project_distorted(pts, K, dist), want.reshape(-1, 2), atol=1e-6)


def test_a_known_texture_unwraps_back_exactly(template: FaceTemplate, chart: TemplateChart, landmark_map) -> None:
    """A frame rendered from a textured mesh (with lens distortion) unwraps to that texture."""
    layout = chart.layout(len(template.vertices))
    S = layout.size
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    known = np.stack(
        [128 + 80 * np.sin(xx / 9.0) * np.cos(yy / 13.0), 128 + 70 * np.cos((xx - yy) / 11.0), 90 + 60 * (yy / S)],
        axis=-1,
    ).astype(np.uint8)
    size = 720
    Kc = np.array([[1000.0, 0.0, 360.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
    rec = record_at(template, landmark_map, 15.0, 5.0, Kc)
    v = np.asarray(rec.vertices, dtype=np.float64)
    mesh = RenderMesh(
        positions=v.astype(np.float32),
        faces=np.asarray(rec.faces, dtype=np.int32),
        texcoords=layout.texcoords,
        normals=vertex_normals(v, rec.faces).astype(np.float32),
        seen=np.ones(len(v), np.float32),
        landmarks=np.asarray(rec.landmarks_3d, dtype=np.float32),
    )
    renderer = FaceRenderer(size=size, camera_matrix=Kc)
    try:
        batch = renderer.render(known, mesh, np.eye(4)[None])
    finally:
        renderer.release()
    ideal = np.where(batch.alpha[0][..., None] > 0, batch.color[0], GREEN).astype(np.uint8)
    # The lens: each distorted pixel shows the ideal image at its undistorted position.
    dist = np.array([-0.1, 0.08, 0.0, 0.0, 0.0])
    q = np.stack(np.meshgrid(np.arange(size), np.arange(size)), axis=-1).reshape(-1, 1, 2).astype(np.float64)
    p = cv2.undistortPoints(q, Kc, dist, P=Kc).reshape(size, size, 2).astype(np.float32)
    frame = cv2.remap(ideal, p, None, cv2.INTER_LINEAR)
    uv, _ = cv2.projectPoints(v, np.zeros(3), np.zeros(3), Kc, dist)
    rec = ReconRecord(**{**rec.__dict__, "uv": uv.reshape(-1, 2).astype(np.float32), "dist_coeffs": dist,
                         "image_size": np.array([size, size], dtype=np.int32)})  # fmt: skip
    own = unwrap(rec, frame, layout)
    # Texels the source saw squarely, away from the edges of what it saw (bilinear sampling mixes those).
    assert layout.half is not None
    cos = cv2.resize(own.cos, (S, S), interpolation=cv2.INTER_LINEAR)
    check = cv2.erode(own.seen.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    check &= cos > 0.5
    assert check.sum() > 0.4 * layout.inside.sum()
    err = np.abs(own.colour.astype(np.int64) - known.astype(np.int64)).max(axis=2)[check]
    assert np.median(err) <= 2, np.median(err)
    assert np.percentile(err, 99) <= 10, np.percentile(err, 99)


@pytest.mark.parametrize("pitch", [0.0, 10.0])
def test_a_frontal_source_keeps_its_own_texels_on_the_nose_and_eyes(
    template: FaceTemplate, chart: TemplateChart, landmark_map: np.ndarray, pitch: float
) -> None:
    rec = record_at(template, landmark_map, 0.0, pitch)
    atlas = build_atlas(rec, painted_frame(rec, smooth_colour((720, 1280))), chart.layout(len(rec.vertices)))
    layout = chart.layout(len(rec.vertices))
    assert layout.half is not None
    # The nose base (dlib 31-35: nostrils, alae, columella) within 12 mm, and the eyes: the source's own.
    v = np.asarray(template.vertices)
    near_nose = np.linalg.norm(v[:, None] - v[landmark_map[31:36]][None], axis=2).min(axis=1) < 12.0
    tc = layout.texcoords[near_nose]
    own_at = atlas.own[np.round(tc[:, 1]).astype(int), np.round(tc[:, 0]).astype(int)]
    assert near_nose.sum() > 30 and np.mean(own_at > 0.99) > 0.9
    eyes = cv2.resize(layout.half.interpolate(eye_distances(rec)), (layout.size, layout.size)) > 0
    assert eyes.sum() > 500 and np.mean(atlas.own[eyes.any(axis=2)] > 0.99) > 0.95
    assert atlas.seen_eyes == (True, True)
    chart_px = layout.inside
    assert atlas.own[chart_px].mean() > 0.7  # all but the sides of the head, seen edge-on


@pytest.mark.parametrize(("yaw", "pitch"), [(0.0, -20.0), (45.0, 0.0), (-35.0, 10.0)])
def test_the_completed_atlas_covers_the_chart_and_never_shows_the_background(
    template: FaceTemplate, chart: TemplateChart, landmark_map: np.ndarray, yaw: float, pitch: float
) -> None:
    rec = record_at(template, landmark_map, yaw, pitch)
    layout = chart.layout(len(rec.vertices))
    atlas = build_atlas(rec, painted_frame(rec, smooth_colour((720, 1280))), layout)
    # Every texel has a colour; none is the source's green background, inside the chart or in its gutter.
    g = greenish(atlas.texture)
    assert not g.any(), f"{g.sum()} greenish texels"
    assert np.all((atlas.own >= 0) & (atlas.mirror >= 0) & (atlas.own + atlas.mirror <= 1 + 1e-5))
    # Seen eyes are never mirrored.
    assert layout.half is not None
    eyes = cv2.resize(layout.half.interpolate(eye_distances(rec)), (layout.size, layout.size)) > 0
    for k in range(2):
        if atlas.seen_eyes[k]:
            assert np.all(atlas.mirror[eyes[..., k]] < 1e-3), f"eye {k} seen, yet mirrored"
    if abs(yaw) >= 30:
        assert atlas.mirror[layout.inside].mean() > 0.15, "a turned source completes its far side by mirroring"


def test_mirrored_texture_keeps_its_detail_and_matches_the_own_brightness(
    template: FaceTemplate, chart: TemplateChart, landmark_map: np.ndarray
) -> None:
    """A source lit from one side, turned: the mirrored far side shows the near side's texture (not a flat
    patch), brightness-matched to the own texels where the two meet (no seam)."""
    rec = record_at(template, landmark_map, -40.0, 0.0)
    layout = chart.layout(len(rec.vertices))
    rng = np.random.default_rng(3)
    detail = cv2.GaussianBlur(rng.normal(0.0, 25.0, size=(720, 1280)), (0, 0), 1.5)
    xx = np.arange(1280, dtype=np.float64)[None, :]
    light = 0.6 + 0.4 * (xx - 400.0) / 500.0  # brighter towards image right
    base = np.clip((140.0 + detail) * light, 0, 255)
    atlas = build_atlas(rec, painted_frame(rec, np.stack([base * 0.8, base * 0.7, base], axis=-1)), layout)
    grey = atlas.texture.astype(np.float64).mean(axis=2)
    mirrored = layout.inside & (atlas.mirror > 0.99)
    own = layout.inside & (atlas.own > 0.99)
    assert mirrored.sum() > 0.15 * layout.inside.sum() and own.sum() > 0.3 * layout.inside.sum()
    # Detail: the high-pass energy of mirrored texels is of the order of the own texels'.
    high = np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 3.0))
    assert high[mirrored].mean() > 0.5 * high[own].mean()
    # No seam: across the border between own and mirrored texels the low-pass brightness changes no faster
    # than it does within the own texels.
    low = cv2.GaussianBlur(grey, (0, 0), 4.0)
    gx = np.abs(np.diff(low, axis=1))
    border = cv2.dilate(own.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    border &= cv2.dilate(mirrored.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    inner = cv2.erode(own.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert border.sum() > 200
    assert np.percentile(gx[border[:, 1:]], 95) <= 1.5 * np.percentile(gx[inner[:, 1:]], 95) + 0.5


def test_fill_takes_the_colours_of_what_was_seen_around_it(
    template: FaceTemplate, chart: TemplateChart, landmark_map: np.ndarray
) -> None:
    """A smooth source texture, green wherever the source did not see the surface: what neither side saw
    (under the nose and chin of a face seen from above, the sides of the head) is filled with colours of the
    seen texture around it, at a scale set by its distance from it: no odd flat patches, never the green."""
    rec = record_at(template, landmark_map, 0.0, -20.0)
    textured = build_render_mesh(rec, painted_frame(rec, smooth_colour((720, 1280))), chart)
    atlas, layout = textured.atlas, chart.layout(len(rec.vertices))
    known = (atlas.own + atlas.mirror) > 0.5
    fill = layout.inside & ((atlas.own + atlas.mirror) < 0.01)
    assert fill.sum() > 2000
    dist = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    colour = atlas.texture.astype(np.int64)
    ok = np.zeros(fill.shape, dtype=bool)
    previous = 0.0
    for radius in (8, 16, 32, 64, 128, 256):
        ring = fill & (dist > previous) & (dist <= radius / 2)
        previous = radius / 2
        kernel = np.ones((2 * radius + 1,) * 2, np.uint8)
        lo = np.stack([cv2.erode(np.where(known, colour[..., c], 255).astype(np.uint8), kernel) for c in range(3)], -1)
        hi = np.stack([cv2.dilate(np.where(known, colour[..., c], 0).astype(np.uint8), kernel) for c in range(3)], -1)
        inside = np.all((colour >= lo.astype(np.int64) - 3) & (colour <= hi.astype(np.int64) + 3), axis=2)
        ok[ring] = inside[ring]
    assert ok[fill].mean() > 0.97, f"{ok[fill].mean():.1%} of fill texels within the colours around them"
    # Views from below show the unseen underside of the nose and chin: no green anywhere on the face.
    centre = np.asarray(rec.vertices, dtype=np.float64).mean(axis=0)
    transforms = []
    for pitch in (25.0, 40.0):
        rot = geometry.head_rotation_from_pitchyaw(np.radians(pitch), 0.0) @ rec.head_rotation.T
        T = np.eye(4)
        T[:3, :3] = rot
        T[:3, 3] = np.array([0.0, 0.0, geometry.NORM_DISTANCE]) - rot @ centre
        transforms.append(T)
    renderer = FaceRenderer()
    try:
        batch = renderer.render(textured.texture, textured.mesh, np.stack(transforms), with_seen=True)
    finally:
        renderer.release()
    assert batch.seen is not None
    for b in range(len(transforms)):
        face = batch.alpha[b] > 0
        assert np.count_nonzero(greenish(batch.color[b]) & face) == 0, "the completion shows unseen texels"
        assert np.count_nonzero(face & (batch.seen[b] == 0)) > 1000, "the view shows completed texels"


def test_the_atlas_is_deterministic(template: FaceTemplate, landmark_map: np.ndarray) -> None:
    rec = record_at(template, landmark_map, 30.0, -10.0)
    frame = painted_frame(rec, smooth_colour((720, 1280)))
    a = build_render_mesh(rec, frame, TemplateChart.of(template))
    b = build_render_mesh(rec, frame.copy(), TemplateChart.of(template))  # a fresh layout, as in another worker
    assert a.texture.tobytes() == b.texture.tobytes()
    assert a.mesh.seen.tobytes() == b.mesh.seen.tobytes()
    assert a.mesh.texcoords.tobytes() == b.mesh.texcoords.tobytes()


def test_a_subdivided_record_gets_the_subdivided_chart(
    template: FaceTemplate, chart: TemplateChart, landmark_map: np.ndarray
) -> None:
    rec = record_at(template, landmark_map, 20.0, 0.0)
    sub = subdivision(template.faces, template.mirror, 1)
    v = sub.apply(rec.vertices)
    fine = ReconRecord(**{**rec.__dict__, "vertices": v.astype(np.float32), "faces": sub.faces, "mirror": sub.mirror,
                          "uv": geometry.project(v, K).astype(np.float32),
                          "visible": visible_vertices(v, sub.faces, K)})  # fmt: skip
    frame = painted_frame(fine, smooth_colour((720, 1280)))
    textured = build_render_mesh(fine, frame, chart)
    coarse = chart.layout(len(template.vertices))
    layout = chart.layout(len(v))
    # The template's vertices keep their texels; the chart covers the same texels.
    np.testing.assert_allclose(layout.texcoords[: len(template.vertices)], coarse.texcoords, atol=1e-4)
    assert abs(int(layout.inside.sum()) - int(coarse.inside.sum())) < 0.01 * coarse.inside.sum()
    assert textured.mesh.texcoords.shape == (len(v), 2)
    assert not greenish(textured.texture).any()
    plain = build_atlas(rec, frame, coarse)
    both = (textured.atlas.own > 0.99) & (plain.own > 0.99)
    diff = np.abs(textured.texture.astype(int) - plain.texture.astype(int)).max(axis=2)[both]
    assert both.sum() > 0.5 * coarse.inside.sum() and np.median(diff) <= 2


def test_push_pull_keeps_what_is_known_and_fills_within_its_range() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(50, 200, size=(64, 64, 3)).astype(np.float32)
    weights = np.zeros((64, 64), np.float32)
    weights[10:30, 5:25] = 1.0
    weights[40:60, 40:60] = 0.5
    out = push_pull(values, weights)
    np.testing.assert_allclose(out[weights == 1], values[weights == 1], atol=1e-3)
    known = values[weights > 0]
    assert np.all(out >= known.min(axis=0) - 1e-3) and np.all(out <= known.max(axis=0) + 1e-3)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize(("yaw", "pitch"), [(35.0, 0.0), (-25.0, 15.0)])
def test_own_texels_showing_the_scene_beside_a_too_wide_fit_are_completed(
    template: FaceTemplate, chart: TemplateChart, landmark_map: np.ndarray, yaw: float, pitch: float
) -> None:
    """The fitted mesh is wider than the face: a 15 px band inside its projected outline shows the (green) scene.

    Judged in the face region outside the interior landmarks (jaw and cheeks): there the fit misses the face.
    """
    rec = record_at(template, landmark_map, yaw, pitch)
    layout = chart.layout(len(rec.vertices))
    face = painted_frame(rec, smooth_colour((720, 1280)))
    outline = np.zeros((720, 1280), dtype=np.uint8)
    for t in np.round(np.asarray(rec.uv, np.float64)[np.asarray(rec.faces)] * 16).astype(np.int32):
        cv2.fillConvexPoly(outline, t, 1, cv2.LINE_8, 4)
    band = (outline > 0) & (cv2.distanceTransform(outline, cv2.DIST_L2, 5) < 15.0)
    frame = face.copy()
    frame[band] = GREEN
    atlas = build_atlas(rec, frame, layout)
    plain = build_atlas(rec, face, layout)
    # The face region outside the interior landmarks' hull (the part the colour test judges).
    dist = np.stack([face_region_distance(rec), -interior_distance(rec)], axis=1)
    region = (cv2.resize(layout.half.interpolate(dist), (layout.size, layout.size)) > 0).all(axis=2) & layout.inside
    own_green = greenish(unwrap(rec, frame, layout).colour) & region
    assert own_green.sum() > 1000
    # Those texels are not the source's own any more, and the completed face shows no green ...
    assert np.mean(atlas.own[own_green] < 0.05) > 0.95
    assert np.mean(greenish(atlas.texture)[region]) < 0.005  # the fidelity issue's bound on background texels
    # ... while the face's own texels away from the band stay its own (the colour test keeps them).
    away = region & ~cv2.dilate(own_green.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert np.mean(atlas.own[away] > 0.99) > 0.95 * np.mean(plain.own[away] > 0.99)
