"""The per-frame fit: round trip under known poses, real faces, depth ratio, dynamic jaw."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from labelled_faces import FACES

from nvsynth.core import ibug68
from nvsynth.core.geometry import head_rotation_from_pitchyaw, rot_y
from nvsynth.datasets.mpii import Camera, open_subject
from nvsynth.recon.fit import FitModel, fit_landmarks, subdivision
from nvsynth.recon.landmarks import DlibLandmarker, normalized_error, read_pts
from nvsynth.recon.stage import fit_image
from nvsynth.recon.template import TEMPLATE_DEPTH_RATIO, load_landmark_map, load_template

REPO = Path(__file__).resolve().parents[1]
#: A webcam-like calibrated camera with lens distortion (as MPIIFaceGaze's).
CAMERA = Camera(
    np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]]), np.array([-0.1, 0.08, 0, 0, 0])
)


@pytest.fixture(scope="module")
def model(template_path: Path) -> FitModel:
    return FitModel(load_template(template_path), load_landmark_map(None))


@pytest.fixture(scope="module")
def landmarker() -> DlibLandmarker:
    return DlibLandmarker()


def photo_camera(image: np.ndarray, points: np.ndarray, model: FitModel) -> Camera:
    """An ideal camera for a photo without calibration: the face as if 600 mm away."""
    eye_mm = np.linalg.norm(np.subtract(*model.X0[model.landmark_map[ibug68.OUTER_EYE_CORNERS]]))
    f = np.linalg.norm(points[ibug68.LEFT_EYE_OUTER] - points[ibug68.RIGHT_EYE_OUTER]) * 600.0 / eye_mm
    h, w = image.shape[:2]
    return Camera(np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]]), np.zeros(5))


def synthetic_landmarks(model: FitModel, R: np.ndarray, t: np.ndarray, noise_px: float, seed: int) -> np.ndarray:
    """Raw (distorted) pixels of the template's landmarks at pose (R, t), jaw on the silhouette as dlib's is."""
    V = model.X0 @ R.T + t
    ideal = CAMERA.project(V, distort=False)
    idx = model.pick_jaw(V, ideal, ideal[model.landmark_map])
    rng = np.random.default_rng(seed)
    return CAMERA.project(V[idx]) + rng.normal(0.0, noise_px, (68, 2))


POSES = [
    (0.0, 0.0, 0.0, (0.0, 0.0, 600.0)),
    (15.0, -20.0, 5.0, (-120.0, -60.0, 550.0)),
    (-20.0, 25.0, -8.0, (140.0, 80.0, 700.0)),
    (25.0, 10.0, 10.0, (60.0, -90.0, 480.0)),
    (-10.0, -28.0, 0.0, (-40.0, 30.0, 800.0)),
]


@pytest.mark.parametrize(("pitch", "yaw", "roll", "t"), POSES)
def test_round_trip_recovers_pose(model: FitModel, pitch: float, yaw: float, roll: float, t: tuple) -> None:
    """Template under a known pose and distorted camera, 1 px noise: rotation within 2 deg, translation 5%."""
    R = (
        head_rotation_from_pitchyaw(np.radians(pitch), np.radians(yaw))
        @ cv2.Rodrigues(np.array([0.0, 0.0, np.radians(roll)]))[0]
    )
    tv = np.array(t)
    raw = synthetic_landmarks(model, R, tv, noise_px=1.0, seed=int(abs(yaw) * 10))
    fit = fit_landmarks(model, CAMERA.undistort_points(raw), CAMERA.matrix)
    d_rot = np.degrees(np.linalg.norm(cv2.Rodrigues(fit.rotation @ R.T)[0]))
    d_t = np.linalg.norm(fit.translation - tv) / np.linalg.norm(tv)
    print(f"pose {pitch, yaw, roll}: rotation error {d_rot:.3f} deg, translation error {100 * d_t:.2f}%")
    assert d_rot < 2.0
    assert d_t < 0.05
    # the mesh itself lands where the template was, and the scale priors leave a true-size face alone
    V = model.X0 @ R.T + tv
    assert np.sqrt(np.mean(np.sum((fit.vertices - V) ** 2, axis=1))) < 5.0
    np.testing.assert_allclose(fit.scale, 1.0, atol=0.03)


def test_round_trip_noiseless_is_exact(model: FitModel) -> None:
    R = head_rotation_from_pitchyaw(np.radians(10.0), np.radians(-15.0))
    tv = np.array([30.0, -40.0, 620.0])
    raw = synthetic_landmarks(model, R, tv, noise_px=0.0, seed=0)
    fit = fit_landmarks(model, CAMERA.undistort_points(raw), CAMERA.matrix)
    np.testing.assert_allclose(fit.vertices, model.X0 @ R.T + tv, atol=0.05)
    assert fit.reprojection_error_ideal_px < 0.01


@pytest.mark.parametrize("name", ["breakingbad", "takeo", "einstein"])
def test_fit_to_hand_labels(shared: Path, model: FitModel, name: str) -> None:
    """The mesh can take real faces: fitted to the labels themselves, its projected landmarks stay within 0.02."""
    img = cv2.imread(str(shared / "faces" / FACES[name]))
    truth = read_pts(shared / "faces" / f"{name}.pts")
    cam = photo_camera(img, truth, model)
    fit = fit_landmarks(model, truth, cam.matrix)
    err = normalized_error(cam.project(fit.landmarks_3d), truth)
    ratio = fit.depth_ratio / TEMPLATE_DEPTH_RATIO
    print(f"{name}: fitted-to-labels error {err:.4f}, depth ratio {ratio:.3f} of the template's")
    assert err <= 0.02
    assert abs(ratio - 1.0) <= 0.15


#: Acceptance (issue 3): the fitted mesh's projected 68 landmarks, real pipeline (detections).
FIT_LIMIT = {"breakingbad": 0.05, "takeo": 0.05}


@pytest.mark.parametrize("name", ["breakingbad", "takeo", "einstein"])
def test_detect_then_fit(shared: Path, model: FitModel, landmarker: DlibLandmarker, name: str) -> None:
    """The real pipeline on the labelled photos: dlib landmarks in the six-point box, then the fit.

    The fitted mesh's projected landmarks are within 0.05 of the hand labels on breakingbad
    and takeo (einstein has no such bound), they follow the detections closely, and the depth
    stays plausible.
    """
    img = cv2.imread(str(shared / "faces" / FACES[name]))
    truth = read_pts(shared / "faces" / f"{name}.pts")
    cam = photo_camera(img, truth, model)
    lms, fit = fit_image(img, cam, landmarker, model, truth[ibug68.MPII_SIX])
    projected = cam.project(fit.landmarks_3d)
    det_err = normalized_error(lms.points, truth)
    fit_err = normalized_error(projected, truth)
    follow = normalized_error(projected, lms.points)
    ratio = fit.depth_ratio / TEMPLATE_DEPTH_RATIO
    print(f"{name}: detector {det_err:.4f}, fitted mesh {fit_err:.4f} (vs detections {follow:.4f}), depth {ratio:.3f}")
    assert fit_err <= FIT_LIMIT.get(name, det_err + 0.01)
    assert fit_err <= det_err + 0.005
    assert follow <= 0.02
    assert abs(ratio - 1.0) <= 0.15


def test_sample_frames_depth_ratio(model: FitModel, landmarker: DlibLandmarker) -> None:
    """On the bundled calibrated sample: small reprojection error, depth ratio within 15%."""
    subj = open_subject(REPO / "supplementary" / "sample", "p00")
    cam = subj.calibration.camera
    for fr in subj.frame_list(3):
        lms, fit = fit_image(fr.load_image(), cam, landmarker, model, fr.landmarks_6)
        err = float(np.linalg.norm(cam.project(fit.landmarks_3d) - lms.points, axis=1).mean())
        assert err < 4.0
        assert abs(fit.depth_ratio / TEMPLATE_DEPTH_RATIO - 1.0) <= 0.15
        # the fitted head sits where the annotation's head is (different model origins, same head)
        assert np.linalg.norm(fit.translation - fr.head_tvec) < 60.0


def test_jaw_follows_the_silhouette(model: FitModel) -> None:
    """Turned 40 deg, the far-side jaw landmarks move onto the cheek's occluding contour."""
    t = np.array([0.0, 0.0, 600.0])
    picks = {}
    for yaw in (0.0, 40.0):
        V = model.X0 @ rot_y(np.radians(yaw)).T + t
        ideal = CAMERA.project(V, distort=False)
        idx = model.pick_jaw(V, ideal, ideal[model.landmark_map])
        sil = model.silhouette_vertices(V)
        assert sil[idx[ibug68.JAW]].all()
        picks[yaw] = idx[ibug68.JAW]
    # frontal: the jaw sits on the mesh outline (as in the map); turned: the far side (iBUG 0-7,
    # the subject's right, which turns away for positive yaw) leaves the outline
    outline = np.zeros(len(model.X0), bool)
    outline[model.edges[model.outline_edges].ravel()] = True
    assert outline[picks[0.0]].all()
    far_side_moved = ~outline[picks[40.0][:8]]
    assert far_side_moved.sum() >= 3


def test_jaw_binds_between_vertices(model: FitModel) -> None:
    """A jaw point halfway along a silhouette edge binds to that edge point, not to a vertex."""
    V = model.X0 @ rot_y(np.radians(25.0)).T + np.array([0.0, 0.0, 600.0])
    proj = CAMERA.project(V, distort=False)
    on_vertices = model.jaw_contour(V, proj, proj[model.landmark_map])
    # targets at the midpoints of the silhouette edges the mapped jaw points were bound to
    targets = proj[model.landmark_map].copy()
    targets[ibug68.JAW] = 0.5 * (proj[on_vertices.first[ibug68.JAW]] + proj[on_vertices.second[ibug68.JAW]])
    edge_px = np.linalg.norm(proj[on_vertices.first[ibug68.JAW]] - proj[on_vertices.second[ibug68.JAW]], axis=1)
    assert np.all(edge_px > 1.0)
    mid = model.jaw_contour(V, proj, targets)
    np.testing.assert_allclose(mid.points(proj)[ibug68.JAW], targets[ibug68.JAW], atol=1e-6)
    np.testing.assert_allclose(mid.alpha[ibug68.JAW], 0.5, atol=1e-6)
    sil = model.silhouette_vertices(V)
    assert sil[mid.first[ibug68.JAW]].all() and sil[mid.second[ibug68.JAW]].all()
    # interior landmarks stay on their mapped vertices
    np.testing.assert_array_equal(mid.nearest_vertices()[ibug68.INTERIOR], model.landmark_map[ibug68.INTERIOR])


@pytest.mark.parametrize("steps", [1, 2])
def test_subdivision_interpolates_and_stays_symmetric(template_path: Path, steps: int) -> None:
    """recon.subdivide: fitted vertices stay put, the mirror map stays exact, new points lie near the surface."""
    tpl = load_template(template_path)
    sub = subdivision(tpl.faces, tpl.mirror, steps)
    V = sub.apply(tpl.vertices)
    n = len(tpl.vertices)
    assert len(sub.faces) == len(tpl.faces) * 4**steps
    np.testing.assert_array_equal(V[:n], tpl.vertices)
    np.testing.assert_allclose(V[sub.mirror], V * [-1.0, 1.0, 1.0], atol=1e-9)
    # edges halve (up to the butterfly's small bulge)

    def longest(v: np.ndarray, f: np.ndarray) -> float:
        return float(np.linalg.norm(v[f] - v[np.roll(f, 1, axis=1)], axis=2).max())

    assert longest(V, sub.faces) < 0.6**steps * longest(tpl.vertices, tpl.faces)
    # the winding still faces the camera for the frontal face
    Vc = V + np.array([0.0, 0.0, 600.0])
    fn = np.cross(Vc[sub.faces[:, 1]] - Vc[sub.faces[:, 0]], Vc[sub.faces[:, 2]] - Vc[sub.faces[:, 0]])
    assert np.mean(np.einsum("ij,ij->i", fn, Vc[sub.faces].mean(axis=1)) < 0) > 0.95
