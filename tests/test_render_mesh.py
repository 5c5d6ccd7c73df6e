"""Render meshes of turned heads (render/mesh.py, render/atlas.py), on real renders: the texture atlas, ``seen``
and the face mask.

Sources are the face template posed in a 1280x720 camera, with a synthetic
frame whose seen triangles are painted flat in a left/right symmetric colour
(green elsewhere), so a render shows at once whether a pixel's texel is the
triangle's own, its mirror's, or the source's background.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from render_records import posed_record
from render_scenes import CENTRE, K_NORM, decode_ids, id_mesh, transform, turn_about

from nvsynth.core import geometry, ibug68
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.template import FaceTemplate
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import build_render_mesh, occlusion_visible
from nvsynth.render.uvlayout import TemplateChart

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
    brows = geometry.project(transform(verts[lmap[ibug68.BROWS]], T), K_NORM)
    ys = np.nonzero(mask)[0]
    assert ys.min() >= brows[:, 1].min() - 2
    # The jaw line bounds it from below.
    jaw = geometry.project(transform(verts[lmap[ibug68.JAW]], T), K_NORM)
    assert abs(ys.max() - jaw[:, 1].max()) <= 3

