"""Label geometry of novel views (render/views.py), on the real template placed with known poses."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from render_records import make_record, random_pose

from nvsynth.core import geometry, ibug68
from nvsynth.core.seeding import STREAM_POSE, view_rng
from nvsynth.render.patterns import Pattern
from nvsynth.render.views import (
    FACE_CENTER_NORM,
    apply_rigid,
    make_view,
    normalize_record,
    pose_norm_deg,
    sample_view,
)


@pytest.fixture(scope="module")
def records(template_path: Path, shared: Path) -> list:
    rng = np.random.default_rng(7)
    out = []
    for i in range(6):
        rot, t = random_pose(rng)
        target = np.array([rng.uniform(-250, 250), rng.uniform(-80, 200), rng.uniform(-30, 30)])
        out.append(make_record(template_path, shared, rot, t, target, frame_index=i))
    return out


def _views(rec, pattern: Pattern, n: int, seed: int = 3) -> list:
    src = normalize_record(rec)
    out = []
    for v in range(n):
        rng = view_rng(seed, rec.subject, rec.frame_index, v, STREAM_POSE)
        s = sample_view(src, pattern, rng, rec.landmarks_3d, max_pose_deg=80.0, max_attempts=20)
        assert s.view is not None, s.reason
        out.append(s.view)
    return out


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(geometry.angular_error_deg(geometry.vector_from_pitchyaw(a), geometry.vector_from_pitchyaw(b)))


def test_source_pattern_reproduces_zhang_labels(records: list) -> None:
    worst_gaze = worst_head = 0.0
    for rec in records:
        pose = geometry.HeadPose.from_rvec(rec.annotation_rvec, rec.annotation_tvec)
        norm = geometry.normalize(pose, rec.camera_matrix)
        want_gaze = norm.gaze_pitchyaw(rec.gaze_target)
        want_head = norm.head_pitchyaw()
        (view,) = _views(rec, Pattern("source"), 1)
        worst_gaze = max(worst_gaze, _angle_deg(view.face_gaze, want_gaze))
        worst_head = max(worst_head, np.degrees(np.abs(view.face_head_pose - want_head)).max())
        np.testing.assert_allclose(view.rotation_matrix, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(view.face_mat_norm, norm.rotation, atol=1e-15)
    assert worst_gaze < 0.01
    assert worst_head < 0.01


def test_gaze_in_head_coordinates_is_constant_across_views(records: list) -> None:
    patterns = [Pattern("gaussian", sigma=np.radians(25.0)), Pattern("gaussian", sigma=np.radians(20.0), on="gaze")]
    worst = 0.0
    for rec in records:
        src = normalize_record(rec)
        ref = src.gaze_in_head
        for pat in patterns:
            for view in _views(rec, pat, 12):
                gh = view.head_rotation.T @ view.gaze
                worst = max(worst, float(geometry.angular_error_deg(gh, ref)))
                # the same from the stored labels alone
                H = geometry.head_rotation_from_pitchyaw(*view.face_head_pose)
                g = geometry.vector_from_pitchyaw(view.face_gaze)
                worst = max(worst, float(geometry.angular_error_deg(H.T @ g, ref)))
    assert worst < 0.01


def test_head_labels_are_the_target_and_transform_is_rigid(records: list) -> None:
    for rec in records:
        for view in _views(rec, Pattern("gaussian", sigma=np.radians(25.0)), 8):
            np.testing.assert_allclose(view.face_head_pose, view.target, atol=1e-9)
            A = view.transform[:3, :3]
            np.testing.assert_allclose(A @ A.T, np.eye(3), atol=1e-12)
            assert np.linalg.det(A) == pytest.approx(1.0, abs=1e-12)
            np.testing.assert_allclose(view.transform[3], [0, 0, 0, 1])
            # the face centre sits on the optical axis at 300 mm in every view
            pose = geometry.HeadPose.from_rvec(rec.annotation_rvec, rec.annotation_tvec)
            np.testing.assert_allclose(apply_rigid(view.transform, pose.face_center()), FACE_CENTER_NORM, atol=1e-9)
            # rotation_matrix is the rotation that takes the normalized source to the view
            np.testing.assert_allclose(A, view.rotation_matrix @ view.face_mat_norm, atol=1e-12)


def test_label_signs(records: list) -> None:
    d = np.radians(20.0)
    for rec in records:
        src = normalize_record(rec)
        ps, ys = src.pose
        base = make_view(src, src.pose, rec.landmarks_3d)
        left = make_view(src, (ps, ys + d), rec.landmarks_3d)
        right = make_view(src, (ps, ys - d), rec.landmarks_3d)
        up = make_view(src, (ps + d, ys), rec.landmarks_3d)
        down = make_view(src, (ps - d, ys), rec.landmarks_3d)
        # a pure yaw change about the head's vertical axis adds exactly to the gaze yaw
        np.testing.assert_allclose(left.face_gaze - base.face_gaze, [0.0, d], atol=1e-9)
        np.testing.assert_allclose(right.face_gaze - base.face_gaze, [0.0, -d], atol=1e-9)
        assert up.face_gaze[0] > base.face_gaze[0] > down.face_gaze[0]

        # positive yaw turns the face toward image-left: the nose tip moves left of the eyes' midpoint
        def nose_offset(v) -> np.ndarray:
            eyes = v.landmarks_norm[ibug68.MPII_SIX[:4]].mean(axis=0)  # the four eye corners
            return v.landmarks_norm[ibug68.NOSE_TIP] - eyes

        assert nose_offset(left)[0] < nose_offset(base)[0] < nose_offset(right)[0]
        # positive pitch turns the face up: the nose tip rises toward the eyes
        assert nose_offset(up)[1] < nose_offset(base)[1] < nose_offset(down)[1]
    # gaze toward image-left and up is labelled positive yaw and positive pitch
    assert np.all(geometry.pitchyaw_from_vector([-0.3, -0.3, -1.0]) > 0)


def test_source_landmarks_match_zhang_warp_at_300mm(template_path: Path, shared: Path) -> None:
    """At 300 mm Zhang's S is the identity, so the rigid normalization equals his image warp."""
    rng = np.random.default_rng(11)
    worst = 0.0
    for _ in range(4):
        rot, t = random_pose(rng)
        target = np.array([0.0, 50.0, 0.0])
        # move the head along its ray until the annotated face centre is 300 mm away
        for _ in range(3):
            rec = make_record(template_path, shared, rot, t, target)
            c = geometry.HeadPose.from_rvec(rec.annotation_rvec, rec.annotation_tvec).face_center()
            t = t + c * (geometry.NORM_DISTANCE / np.linalg.norm(c)) - c
        rec = make_record(template_path, shared, rot, t, target)
        pose = geometry.HeadPose.from_rvec(rec.annotation_rvec, rec.annotation_tvec)
        norm = geometry.normalize(pose, rec.camera_matrix)
        assert np.linalg.norm(norm.face_center) == pytest.approx(300.0, abs=0.5)
        warped = cv2.perspectiveTransform(rec.landmarks_2d.reshape(-1, 1, 2).astype(np.float64), norm.warp)
        want = geometry.render_to_patch_pixels(warped.reshape(-1, 2))
        view = make_view(normalize_record(rec), normalize_record(rec).pose, rec.landmarks_3d)
        worst = max(worst, float(np.abs(view.landmarks_norm - want).max()))
    # residual: S differs from identity by the 0.5 mm left from the annotation's PnP
    print("worst landmark deviation from the warp, px:", worst)
    assert worst < 0.05


def test_source_eye_and_mouth_landmarks_centre_on_the_patch(records: list) -> None:
    for rec in records:
        (view,) = _views(rec, Pattern("source"), 1)
        six = view.landmarks_norm[ibug68.MPII_SIX]
        centre = geometry.render_to_patch_pixels([[224.0, 224.0]])[0]
        # the face centre (mean of the six model points) projects to the patch centre; the
        # fitted landmarks' mean lies within a few pixels of it
        assert np.linalg.norm(six.mean(axis=0) - centre) < 4.0


def test_resampling_is_bounded(records: list) -> None:
    rec = records[0]
    src = normalize_record(rec)
    calls = []

    def too_far(rng: np.random.Generator, source) -> np.ndarray:
        calls.append(1)
        return np.radians([60.0, 70.0])  # norm 92 deg

    s = sample_view(src, too_far, np.random.default_rng(0), rec.landmarks_3d, 80.0, 7)
    assert s.view is None and s.attempts == 7 and len(calls) == 7
    assert "80" in s.reason and "92.2" in s.reason

    def unreachable(rng: np.random.Generator, source) -> None:
        return None

    s = sample_view(src, unreachable, np.random.default_rng(0), rec.landmarks_3d, 80.0, 5)
    assert s.view is None and s.attempts == 5 and "5 unreachable" in s.reason

    # a very wide pattern: accepted views respect the limit, and every view ends
    wide = Pattern("gaussian", sigma=np.radians(120.0))
    outcomes = [
        sample_view(src, wide, view_rng(0, "p00", 0, v, STREAM_POSE), rec.landmarks_3d, 30.0, 3) for v in range(40)
    ]
    assert any(o.view is None for o in outcomes) and any(o.view is not None for o in outcomes)
    for o in outcomes:
        assert 1 <= o.attempts <= 3
        if o.view is not None:
            assert pose_norm_deg(o.view.face_head_pose) <= 30.0


def test_gaze_mode_puts_the_gaze_on_the_drawn_target(records: list) -> None:
    sigma = np.radians(20.0)
    pat = Pattern("gaussian", sigma=sigma, on="gaze")
    checked = 0
    for rec in records:
        src = normalize_record(rec)
        for v in range(10):
            s = sample_view(src, pat, view_rng(5, "p00", rec.frame_index, v, STREAM_POSE), rec.landmarks_3d, 80.0, 20)
            if s.view is None or s.attempts != 1:
                continue
            drawn = view_rng(5, "p00", rec.frame_index, v, STREAM_POSE).normal(0.0, sigma, size=2)
            np.testing.assert_allclose(s.view.face_gaze, drawn, atol=1e-9)
            checked += 1
    assert checked >= 30
