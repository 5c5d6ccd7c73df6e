"""Render meshes of turned heads (render/mesh.py), on real renders: mirror fill, ``seen`` and the face mask.

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
from nvsynth.render.mesh import (
    KIND_FALLBACK,
    KIND_MIRROR,
    KIND_OWN,
    build_render_mesh,
    footprints_seen,
    occlusion_visible,
)

SOURCE_K = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
GREEN = (0, 255, 0)


def source_record(template: FaceTemplate, yaw_deg: float, pitch_deg: float = 0.0) -> ReconRecord:
    R = geometry.head_rotation_from_pitchyaw(np.radians(pitch_deg), np.radians(yaw_deg))
    t = np.array([30.0, -20.0, 550.0])
    visible = occlusion_visible(template.vertices @ R.T + t, template.faces)  # the template's winding points outwards
    lm_idx = np.linspace(0, len(template.vertices) - 1, 68).astype(int)
    return posed_record(template, R, t, SOURCE_K, visible, lm_idx)


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


def test_mirror_fill_is_per_triangle_and_unwelded(template: FaceTemplate) -> None:
    rec = source_record(template, yaw_deg=50.0)
    mesh = build_render_mesh(rec)
    kinds = mesh.kinds
    assert kinds is not None
    assert np.count_nonzero(kinds == KIND_MIRROR) > 50, "a 50-degree yaw hides much of the far side"
    assert np.count_nonzero(kinds == KIND_OWN) > 400
    # No render triangle mixes own and filled texels.
    seen_per_tri = mesh.seen[mesh.faces]
    assert np.all(seen_per_tri.min(axis=1) == seen_per_tri.max(axis=1))
    assert np.array_equal(seen_per_tri[:, 0] == 1, kinds == KIND_OWN)
    # Positions are those of the record's triangles, corner for corner.
    np.testing.assert_allclose(mesh.positions[mesh.faces], rec.vertices[rec.faces], atol=1e-5)
    # Mirrored triangles read the mirror vertices' texels; own ones their own.
    uv = rec.uv
    mirror_tris = np.flatnonzero(kinds == KIND_MIRROR)
    np.testing.assert_allclose(mesh.texcoords[mesh.faces[mirror_tris]], uv[rec.mirror[rec.faces[mirror_tris]]])
    own = np.flatnonzero(kinds == KIND_OWN)
    np.testing.assert_allclose(mesh.texcoords[mesh.faces[own]], uv[rec.faces[own]])
    # Every mirrored triangle's source triangle was seen by the camera.
    assert np.all(rec.visible[rec.mirror[rec.faces[mirror_tris]]])
    # Fill triangles sample only texels the source saw (a footprint on seen texels), or are flat (one texel).
    fb = np.flatnonzero(kinds == KIND_FALLBACK)
    tc = mesh.texcoords[mesh.faces[fb]].astype(np.float64)
    usable = rec.visible[rec.faces].all(axis=1)
    assert np.all(footprints_seen(uv, rec.faces[usable], tc) | np.all(np.ptp(tc, axis=1) == 0, axis=1))
    # Welded where nothing changes: fewer render vertices than corners.
    assert len(template.vertices) <= len(mesh.positions) < 3 * len(template.faces)


@pytest.mark.parametrize("source_yaw", [-45.0, 30.0])
def test_turned_heads_show_the_mirror_texture_where_the_source_saw_nothing(
    renderer: FaceRenderer, template: FaceTemplate, source_yaw: float
) -> None:
    rec = source_record(template, yaw_deg=source_yaw)
    frame = source_frame(rec, template)
    mesh = build_render_mesh(rec)
    kinds = mesh.kinds
    assert kinds is not None
    ids_mesh, ids_tex = id_mesh(np.asarray(rec.vertices, dtype=np.float64), template.faces)
    T = np.stack([view_of(rec, (0.0, y)) for y in (-np.sign(source_yaw) * 40.0, 0.0)])
    batch = renderer.render(frame, mesh, T, with_seen=True)
    id_batch = renderer.render(ids_tex, ids_mesh, T)
    expected = symmetric_colour(template.vertices[template.faces].mean(axis=1))
    checked = {KIND_OWN: 0, KIND_MIRROR: 0}
    for b in range(len(T)):
        ids = decode_ids(id_batch.color[b])
        face = batch.alpha[b] > 0
        assert np.array_equal(face, ids >= 0), "same geometry, same coverage"
        px = batch.color[b][face].astype(int)
        greenish = (px[:, 1] > px[:, 2] + 40) & (px[:, 1] > px[:, 0] + 40)
        assert greenish.mean() < 0.002, f"{greenish.mean():.2%} of the face shows the source's background"
        # Pixels deep inside one triangle show that triangle's own colour, or its mirror's (the same colour).
        same = np.ones_like(face)
        for dy, dx in ((-4, 0), (4, 0), (0, -4), (0, 4), (-3, -3), (3, 3), (-3, 3), (3, -3)):
            same &= np.roll(ids, (dy, dx), axis=(0, 1)) == ids
        ys, xs = np.nonzero(same & face)
        tri = ids[ys, xs]
        for kind in (KIND_OWN, KIND_MIRROR):
            sel = kinds[tri] == kind
            err = np.abs(batch.color[b][ys[sel], xs[sel]].astype(float) - np.round(expected[tri[sel]])).max(axis=1)
            # Own triangles seen obliquely are thin slivers in the source: near their edges bilinear
            # sampling picks up the neighbour's (similar) colour.
            assert np.mean(err <= 3) > (0.95 if kind == KIND_OWN else 0.97), f"view {b}, kind {kind}"
            assert np.mean(err <= 20) > 0.99, f"view {b}, kind {kind}"
            checked[kind] += int(sel.sum())
            assert np.all(batch.seen[b][ys[sel], xs[sel]] == (255 if kind == KIND_OWN else 0))
    assert checked[KIND_MIRROR] > 3000, "the turned view shows a good deal of mirrored texture"


def test_face_mask_is_inside_the_rendered_face_and_excludes_the_forehead(
    renderer: FaceRenderer, template: FaceTemplate, shared: Path
) -> None:
    import json

    lmap = np.array(json.loads((shared / "assets" / "dlib68_to_mp468.json").read_text())["empirical"])
    rec = source_record(template, yaw_deg=10.0)
    verts = np.asarray(rec.vertices, dtype=np.float64)
    rec = ReconRecord(**{**rec.__dict__, "landmarks_3d": verts[lmap].astype(np.float32)})
    mesh = build_render_mesh(rec)
    centre = verts.mean(axis=0)
    rot = rec.head_rotation.T
    T = np.eye(4)
    T[:3, :3] = rot
    T[:3, 3] = CENTRE + np.array([0.0, 0.0, 80.0]) - rot @ centre
    batch = renderer.render(source_frame(rec, template), mesh, T[None])
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
