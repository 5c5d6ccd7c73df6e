"""The fitted mesh agrees with the frame's annotation: rotation prior, depth placement, limit, dense points."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
from render_records import posed_record
from scipy.spatial.transform import Rotation

from nvsynth.app.cli import main
from nvsynth.core import ibug68
from nvsynth.core.geometry import FACE_MODEL_6, HeadPose, head_rotation_from_pitchyaw, project
from nvsynth.datasets.mpii import open_subject
from nvsynth.recon.fit import FitError, FitModel, FitWeights, fit_landmarks, place_at_annotation_depth
from nvsynth.recon.landmarks import DlibLandmarker
from nvsynth.recon.placement import rotation_difference_deg
from nvsynth.recon.pose_scale import PoseScaleProblem
from nvsynth.recon.record import OPTIONAL_FIELDS, ReconRecord
from nvsynth.recon.stage import fit_image
from nvsynth.recon.template import load_landmark_map, load_template

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "supplementary" / "sample"
K = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
#: (pitch, yaw, roll) degrees and translation mm of the synthetic heads
POSES = [
    ((10.0, -20.0, 5.0), (30.0, -20.0, 600.0)),
    ((-15.0, 30.0, -5.0), (-60.0, 40.0, 650.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 550.0)),
]


@pytest.fixture(scope="module")
def model(template_path: Path) -> FitModel:
    """The fit without a rotation prior: placed in depth only."""
    return FitModel(load_template(template_path), load_landmark_map(None), FitWeights(rotation_prior_deg=None))


@pytest.fixture(scope="module")
def prior_model(model: FitModel) -> FitModel:
    """The fit with a rotation prior towards the annotation (recon.rotation_prior_deg: 0.25, the default)."""
    return FitModel(model.template, model.landmark_map, FitWeights(rotation_prior_deg=0.25))


@dataclass(frozen=True)
class Head:
    """A known face: a deformed template under a known pose, its projections and its annotation."""

    vertices: np.ndarray  # (468, 3) camera mm
    rotation: np.ndarray  # template head frame -> camera
    landmarks: np.ndarray  # (68, 2) ideal pixels, the jaw on the silhouette as dlib's is
    dense: np.ndarray  # (468, 3) ideal pixels and relative depth in pixel scale
    annotation: HeadPose  # six-point model pose whose face centre is the six vertices' centroid


def known_head(model: FitModel, angles: tuple, t: tuple) -> Head:
    """The template scaled anisotropically and bent smoothly (2-4 mm), then posed; its annotation exact."""
    X = model.X0
    x, y = X[:, 0], X[:, 1]
    bend = np.c_[
        2.0 * np.sin(y / 25.0),
        1.5 * np.cos(x / 30.0),
        4.0 * np.exp(-(x**2 + (y - 10.0) ** 2) / 800.0) - 2.0 * np.sin(x / 40.0) ** 2,
    ]
    shape = X * np.array([1.05, 0.96, 1.02]) + bend
    pitch, yaw, roll = np.radians(angles)
    R = head_rotation_from_pitchyaw(pitch, yaw) @ Rotation.from_rotvec([0.0, 0.0, roll]).as_matrix()
    V = shape @ R.T + np.asarray(t, dtype=np.float64)
    xy = project(V, K)
    z_mean = V[:, 2].mean()
    dense = np.c_[xy, (V[:, 2] - z_mean) * K[0, 0] / z_mean + 37.0]  # relative depth, arbitrary offset
    lms = xy[model.pick_jaw(V, xy, xy[model.landmark_map])]
    Ra = R @ model.alignment.rotation.T  # the annotation's model -> camera rotation
    c6 = V[model.alignment.vertices].mean(axis=0)
    return Head(V, R, lms, dense, HeadPose(Ra, c6 - Ra @ FACE_MODEL_6.mean(axis=0)))


def shape_error_mm(a: np.ndarray, b: np.ndarray) -> float:
    """RMS vertex distance after the best similarity transform of ``a`` onto ``b``."""
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    rot, _ = Rotation.align_vectors(b, a)
    ar = rot.apply(a)
    return float(np.sqrt(np.mean(np.sum((np.sum(ar * b) / np.sum(ar * ar) * ar - b) ** 2, axis=1))))


def rms_mm(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))


def test_six_point_alignment(model: FitModel) -> None:
    """R_p: a proper rotation (about x, ~5 deg) that fits the template's six vertices to the model better."""
    al = model.alignment
    np.testing.assert_array_equal(al.vertices, model.landmark_map[ibug68.MPII_SIX])
    np.testing.assert_allclose(al.rotation @ al.rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(al.rotation) == pytest.approx(1.0)
    rv = np.degrees(Rotation.from_matrix(al.rotation).as_rotvec())
    print(f"R_p rotation vector {np.round(rv, 3)} deg, alignment rms {al.rms_mm:.2f} mm")
    assert 2.0 < abs(rv[0]) < 10.0 and np.abs(rv[1:]).max() < 0.5  # symmetric faces: a pitch only
    a = FACE_MODEL_6 - FACE_MODEL_6.mean(axis=0)
    b = model.X0[al.vertices] - model.X0[al.vertices].mean(axis=0)
    assert al.rms_mm < np.sqrt(np.mean(np.sum((b - a) ** 2, axis=1)))


def test_rotation_prior_jacobian_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 40.0, (20, 3))
    R0 = Rotation.from_rotvec([0.2, -0.3, 0.1]).as_matrix()
    prior = Rotation.from_rotvec([0.5, 0.1, -0.2]).as_matrix()
    problem = PoseScaleProblem(
        X, rng.normal(640.0, 50.0, (20, 2)), K, np.full(20, 3.0), R0, FitWeights(rotation_prior_deg=0.5), prior
    )
    x = np.array([0.3, -0.1, 0.2, 10.0, -20.0, 600.0, 0.05, -0.02, 0.01])
    h = 1e-6
    numeric = np.stack([(problem.residuals(x + e) - problem.residuals(x - e)) / (2 * h) for e in np.eye(9) * h], 1)
    J = problem.jacobian(x)
    assert J.shape == (2 * 20 + 3 + 3, 9)
    np.testing.assert_allclose(J[-3:], numeric[-3:], atol=1e-6 * np.abs(numeric[-3:]).max())
    np.testing.assert_allclose(J, numeric, atol=1e-6)


def test_synthetic_head_matches_its_annotation(model: FitModel, prior_model: FitModel) -> None:
    """Known head and exact annotation: rotation within 1 deg of it, face-centre depth exact, mesh closer."""
    off, err_rot = [], []
    for angles, t in POSES:
        head = known_head(model, angles, t)
        free = fit_landmarks(model, head.landmarks, K)
        placed = fit_landmarks(model, head.landmarks, K, annotation=head.annotation)  # no prior: depth only
        assert placed.annotation_rotation_deg == placed.landmark_rotation_deg
        np.testing.assert_allclose(project(placed.vertices, K), project(free.vertices, K), atol=1e-6)
        fit = fit_landmarks(prior_model, head.landmarks, K, annotation=head.annotation)
        off.append(fit.annotation_rotation_deg)
        err_rot.append(rotation_difference_deg(fit.rotation, head.rotation))
        z6 = fit.vertices[model.alignment.vertices, 2].mean()
        print(
            f"{angles}: vs annotation {fit.annotation_rotation_deg:.2f} deg (landmarks alone "
            f"{fit.landmark_rotation_deg:.2f}), vertex rms {rms_mm(free.vertices, head.vertices):.2f} -> "
            f"{rms_mm(fit.vertices, head.vertices):.2f} mm (depth only {rms_mm(placed.vertices, head.vertices):.2f}),"
            f" depth correction {fit.depth_correction_mm:+.2f} mm"
        )
        assert placed.vertices[model.alignment.vertices, 2].mean() == pytest.approx(z6, abs=1e-6)
        assert z6 == pytest.approx(head.annotation.face_center()[2], abs=1e-6)
        assert fit.annotation_rotation_deg < fit.landmark_rotation_deg
        assert rms_mm(fit.vertices, head.vertices) < min(3.0, rms_mm(free.vertices, head.vertices))
        assert np.isnan(free.annotation_rotation_deg) and np.isnan(free.depth_correction_mm)
    assert np.median(off) <= 1.0 and max(off) <= 1.5
    assert np.median(err_rot) <= 1.0


def test_depth_placement_keeps_projections(model: FitModel) -> None:
    """Scaling about the camera origin: projections unchanged to 1e-6 px, centroid at the new depth."""
    head = known_head(model, *POSES[0])
    fit = fit_landmarks(model, head.landmarks, K, annotation=head.annotation)
    for factor in (0.9, 1.07):
        moved = HeadPose(head.annotation.rotation, head.annotation.translation * factor)
        placed = place_at_annotation_depth(fit, model, moved)
        z_face = moved.face_center()[2]
        assert placed.vertices[model.alignment.vertices, 2].mean() == pytest.approx(z_face, abs=1e-6)
        assert placed.depth_correction_mm == pytest.approx(z_face - fit.vertices[model.alignment.vertices, 2].mean())
        np.testing.assert_allclose(project(placed.vertices, K), project(fit.vertices, K), atol=1e-6, rtol=0)
        np.testing.assert_allclose(project(placed.landmarks_3d, K), project(fit.landmarks_3d, K), atol=1e-6, rtol=0)
        # the head frame's placement scales with the mesh: R (s X0 + D) + t is the same mesh
        ratio = placed.translation / fit.translation
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
        np.testing.assert_allclose(placed.scale / fit.scale, ratio[0], rtol=1e-12)
        assert placed.depth_ratio == fit.depth_ratio


def test_annotation_beyond_the_limit_is_a_fit_error(model: FitModel) -> None:
    head = known_head(model, *POSES[0])
    turned = HeadPose(
        Rotation.from_euler("y", 35.0, degrees=True).as_matrix() @ head.annotation.rotation, head.annotation.translation
    )
    with pytest.raises(FitError, match=r"disagree with the annotated head pose by 3\d\.\d deg.*max_annotation_deg 30"):
        fit_landmarks(model, head.landmarks, K, annotation=turned)
    strict = FitModel(model.template, model.landmark_map, FitWeights(max_annotation_deg=40.0))
    assert fit_landmarks(strict, head.landmarks, K, annotation=turned).landmark_rotation_deg == pytest.approx(
        35.0, abs=1.5
    )


def test_sample_frames_agree_with_their_annotation(model: FitModel, prior_model: FitModel) -> None:
    """The bundled sample (annotation read 16-21 deg pitched up from the landmarks): with the prior, within 1 deg."""
    subj = open_subject(SAMPLE, "p00")
    cam = subj.calibration.camera
    landmarker = DlibLandmarker()
    off = []
    for fr in subj.frame_list():
        lms, fit = fit_image(fr.load_image(), cam, landmarker, prior_model, fr.landmarks_6, fr.head_pose)
        off.append(fit.annotation_rotation_deg)
        print(
            f"frame {fr.index}: vs annotation {fit.annotation_rotation_deg:.2f} deg (landmarks alone "
            f"{fit.landmark_rotation_deg:.2f}), depth correction {fit.depth_correction_mm:+.1f} mm, "
            f"reprojection {fit.reprojection_error_ideal_px:.2f} px"
        )
        z6 = fit.vertices[model.alignment.vertices, 2].mean()
        assert z6 == pytest.approx(fr.head_pose.face_center()[2], abs=1e-6)
        assert float(np.linalg.norm(cam.project(fit.landmarks_3d) - lms.points, axis=1).mean()) < 4.0
    assert np.median(off) <= 1.0


def test_dense_points_recover_a_known_mesh(model: FitModel, prior_model: FitModel) -> None:
    """468 projected points with relative depth: the shape to < 1 mm; with the (exact) annotation, the mesh too."""
    for angles, t in POSES[:2]:
        head = known_head(model, angles, t)
        sparse = fit_landmarks(model, head.landmarks, K)
        dense = fit_landmarks(model, head.landmarks, K, dense=head.dense)
        placed = fit_landmarks(prior_model, head.landmarks, K, dense=head.dense, annotation=head.annotation)
        rot = rotation_difference_deg(placed.rotation, head.rotation)
        print(
            f"{angles}: shape error 68 points {shape_error_mm(sparse.vertices, head.vertices):.2f} mm, dense "
            f"{shape_error_mm(dense.vertices, head.vertices):.2f} mm (rotation "
            f"{rotation_difference_deg(dense.rotation, head.rotation):.2f} deg); with annotation vertex rms "
            f"{rms_mm(placed.vertices, head.vertices):.2f} mm, rotation {rot:.2f} deg"
        )
        assert shape_error_mm(dense.vertices, head.vertices) < 1.0
        assert shape_error_mm(sparse.vertices, head.vertices) > 2.0 * shape_error_mm(dense.vertices, head.vertices)
        assert rms_mm(placed.vertices, head.vertices) < 1.0
        assert rot < 1.0
        # the relative depth is a real constraint: a flattened depth gives a worse shape
        flat = head.dense * np.array([1.0, 1.0, 0.3])
        worse = fit_landmarks(prior_model, head.landmarks, K, dense=flat, annotation=head.annotation)
        assert rms_mm(worse.vertices, head.vertices) > rms_mm(placed.vertices, head.vertices) + 0.3


def test_dense_points_must_be_finite(model: FitModel) -> None:
    head = known_head(model, *POSES[0])
    bad = head.dense.copy()
    bad[10, 2] = np.nan
    with pytest.raises(FitError, match="non-finite"):
        fit_landmarks(model, head.landmarks, K, dense=bad)


def test_old_records_load_without_the_new_fields(tmp_path: Path, model: FitModel) -> None:
    rec = posed_record(
        model.template, np.eye(3), np.array([0.0, 0.0, 600.0]), K, np.ones(468, bool), model.landmark_map
    )
    path = rec.save(tmp_path / "new.npz")
    with np.load(path) as z:
        old = {
            k: z[k]
            for k in z.files
            if k not in ("annotation_rotation_deg", "landmark_rotation_deg", "depth_correction_mm")
        }
    np.savez(tmp_path / "old.npz", **old)
    loaded = ReconRecord.load(tmp_path / "old.npz")
    assert np.isnan(loaded.annotation_rotation_deg) and np.isnan(loaded.depth_correction_mm)
    assert {f.name for f in fields(ReconRecord)} - set(old) - set(OPTIONAL_FIELDS) == {
        "annotation_rotation_deg",
        "landmark_rotation_deg",
        "depth_correction_mm",
    }


def test_recon_records_and_manifest_carry_the_placement(shared: Path, tmp_path: Path) -> None:
    """``nvsynth recon`` on the sample: manifest columns and record fields; a tight limit skips with the reason."""
    shutil.copytree(SAMPLE / "p00", tmp_path / "raw" / "p00")
    cfg = tmp_path / "config_path.yaml"
    cfg.write_text("data:\n  mpii:\n    raw: raw\n    obj: obj\nrecon:\n  rotation_prior_deg: 0.25\n")
    assert main(["recon", "--config", str(cfg), "--limit", "3"]) == 0
    with open(tmp_path / "obj" / "p00" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    for row in rows:
        rec = ReconRecord.load(tmp_path / "obj" / "p00" / Path(row["image"]).with_suffix(".npz"))
        assert row["status"] == "ok"
        assert float(row["annotation_deg"]) == pytest.approx(rec.annotation_rotation_deg, abs=1e-3)
        assert float(row["depth_correction_mm"]) == pytest.approx(rec.depth_correction_mm, abs=1e-3)
        assert rec.annotation_rotation_deg < 1.5 and 5.0 < rec.depth_correction_mm < 40.0
        ann = HeadPose.from_rvec(rec.annotation_rvec, rec.annotation_tvec)
        z6 = rec.vertices[load_landmark_map(None)[ibug68.MPII_SIX], 2].astype(np.float64).mean()
        assert z6 == pytest.approx(ann.face_center()[2], abs=1e-3)  # float32 storage

    strict = tmp_path / "strict.yaml"
    strict.write_text("data:\n  mpii:\n    raw: raw\n    obj: obj2\nrecon:\n  max_annotation_deg: 10\n")
    assert main(["recon", "--config", str(strict), "--limit", "2"]) == 1
    with open(tmp_path / "obj2" / "p00" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert all("max_annotation_deg 10" in r["reason"] for r in rows)
    assert all(r["annotation_deg"] == "" for r in rows)


def test_an_ignored_jaw_changes_nothing(model: FitModel) -> None:
    """jaw_sigma inf: the jaw points carry no weight in the pose, the scales or the deformation."""
    head = known_head(model, *POSES[1])
    moved = head.landmarks.copy()
    moved[:17] += np.array([15.0, -10.0])
    no_jaw = FitModel(model.template, model.landmark_map, FitWeights(jaw_sigma=np.inf))
    a = fit_landmarks(no_jaw, head.landmarks, K)
    b = fit_landmarks(no_jaw, moved, K)
    np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-12)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-9)
    with_jaw = fit_landmarks(model, moved, K)
    assert rms_mm(with_jaw.vertices, a.vertices) > 1.0
