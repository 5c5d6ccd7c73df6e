"""Label geometry (issue 2): conventions, signs, normalization, PnP.

Every expected value here comes from an independent construction (a rotation
built from its axes, a projection with OpenCV, an image resized with OpenCV),
never from re-running the formula under test.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvsynth.core import geometry as g

# Labels away from the poles (|pitch| = 90 deg leaves yaw undefined).
pitch_st = st.floats(-1.5, 1.5)
yaw_st = st.floats(-3.1, 3.1)
small_st = st.floats(-1.2, 1.2)  # |angle| < ~69 deg: the range normalized data lives in

# A webcam-like calibration (MPIIFaceGaze p00 has K ~ diag(995, 995) with c ~ (640, 360)).
K_CAM = np.array([[994.73, 0.0, 624.63], [0.0, 996.97, 360.36], [0.0, 0.0, 1.0]])
DIST = np.array([-0.1619, 0.9053, 0.0011, -0.0015, -1.8627])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    return cv2.Rodrigues(_unit(np.asarray(axis, float)) * angle)[0]


def _normalizing_frame(center: np.ndarray, roll: float) -> np.ndarray:
    """Rows [right; down; forward] with forward = centre direction, rolled by ``roll`` about it."""
    forward = _unit(center)
    down0 = _unit(np.cross(forward, [1.0, 0.0, 0.0]))
    right0 = np.cross(down0, forward)
    Rz = _rotation_about(forward, roll)
    return np.stack([Rz @ right0, Rz @ down0, forward])


# --- model and constants -------------------------------------------------------------------


def test_face_model_is_the_mpiigaze_six_points() -> None:
    # The numbers and order of issue 2 (MPIIGaze generic face model, mm).
    expected = [
        (-45.096768, -0.483773, 2.397030),
        (-21.312858, 0.483773, -2.397030),
        (21.312858, 0.483773, -2.397030),
        (45.096768, -0.483773, 2.397030),
        (-26.299577, 68.595035, 0.0),
        (26.299577, 68.595035, 0.0),
    ]
    np.testing.assert_array_equal(g.FACE_MODEL_6, np.array(expected))
    # Axes as the camera's for a frontal face: eyes above the mouth (y down),
    # the right eye (listed first) at image-left (x right).
    assert g.FACE_MODEL_6[:4, 1].max() < g.FACE_MODEL_6[4:, 1].min()
    assert g.FACE_MODEL_6[0, 0] < 0 < g.FACE_MODEL_6[3, 0]


def test_normalized_camera_constants() -> None:
    assert (g.NORM_FOCAL, g.NORM_DISTANCE, g.NORM_RENDER_SIZE, g.NORM_PATCH_SIZE) == (960.0, 300.0, 448, 224)
    K = g.normalized_camera_matrix()
    np.testing.assert_array_equal(K, [[960.0, 0.0, 224.0], [0.0, 960.0, 224.0], [0.0, 0.0, 1.0]])


# --- pitch/yaw <-> vectors and rotations -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(pitch_st, yaw_st)
def test_pitchyaw_vector_round_trip(pitch: float, yaw: float) -> None:
    v = g.vector_from_pitchyaw([pitch, yaw])
    assert abs(np.linalg.norm(v) - 1.0) < 1e-12
    back = g.pitchyaw_from_vector(v)
    np.testing.assert_allclose(back, [pitch, yaw], atol=1e-9, rtol=0)


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)), st.floats(0.01, 1000))
def test_vector_pitchyaw_round_trip(xyz: tuple[float, float, float], scale: float) -> None:
    v = np.array(xyz)
    if np.linalg.norm(v) < 1e-3 or np.hypot(v[0], v[2]) < 1e-3:  # undefined yaw at the poles
        return
    back = g.vector_from_pitchyaw(g.pitchyaw_from_vector(scale * v))
    np.testing.assert_allclose(back, _unit(v), atol=1e-9, rtol=0)


@settings(max_examples=300, deadline=None)
@given(pitch_st, yaw_st)
def test_head_rotation_labels_read_back(pitch: float, yaw: float) -> None:
    H = g.head_rotation_from_pitchyaw(pitch, yaw)
    np.testing.assert_allclose(H @ H.T, np.eye(3), atol=1e-12)
    assert abs(np.linalg.det(H) - 1.0) < 1e-12
    np.testing.assert_allclose(g.pitchyaw_from_head_rotation(H), [pitch, yaw], atol=1e-9, rtol=0)
    # zero roll: the head's x axis stays in the camera's x-z plane
    assert abs(H[1, 0]) < 1e-12


def test_vectorized_forms_match_single_calls() -> None:
    rng = np.random.default_rng(3)
    py = rng.uniform(-1.2, 1.2, size=(4, 5, 2))
    vec = g.vector_from_pitchyaw(py)
    assert vec.shape == (4, 5, 3)
    np.testing.assert_allclose(vec[2, 3], g.vector_from_pitchyaw(py[2, 3]), atol=0)
    np.testing.assert_allclose(g.pitchyaw_from_vector(vec), py, atol=1e-12)
    Hs = np.stack([g.head_rotation_from_pitchyaw(p, y) for p, y in py.reshape(-1, 2)])
    np.testing.assert_allclose(g.pitchyaw_from_head_rotation(Hs), py.reshape(-1, 2), atol=1e-12)


# --- signs -------------------------------------------------------------------------------


def test_gaze_signs() -> None:
    a = np.radians(20.0)
    up = np.array([0.0, -np.sin(a), -np.cos(a)])  # toward the camera, tilted to -y (image up)
    left = np.array([-np.sin(a), 0.0, -np.cos(a)])  # toward the camera, tilted to -x (image left)
    np.testing.assert_allclose(g.pitchyaw_from_vector(up), [a, 0.0], atol=1e-12)
    np.testing.assert_allclose(g.pitchyaw_from_vector(left), [0.0, a], atol=1e-12)
    down = np.array([0.0, np.sin(a), -np.cos(a)])
    right = np.array([np.sin(a), 0.0, -np.cos(a)])
    np.testing.assert_allclose(g.pitchyaw_from_vector(down), [-a, 0.0], atol=1e-12)
    np.testing.assert_allclose(g.pitchyaw_from_vector(right), [0.0, -a], atol=1e-12)


def test_head_signs() -> None:
    """A head facing up / image-left has positive pitch / yaw.

    The face looks along the model's -z axis; in the camera that is -hR[:, 2].
    The rotations are built from the axis-angle of physical turns, not from hR(p, y).
    """
    a = np.radians(25.0)
    # Nod up: rotate about the camera x axis so that the facing direction gets a -y component.
    for axis, sign in (([1.0, 0.0, 0.0], 1.0), ([1.0, 0.0, 0.0], -1.0)):
        hR = _rotation_about(np.array(axis), sign * a)
        facing = -hR[:, 2]
        looks_up = facing[1] < 0
        pitch, yaw = g.pitchyaw_from_head_rotation(hR)
        assert (pitch > 0) == looks_up
        assert abs(abs(pitch) - a) < 1e-12 and abs(yaw) < 1e-12
    # Turn toward image-left: rotate about the camera y axis so that facing gets a -x component.
    for sign in (1.0, -1.0):
        hR = _rotation_about(np.array([0.0, 1.0, 0.0]), sign * a)
        facing = -hR[:, 2]
        pitch, yaw = g.pitchyaw_from_head_rotation(hR)
        assert (yaw > 0) == (facing[0] < 0)
        assert abs(abs(yaw) - a) < 1e-12 and abs(pitch) < 1e-12
    # The facing direction of hR(p, y) has the gaze labels (p, y): heads and eyes share signs.
    for p, y in ((0.3, 0.0), (0.0, 0.4), (-0.2, -0.5), (0.25, -0.35)):
        facing = -g.head_rotation_from_pitchyaw(p, y)[:, 2]
        np.testing.assert_allclose(g.pitchyaw_from_vector(facing), [p, y], atol=1e-12)


def test_gaze_target_signs_after_normalization() -> None:
    """A target above / image-left of a frontal face gives positive pitch / yaw."""
    head = g.HeadPose(np.eye(3), np.array([0.0, 0.0, 600.0]))
    norm = g.normalize(head, K_CAM)
    c = head.face_center()
    above = c + np.array([0.0, -150.0, -600.0])
    left = c + np.array([-150.0, 0.0, -600.0])
    p_up, y_up = norm.gaze_pitchyaw(above)
    p_left, y_left = norm.gaze_pitchyaw(left)
    assert p_up > 0.2 and abs(y_up) < 1e-9
    assert y_left > 0.2 and abs(p_left) < 0.05


# --- head pose and face centre ---------------------------------------------------------------


def test_face_center_is_mean_of_transformed_points() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        hR = _rotation_about(rng.normal(size=3), rng.uniform(0, 0.8))
        t = rng.uniform([-100, -100, 400], [100, 100, 800])
        head = g.HeadPose(hR, t)
        pts = np.array([hR @ p + t for p in g.FACE_MODEL_6])
        np.testing.assert_allclose(head.transform(g.FACE_MODEL_6), pts, atol=1e-12)
        np.testing.assert_allclose(head.face_center(), pts.mean(axis=0), atol=1e-12)
    # identity head: centre = t + model mean (0, 22.865..., 0) from the six model points
    head = g.HeadPose(np.eye(3), np.array([10.0, 20.0, 500.0]))
    y_mean = (2 * 68.595035) / 6.0
    np.testing.assert_allclose(head.face_center(), [10.0, 20.0 + y_mean, 500.0], atol=1e-12)


def test_headpose_rvec_round_trip() -> None:
    rvec = np.array([0.1, -0.4, 0.05])
    head = g.HeadPose.from_rvec(rvec, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(head.rvec, rvec, atol=1e-12)
    np.testing.assert_allclose(head.translation, [1.0, 2.0, 3.0])


@settings(max_examples=40, deadline=None)
@given(
    st.floats(-0.6, 0.6),
    st.floats(-0.8, 0.8),
    st.floats(-0.4, 0.4),
    st.floats(-120, 120),
    st.floats(-80, 80),
    st.floats(350, 800),
)
def test_pnp_recovers_pose(pitch: float, yaw: float, roll: float, tx: float, ty: float, tz: float) -> None:
    """Project the 6 model points with distortion; EPnP + LM gives the pose back (translation to 1e-6 mm).

    Rotation to 2e-5: OpenCV's LM leaves a rotation of ~1e-5 rad (0.0006 deg) from the identity
    unresolved (roll=1e-5 comes back as the identity; 3e-5 to 1e-12)."""
    hR = _rotation_about([0.0, 0.0, 1.0], roll) @ g.head_rotation_from_pitchyaw(pitch, yaw)
    t = np.array([tx, ty, tz])
    img, _ = cv2.projectPoints(g.FACE_MODEL_6, cv2.Rodrigues(hR)[0], t, K_CAM, DIST)
    est = g.estimate_head_pose(img.reshape(6, 2), K_CAM, DIST)
    np.testing.assert_allclose(est.rotation, hR, atol=2e-5, rtol=0)
    np.testing.assert_allclose(est.translation, t, atol=1e-6, rtol=0)


# --- normalization ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    small_st,
    small_st,
    small_st,
    small_st,
    st.floats(-np.pi, np.pi),
    st.floats(-150, 150),
    st.floats(-100, 100),
    st.floats(300, 900),
)
def test_normalizing_a_synthetic_head_recovers_its_normalized_pose(
    hp: float, hy: float, gp: float, gy: float, roll: float, cx: float, cy: float, cz: float
) -> None:
    """Build a head whose normalized pose is known, then normalize it.

    Pick H_norm = hR(hp, hy) and a face centre c; R is the frame with forward
    along c (any roll about it); the head in the camera is hR = R^T H_norm with
    its translation chosen so that the model-point mean lands on c. The gaze
    target lies along R^T v(gp, gy) from c.
    """
    c = np.array([cx, cy, cz])
    R = _normalizing_frame(c, roll)
    H_norm = g.head_rotation_from_pitchyaw(hp, hy)
    hR = R.T @ H_norm
    t = c - hR @ g.FACE_MODEL_6.mean(axis=0)
    target = c + 400.0 * (R.T @ g.vector_from_pitchyaw([gp, gy]))

    norm = g.normalize(g.HeadPose(hR, t), K_CAM)
    np.testing.assert_allclose(norm.face_center, c, atol=1e-9)
    np.testing.assert_allclose(norm.rotation, R, atol=1e-9)
    np.testing.assert_allclose(norm.head_rotation_norm, H_norm, atol=1e-9)
    np.testing.assert_allclose(norm.head_pitchyaw(), [hp, hy], atol=1e-9)
    np.testing.assert_allclose(norm.gaze_pitchyaw(target), [gp, gy], atol=1e-9)
    np.testing.assert_allclose(norm.scale, np.diag([1.0, 1.0, 300.0 / np.linalg.norm(c)]), atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)), st.floats(0, 0.9), small_st, small_st)
def test_normalization_removes_roll(axis: tuple[float, float, float], angle: float, cx: float, cy: float) -> None:
    """For any head, R.hR is a zero-roll rotation: it equals hR(p, y) of its own labels."""
    if np.linalg.norm(axis) < 1e-3:
        return
    hR = _rotation_about(np.array(axis), angle)
    c = np.array([200 * cx, 150 * cy, 600.0])
    R = g.normalizing_rotation(c, hR)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(R[2], c / np.linalg.norm(c), atol=1e-12)
    H = R @ hR
    p, y = g.pitchyaw_from_head_rotation(H)
    np.testing.assert_allclose(H, g.head_rotation_from_pitchyaw(p, y), atol=1e-9)


def test_warp_maps_face_center_to_image_center() -> None:
    rng = np.random.default_rng(11)
    for _ in range(10):
        hR = _rotation_about(rng.normal(size=3), rng.uniform(0, 0.6))
        t = rng.uniform([-150, -100, 350], [150, 100, 800])
        head = g.HeadPose(hR, t)
        norm = g.normalize(head, K_CAM)
        c = head.face_center()
        px = K_CAM @ c  # the centre's pixel (homogeneous, undistorted)
        q = norm.warp @ (px / px[2])
        np.testing.assert_allclose(q[:2] / q[2], [224.0, 224.0], atol=1e-9)
        # and any camera point lands where the normalized camera sees R-rotated, S-scaled points
        X = head.transform(g.FACE_MODEL_6)
        warped = cv2.perspectiveTransform(g.project(X, K_CAM).reshape(-1, 1, 2), norm.warp).reshape(-1, 2)
        seen = g.project((norm.scale @ norm.rotation @ X.T).T, g.normalized_camera_matrix())
        np.testing.assert_allclose(warped, seen, atol=1e-8)
        # the face centre sits at the normalized distance after scaling
        np.testing.assert_allclose(norm.scale @ norm.rotation @ c, [0.0, 0.0, 300.0], atol=1e-9)


def test_warped_image_puts_a_marker_at_the_center() -> None:
    """Warp a real image with cv2.warpPerspective: a dot drawn at the face centre ends at (224, 224)."""
    head = g.HeadPose(_rotation_about([0.2, 1.0, 0.1], 0.4), np.array([-90.0, 40.0, 550.0]))
    norm = g.normalize(head, K_CAM)
    u, v = g.project(head.face_center(), K_CAM)
    img = np.zeros((720, 1280), np.float32)
    yy, xx = np.mgrid[0:720, 0:1280]
    img[:] = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 4.0**2))
    out = cv2.warpPerspective(img, norm.warp, (448, 448), flags=cv2.INTER_LINEAR)
    ys, xs = np.mgrid[0:448, 0:448]
    w = out / out.sum()
    assert abs((xs * w).sum() - 224.0) < 0.05 and abs((ys * w).sum() - 224.0) < 0.05


# --- render -> patch pixels ----------------------------------------------------------------------


@pytest.mark.parametrize("center", [(224.0, 224.0), (100.3, 301.7), (0.5, 0.5), (446.5, 2.5)])
def test_render_to_patch_pixels_matches_inter_area(center: tuple[float, float]) -> None:
    """A blob at render pixel (u, v), downsampled with cv2.INTER_AREA, has its centroid at the mapped point."""
    u, v = center
    ys, xs = np.mgrid[0:448, 0:448].astype(np.float64)
    blob = np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * 6.0**2))
    if not (20 < u < 428 and 20 < v < 428):  # keep the blob inside the image: use a 2x2 block instead
        blob = np.zeros((448, 448))
        i, j = round(v - 0.5), round(u - 0.5)
        blob[i : i + 2, j : j + 2] = 1.0
    small = cv2.resize(blob, (224, 224), interpolation=cv2.INTER_AREA)
    ys2, xs2 = np.mgrid[0:224, 0:224]
    w = small / small.sum()
    got = np.array([(xs2 * w).sum(), (ys2 * w).sum()])
    np.testing.assert_allclose(got, g.render_to_patch_pixels([u, v]), atol=1e-6)


def test_render_to_patch_pixels_known_values() -> None:
    pts = np.array([[0.5, 0.5], [224.0, 224.0], [446.5, 446.5], [0.0, 447.0]])
    np.testing.assert_allclose(g.render_to_patch_pixels(pts), [[0, 0], [111.75, 111.75], [223, 223], [-0.25, 223.25]])


def test_patch_camera_agrees_with_render_to_patch_pixels() -> None:
    """Projecting with the 224 camera = projecting at 448, then mapping render -> patch pixels."""
    X = np.array([[0.0, 0.0, 300.0], [30.0, -20.0, 310.0], [-45.0, 60.0, 290.0]])
    at_448 = g.project(X, g.normalized_camera_matrix(448))
    at_224 = g.project(X, g.normalized_camera_matrix(224))
    np.testing.assert_allclose(at_224, g.render_to_patch_pixels(at_448), atol=1e-12)


def test_angular_error() -> None:
    a = g.vector_from_pitchyaw([0.1, 0.2])
    b = g.vector_from_pitchyaw([0.1, 0.2 + np.radians(5.0)])
    # same pitch, yaw apart by 5 deg: the angle is slightly less than 5 deg (cos(pitch) factor)
    assert 4.9 < g.angular_error_deg(a, b) < 5.0
    assert g.angular_error_deg(a, 3 * a) < 1e-6
    np.testing.assert_allclose(g.angular_error_deg([1, 0, 0], [0, 1, 0]), 90.0)
