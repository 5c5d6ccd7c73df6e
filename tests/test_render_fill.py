"""Unseen-region fill of the render mesh (render/mesh.py) on records made like recon makes them.

The face template is placed in a 1280x720 camera at known poses; visibility is
:func:`recon.visibility.visible_vertices` (what ``nvsynth recon`` stores), the
68 landmarks come from the shared dlib -> template map, so the eye and nose
regions are those of a real record.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from render_records import posed_record

from nvsynth.core import geometry, ibug68
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.template import FaceTemplate, load_template
from nvsynth.recon.visibility import visible_vertices
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import (
    KIND_FALLBACK,
    KIND_MIRROR,
    KIND_OWN,
    MIN_MIRROR_PATCH_MM2,
    build_render_mesh,
    classify_triangles,
    eye_triangles,
    fill_texcoords,
    footprints_seen,
    small_patches,
    triangle_quality,
)

K = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
GREEN = np.array([0, 255, 0])


@pytest.fixture(scope="module")
def template(template_path: Path) -> FaceTemplate:
    return load_template(template_path)


@pytest.fixture(scope="module")
def landmark_map(shared: Path) -> np.ndarray:
    return np.array(json.loads((shared / "assets" / "dlib68_to_mp468.json").read_text())["empirical"])


def record_at(template: FaceTemplate, landmark_map: np.ndarray, yaw_deg: float, pitch_deg: float) -> ReconRecord:
    R = geometry.head_rotation_from_pitchyaw(np.radians(pitch_deg), np.radians(yaw_deg))
    t = np.array([20.0, -10.0, 600.0])
    visible = visible_vertices(template.vertices @ R.T + t, template.faces, K)
    return posed_record(template, R, t, K, visible, landmark_map)


def nose_region(template: FaceTemplate, landmark_map: np.ndarray, radius_mm: float = 15.0) -> np.ndarray:
    """Triangles within ``radius_mm`` of the nose base (ibug68.LOWER_NOSE: nostrils, alae, columella)."""
    centroids = template.vertices[template.faces].mean(axis=1)
    base = template.vertices[landmark_map[ibug68.LOWER_NOSE]]
    return np.linalg.norm(centroids[:, None] - base[None], axis=2).min(axis=1) < radius_mm


@pytest.mark.parametrize("pitch", [0.0, 10.0])
def test_a_frontal_source_textures_its_nose_from_its_own_pixels(
    template: FaceTemplate, landmark_map: np.ndarray, pitch: float
) -> None:
    rec = record_at(template, landmark_map, 0.0, pitch)
    kinds = classify_triangles(rec)
    nose = nose_region(template, landmark_map)
    assert nose.sum() > 80
    # The nostrils and alae of a frontal face are in plain view: neither mirrored nor filled.
    assert np.all(kinds[nose] == KIND_OWN), np.bincount(kinds[nose], minlength=3)
    assert np.count_nonzero(kinds == KIND_OWN) > 0.9 * len(kinds)


@pytest.mark.parametrize(("yaw", "pitch"), [(0.0, 0.0), (0.0, -20.0), (-15.0, 0.0), (30.0, 5.0), (-45.0, 0.0)])
def test_fill_is_used_only_where_neither_the_triangle_nor_its_mirror_was_seen(
    template: FaceTemplate, landmark_map: np.ndarray, yaw: float, pitch: float
) -> None:
    rec = record_at(template, landmark_map, yaw, pitch)
    kinds = classify_triangles(rec)
    _, _, own_ok, mir_ok = triangle_quality(rec)
    eyes = eye_triangles(rec)
    seen_eyes = [k for k in (1, 2) if np.any(own_ok & (eyes == k))]
    fill = kinds == KIND_FALLBACK
    assert not np.any(fill & own_ok)
    # A usable mirror is declined only inside an eye the source saw (its iris must not be mirrored),
    # or for a speck of mirrored texels smaller than MIN_MIRROR_PATCH_MM2.
    declined = fill & mir_ok & ~np.isin(eyes, seen_eyes)
    assert np.all(small_patches(rec.vertices, rec.faces, declined, MIN_MIRROR_PATCH_MM2)[declined])
    assert not np.any((kinds == KIND_MIRROR) & np.isin(eyes, seen_eyes))
    assert np.all(own_ok[kinds == KIND_OWN]) and np.all(mir_ok[kinds == KIND_MIRROR])


@pytest.mark.parametrize(("yaw", "pitch"), [(0.0, -20.0), (-45.0, 0.0)])
def test_fill_is_continuous_and_samples_only_seen_texels(
    template: FaceTemplate, landmark_map: np.ndarray, yaw: float, pitch: float
) -> None:
    rec = record_at(template, landmark_map, yaw, pitch)
    mesh = build_render_mesh(rec)
    kinds = mesh.kinds
    assert kinds is not None
    fill = np.flatnonzero(kinds == KIND_FALLBACK)
    assert len(fill) > 10
    tc = mesh.texcoords[mesh.faces[fill]].astype(np.float64)  # (n, 3, 2)
    flat = np.all(np.ptp(tc, axis=1) == 0, axis=1)
    assert flat.mean() < 0.35, "most fill carries a texture gradient, not one flat colour"
    _, _, own_ok, _ = triangle_quality(rec)
    seen_faces = np.asarray(rec.faces)[own_ok]
    assert np.all(footprints_seen(rec.uv, seen_faces, tc[~flat]))
    # Flat triangles sample one texel: a vertex's (a donor's), itself on seen texels.
    if flat.any():
        nearest = np.linalg.norm(tc[flat, 0][:, None] - rec.uv[None].astype(np.float64), axis=2).min(axis=1)
        assert np.all(nearest < 1e-3)
        assert np.all(footprints_seen(rec.uv, seen_faces, tc[flat]))
    # Fill meets its neighbours without a seam: at a vertex it shares with an own triangle, a fill triangle
    # samples that vertex's own texel, or a point at most halfway to the donors' texel where the footprint
    # would otherwise leave the seen texels.
    in_own = np.zeros(len(rec.vertices), dtype=bool)
    in_own[np.asarray(rec.faces)[kinds == KIND_OWN].reshape(-1)] = True
    corner = np.asarray(rec.faces)[fill]
    shared = in_own[corner] & ~flat[:, None]
    assert shared.sum() > 10
    own_texel = np.asarray(rec.uv, dtype=np.float64)[corner]
    donor_texel = fill_texcoords(rec, kinds)[0][corner]
    offset = np.linalg.norm(tc - own_texel, axis=2)
    assert np.mean(offset[shared] < 1e-3) > 0.4
    assert np.mean(offset[shared] <= 0.5 * np.linalg.norm(donor_texel - own_texel, axis=2)[shared] + 1e-3) > 0.7


def test_fill_pixels_take_the_colours_of_their_seen_neighbourhood(
    template: FaceTemplate, landmark_map: np.ndarray
) -> None:
    """A smooth source texture, green wherever the source did not see the surface: the fill shows no green,
    and its colours lie within the range of the seen pixels around it (no flat patches of an odd colour)."""
    rec = record_at(template, landmark_map, 0.0, -20.0)  # a face seen from above: nostrils and chin unseen
    _, _, own_ok, _ = triangle_quality(rec)
    yy, xx = np.mgrid[0:720, 0:1280].astype(np.float64)
    smooth = np.stack(  # BGR, never greenish: G <= 120 <= R
        [120 + 60 * np.sin(xx / 61.0), 90 + 30 * np.cos(yy / 47.0), 170 + 50 * np.sin((xx + yy) / 83.0)], axis=-1
    )
    painted = np.zeros((720, 1280), dtype=np.uint8)
    uv = np.asarray(rec.uv, dtype=np.float64)
    for t in np.asarray(rec.faces)[own_ok]:
        cv2.fillConvexPoly(painted, np.round(uv[t] * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    frame = np.where(painted[..., None] > 0, np.round(smooth), GREEN).astype(np.uint8)
    mesh = build_render_mesh(rec)
    assert mesh.kinds is not None
    # Views from below show the unseen underside of the nose and chin.
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
        batch = renderer.render(frame, mesh, np.stack(transforms), with_seen=True)
    finally:
        renderer.release()
    assert batch.seen is not None
    checked = 0
    for b in range(len(transforms)):
        face = batch.alpha[b] > 0
        colour = batch.color[b].astype(np.int64)
        greenish = (colour[..., 1] > colour[..., 2] + 40) & (colour[..., 1] > colour[..., 0] + 40) & face
        # Only specks where bilinear sampling at a footprint's edge reaches the next texel.
        assert np.count_nonzero(greenish & (batch.seen[b] < 255)) < 0.001 * face.sum(), "fill shows unseen texels"
        assert greenish.sum() < 0.002 * face.sum()
        own = face & (batch.seen[b] == 255)
        # Fill pixels well inside fill regions (the seen attribute is exactly 0 around them).
        filled = cv2.erode((face & (batch.seen[b] == 0)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ys, xs = np.nonzero(filled)
        assert len(ys) > 300
        r = 40
        lo = np.stack(
            [
                cv2.erode(np.where(own, colour[..., c], 255).astype(np.uint8), np.ones((2 * r + 1,) * 2))
                for c in range(3)
            ],
            -1,
        )
        hi = np.stack(
            [
                cv2.dilate(np.where(own, colour[..., c], 0).astype(np.uint8), np.ones((2 * r + 1,) * 2))
                for c in range(3)
            ],
            -1,
        )
        has_nb = cv2.dilate(own.astype(np.uint8), np.ones((2 * r + 1,) * 2))[ys, xs] > 0
        inside = np.all(
            (colour[ys, xs] >= lo[ys, xs].astype(np.int64) - 3) & (colour[ys, xs] <= hi[ys, xs] + 3), axis=1
        )
        assert inside[has_nb].mean() > 0.95, f"view {b}: {inside[has_nb].mean():.1%} of fill pixels in range"
        checked += int(has_nb.sum())
    assert checked > 300
