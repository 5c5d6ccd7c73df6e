"""The eyeball model: Listing rotations, kappa and centre fitted back from a known eyeball, blinks, the recon report.

The records are real: ``nvsynth recon`` with the mediapipe backend on the
bundled sample. For the fit, each record's iris centre is replaced by the
projection of a known eyeball's iris (known kappa and centre offset) looking
at a chosen target, so the truth is exact.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nvsynth.core import geometry
from nvsynth.datasets.mpii import Camera
from nvsynth.recon.eyeball import (
    EAR_CLOSED,
    FORWARD,
    EyeballModel,
    eye_aspect_ratio,
    eye_centres,
    listing_rotation,
    orientation_towards,
    source_eyes,
)
from nvsynth.recon.eyeball_fit import fit_eyeball, listing_rotations
from nvsynth.recon.record import ReconRecord
from tests.eye_scenes import closed_contour


def test_listing_rotation_takes_forward_to_the_direction_without_torsion() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(size=(20, 3))
    d[:, 2] = -np.abs(d[:, 2])
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    batch = listing_rotations(d)
    for di, Rb in zip(d, batch, strict=True):
        R = listing_rotation(di)
        np.testing.assert_allclose(R @ FORWARD, di, atol=1e-12)
        np.testing.assert_allclose(R, Rb, atol=1e-12)
        axis = _axis(R)
        assert abs(axis @ FORWARD) < 1e-9  # Listing's law: the axis lies in the plane perpendicular to FORWARD
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)


def _axis(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    v = Rotation.from_matrix(R).as_rotvec()
    return v / np.linalg.norm(v)


def test_orientation_towards_points_the_visual_axis_at_the_target() -> None:
    model = EyeballModel(kappa_deg=(2.0, 6.0))
    R = geometry.head_rotation_from_pitchyaw(0.2, -0.3)
    centre = np.array([10.0, -20.0, 500.0])
    target = np.array([-150.0, 80.0, 20.0])
    for eye in (0, 1):
        Q = orientation_towards(model, R, centre, target, eye)
        v = Q @ model.visual_axis(eye)
        assert geometry.angular_error_deg(v, target - centre) < 1e-6
        # kappa is nasal: the visual axis of the right eye (0) lies toward +x of the head, the left eye's toward -x
        assert np.sign((R.T @ v - R.T @ (Q @ FORWARD))[0]) == (1 if eye == 0 else -1)


def known_eyeball_records(records: list[ReconRecord], truth: EyeballModel, seed: int = 0) -> list[ReconRecord]:
    """Copies of ``records`` (5 per record) whose irises are those of ``truth`` looking at random targets."""
    rng = np.random.default_rng(seed)
    out = []
    for rec in records:
        cam = Camera(rec.camera_matrix, rec.dist_coeffs)
        c = eye_centres(rec.vertices, rec.head_rotation, truth.offset_mm)
        face = geometry.HeadPose.from_rvec(rec.annotation_rvec, rec.annotation_tvec).face_center()
        for _ in range(5):
            py = np.radians(rng.uniform(-25, 25, size=2))
            g = np.asarray(rec.head_rotation) @ geometry.vector_from_pitchyaw(py)
            target = face + rng.uniform(400, 800) * g
            iris = np.array(rec.iris_2d, dtype=np.float64)
            for eye in (0, 1):
                Q = orientation_towards(truth, rec.head_rotation, c[eye], target, eye)
                pole = c[eye] + truth.iris_depth_mm * (Q @ FORWARD)  # the limbus centre
                iris[eye, :, :] += cam.project(pole[None], distort=True)[0] - iris[eye, 0]
            out.append(dataclasses.replace(rec, iris_2d=iris.astype(np.float32), gaze_target=target))
    return out


def test_fit_recovers_kappa_and_centre_of_a_known_eyeball(sample_records: list[ReconRecord]) -> None:
    truth = EyeballModel(kappa_deg=(1.5, 4.0), offset_mm=(0.8, -2.5, 8.0))
    recs = known_eyeball_records(sample_records, truth)
    model = fit_eyeball(recs)
    assert model is not None and model.frames == len(recs)
    np.testing.assert_allclose(model.kappa_deg, truth.kappa_deg, atol=0.3)
    np.testing.assert_allclose(model.offset_mm, truth.offset_mm, atol=0.5)
    assert model.residual_median_deg < 0.2
    assert model.residual_prior_median_deg > 1.0  # the prior parameters alone do not reproduce the labels
    # and the model reproduces each frame's eyes: visual axes at the target
    for rec in recs[:5]:
        eyes = source_eyes(rec, model)
        assert geometry.angular_error_deg(eyes.visual, rec.gaze_target - eyes.centres).max() < 0.6


def test_closed_eyes_are_detected_and_left_out(sample_records: list[ReconRecord]) -> None:
    rec = sample_records[0]
    assert np.all(eye_aspect_ratio(rec.eye_contour_2d) > 0.3)  # the portrait's eyes are open
    shut = dataclasses.replace(rec, eye_contour_2d=closed_contour(rec.eye_contour_2d, eye=1))
    ear = eye_aspect_ratio(shut.eye_contour_2d)
    assert ear[1] < EAR_CLOSED <= ear[0]
    assert not source_eyes(shut, EyeballModel()).open
    model = fit_eyeball([*sample_records, shut])
    assert model is not None and model.frames == len(sample_records) and model.frames_closed == 1


def test_records_without_irises_give_no_model(sample_records: list[ReconRecord]) -> None:
    bare = dataclasses.replace(sample_records[0], iris_2d=None, eye_contour_2d=None)
    assert fit_eyeball([bare]) is None


def test_recon_reports_kappa_and_residual_per_subject(
    sample_recon: tuple[Path, str], sample_records: list[ReconRecord]
) -> None:
    from nvsynth.recon.eyeball import eyeball_path

    obj, printed = sample_recon
    model = EyeballModel.load(eyeball_path(obj / "p00"))
    assert model.report("p00") in printed  # `nvsynth recon` prints kappa, centre and residual per subject
    assert "kappa" in printed and "residual" in printed
    assert model.frames == 6 and np.isfinite(model.residual_median_deg)
    refit = fit_eyeball(sample_records)
    assert refit is not None
    np.testing.assert_allclose(model.kappa_deg, refit.kappa_deg, atol=1e-9)
