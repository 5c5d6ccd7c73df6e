"""Label geometry: every convention nvsynth relies on, stated once.

Sources
-------
* Axes: OpenCV pinhole camera -- x right, y down, z forward, millimetres
  (OpenCV ``calib3d`` documentation, "Camera Calibration and 3D Reconstruction").
* Face model: the MPIIGaze 6-point generic face model (Zhang et al., "MPIIGaze",
  TPAMI 2019), in mm, in the order right-eye outer, right-eye inner, left-eye
  inner, left-eye outer, right mouth, left mouth. Its axes match the camera's
  for a frontal face: x toward the subject's left (image right), y down,
  z away from the camera.
* Head pose: EPnP followed by iterative (Levenberg-Marquardt) refinement,
  with the camera's distortion coefficients (``cv2.solvePnP``). The face
  centre is the mean of the six transformed model points.
* Data normalization: Zhang, Sugano, Bulling, "Revisiting Data Normalization
  for Appearance-Based Gaze Estimation", ETRA 2018, with the ETH-XGaze
  constants (Zhang et al., ECCV 2020): focal 960, distance 300 mm, a
  448x448 normalized image that is stored at 224x224.
* Labels, in radians, as in ETH-XGaze's ``data_loader.py`` / ``utils.py``:
  gaze pitch = asin(-g_y), yaw = atan2(-g_x, -g_z);
  head pitch = asin(H[1,2]), yaw = atan2(H[0,2], H[2,2]).
  So looking or turning up gives positive pitch, and toward image-left
  (the subject's right) gives positive yaw.
* hR(p, y) = Ry(y) . Rx(-p): the zero-roll head rotation whose labels read
  back as (p, y). For |y| <= 90 degrees it is the only rotation with those
  labels whose x axis has no component along the camera's y axis (the
  constraint the normalization puts on the normalized head,
  ``normalizing_rotation``): a normalized patch's ``face_head_pose`` gives back
  its head rotation exactly (:func:`normalized_head_rotation`, any yaw).
* Two sets of normalization constants (:class:`NormSpec`): ``mpii-nv``
  (nvsynth's default: focal 960 at 448 px, 300 mm, stored at 224) and
  ``eth-xgaze`` (ETH-XGaze's ``normalizeData_face``: focal 960 at 224 px,
  600 mm, principal point at 112). Same focal-to-distance ratio, so the same
  face scale, a different perspective.
* A head pose given by a rotation and a face centre (datasets without
  six-point model poses) is the MPIIGaze model pose whose six-point mean is
  that centre (:meth:`HeadPose.from_face_center`); without any head pose, the
  detected landmarks' six points give one by the same PnP (:func:`estimate_head_pose`);
  a gaze direction without a
  target becomes the target ``GAZE_TARGET_DISTANCE`` mm from the face centre
  along it (the labels use only the direction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

# --- constants ---------------------------------------------------------------

#: MPIIGaze 6-point face model, mm (see module docstring for order and axes).
FACE_MODEL_6 = np.array(
    [
        [-45.096768, -0.483773, 2.397030],
        [-21.312858, 0.483773, -2.397030],
        [21.312858, 0.483773, -2.397030],
        [45.096768, -0.483773, 2.397030],
        [-26.299577, 68.595035, 0.0],
        [26.299577, 68.595035, 0.0],
    ],
    dtype=np.float64,
)

#: Zhang et al. 2018 / ETH-XGaze normalization constants as nvsynth renders them (``mpii-nv``).
NORM_FOCAL = 960.0
NORM_DISTANCE = 300.0
NORM_RENDER_SIZE = 448
NORM_PATCH_SIZE = 224
#: Distance of the gaze target made from a gaze direction, mm (any positive value gives the same labels).
GAZE_TARGET_DISTANCE = 1000.0


@dataclass(frozen=True)
class NormSpec:
    """Normalization constants: a camera of focal ``focal`` at ``size`` px (principal point at the centre).

    nvsynth always renders at :data:`NORM_RENDER_SIZE` and area-resizes to the
    stored patch (:data:`NORM_PATCH_SIZE`); the camera at any other pixel size
    is this one resampled (:func:`normalized_camera_matrix`).
    """

    name: str
    focal: float  # pixels, at ``size``
    distance: float  # mm from the camera to the face centre
    size: int  # the image size the focal and principal point refer to

    def camera_matrix(self, size: int | None = None) -> NDArray[np.float64]:
        return normalized_camera_matrix(self.size if size is None else size, self)


#: nvsynth's own output (MPII-NV, Gaze-NV-Rendering): focal 960 at 448 px, 300 mm, stored at 224.
MPII_NV = NormSpec("mpii-nv", NORM_FOCAL, NORM_DISTANCE, NORM_RENDER_SIZE)
#: ETH-XGaze's ``normalizeData_face`` (Zhang et al., ECCV 2020 code): focal 960, 600 mm, 224x224, centre 112.
ETH_XGAZE = NormSpec("eth-xgaze", 960.0, 600.0, 224)
NORM_SPECS: dict[str, NormSpec] = {s.name: s for s in (MPII_NV, ETH_XGAZE)}


def normalized_camera_matrix(size: int = NORM_RENDER_SIZE, spec: NormSpec = MPII_NV) -> NDArray[np.float64]:
    """The normalized camera at ``size`` px: ``spec``'s focal and centre, resampled (default focal 960 at 448).

    ``size`` other than ``spec.size`` is the ``spec.size`` image resampled to
    ``size``: focal scales with the image and the principal point maps as pixel
    centres do (:func:`render_to_patch_pixels`), so ``normalized_camera_matrix(224)``
    is the camera of the stored 224 patch (focal 480, principal point 111.75),
    and ``normalized_camera_matrix(448, ETH_XGAZE)`` renders at 448 what an
    area resize turns into ETH-XGaze's camera (focal 960, principal point 112).
    """
    s = size / spec.size
    f = spec.focal * s
    c = (spec.size / 2.0 + 0.5) * s - 0.5
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def render_to_patch_pixels(points: ArrayLike) -> NDArray[np.float64]:
    """Map pixel coordinates of the 448 render to the 224 patch.

    Pixel centres sit at integer coordinates (OpenCV). A 2x2 area average maps
    the centres 0 and 1 of the render onto centre 0 of the patch.
    """
    p = np.asarray(points, dtype=np.float64)
    scale = NORM_PATCH_SIZE / NORM_RENDER_SIZE
    return (p + 0.5) * scale - 0.5


# --- rotations ----------------------------------------------------------------


def rot_x(a: float) -> NDArray[np.float64]:
    """Right-handed rotation about the x axis by ``a`` radians."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> NDArray[np.float64]:
    """Right-handed rotation about the y axis by ``a`` radians."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def head_rotation_from_pitchyaw(pitch: float, yaw: float) -> NDArray[np.float64]:
    """hR(p, y) = Ry(y) . Rx(-p), the zero-roll head rotation labelled (p, y)."""
    return rot_y(yaw) @ rot_x(-pitch)


def normalized_head_rotation(pitch: float, yaw: float) -> NDArray[np.float64]:
    """The normalized head rotation whose labels are (pitch, yaw).

    Normalization (:func:`normalizing_rotation`) leaves the head's x axis in
    the normalized camera's x-z plane, on the side of +x. Of the rotations
    labelled (p, y) exactly one does that: hR(p, y) when |y| <= 90 degrees
    (every face seen from the front), hR(p, y) . Rz(pi) beyond.
    """
    H = head_rotation_from_pitchyaw(pitch, yaw)
    if H[0, 0] < 0.0:
        H = H @ np.diag([-1.0, -1.0, 1.0])
    return H


def pitchyaw_from_head_rotation(H: ArrayLike) -> NDArray[np.float64]:
    """Head labels (pitch, yaw) of rotation(s) ``H`` (..., 3, 3)."""
    H = np.asarray(H, dtype=np.float64)
    pitch = np.arcsin(np.clip(H[..., 1, 2], -1.0, 1.0))
    yaw = np.arctan2(H[..., 0, 2], H[..., 2, 2])
    return np.stack([pitch, yaw], axis=-1)


# --- gaze vectors -------------------------------------------------------------


def pitchyaw_from_vector(g: ArrayLike) -> NDArray[np.float64]:
    """Gaze labels (pitch, yaw) of direction(s) ``g`` (..., 3); need not be unit."""
    g = np.asarray(g, dtype=np.float64)
    g = g / np.linalg.norm(g, axis=-1, keepdims=True)
    pitch = np.arcsin(np.clip(-g[..., 1], -1.0, 1.0))
    yaw = np.arctan2(-g[..., 0], -g[..., 2])
    return np.stack([pitch, yaw], axis=-1)


def vector_from_pitchyaw(py: ArrayLike) -> NDArray[np.float64]:
    """Unit gaze direction(s) (..., 3) of labels (..., 2); inverse of the above."""
    py = np.asarray(py, dtype=np.float64)
    p, y = py[..., 0], py[..., 1]
    return np.stack([-np.cos(p) * np.sin(y), -np.sin(p), -np.cos(p) * np.cos(y)], axis=-1)


def angular_error_deg(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Angle in degrees between direction(s) ``a`` and ``b`` (..., 3)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    cos = np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


# --- head pose ----------------------------------------------------------------


@dataclass(frozen=True)
class HeadPose:
    """A head pose in a camera: rotation hR (model -> camera) and translation t, mm."""

    rotation: NDArray[np.float64]
    translation: NDArray[np.float64]
    #: the rotation vector it was made from, kept so that :attr:`rvec` gives it back bit for bit
    given_rvec: NDArray[np.float64] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_rvec(cls, rvec: ArrayLike, tvec: ArrayLike) -> HeadPose:
        r = np.asarray(rvec, dtype=np.float64).reshape(3)
        R, _ = cv2.Rodrigues(r.reshape(3, 1))
        return cls(R, np.asarray(tvec, dtype=np.float64).reshape(3), r.copy())

    @classmethod
    def from_face_center(cls, rotation: ArrayLike, face_center: ArrayLike) -> HeadPose:
        """The six-point model pose with rotation ``rotation`` whose face centre is ``face_center``."""
        R = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        c = np.asarray(face_center, dtype=np.float64).reshape(3)
        return cls(R, c - R @ FACE_MODEL_6.mean(axis=0))

    @property
    def rvec(self) -> NDArray[np.float64]:
        if self.given_rvec is not None:
            return self.given_rvec
        return cv2.Rodrigues(self.rotation)[0].reshape(3)

    def transform(self, points: ArrayLike) -> NDArray[np.float64]:
        """Model points (N, 3) into camera coordinates."""
        return np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def face_center(self) -> NDArray[np.float64]:
        """Mean of the six transformed MPIIGaze model points, camera mm."""
        return self.transform(FACE_MODEL_6).mean(axis=0)


#: Stop rule of the final Levenberg-Marquardt refinement of the head pose (cv2.solvePnPRefineLM).
PNP_LM_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 100, 1e-12)


def estimate_head_pose(
    landmarks_6: ArrayLike,
    camera_matrix: ArrayLike,
    dist_coeffs: ArrayLike,
    model: ArrayLike = FACE_MODEL_6,
) -> HeadPose:
    """Head pose from the 6 image landmarks: EPnP, then iterative refinement."""
    obj = np.ascontiguousarray(np.asarray(model, dtype=np.float64).reshape(-1, 1, 3))
    img = np.ascontiguousarray(np.asarray(landmarks_6, dtype=np.float64).reshape(-1, 1, 2))
    K = np.asarray(camera_matrix, dtype=np.float64)
    d = np.asarray(dist_coeffs, dtype=np.float64).ravel()
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, d, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        raise ValueError("EPnP failed on the 6 face landmarks")
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, d, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("iterative PnP failed on the 6 face landmarks")
    # the same Levenberg-Marquardt, run to convergence: solvePnP's default stop left up to ~2e-6 mm
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, d, rvec, tvec, PNP_LM_CRITERIA)
    return HeadPose.from_rvec(rvec, tvec)


def gaze_target_from_direction(face_center: ArrayLike, direction: ArrayLike) -> NDArray[np.float64]:
    """The 3D gaze target ``GAZE_TARGET_DISTANCE`` mm from the face centre along ``direction``."""
    d = np.asarray(direction, dtype=np.float64).reshape(3)
    return np.asarray(face_center, dtype=np.float64).reshape(3) + GAZE_TARGET_DISTANCE * d / np.linalg.norm(d)


# --- data normalization (Zhang et al. 2018) -------------------------------------


@dataclass(frozen=True)
class Normalization:
    """The normalizing transform of one source frame.

    ``rotation`` R has the rows [right; down; forward]. Applied to camera
    coordinates about the camera origin it puts the face centre on the optical
    axis and removes the head's roll. ``warp`` is Zhang's image warp
    W = K_n S R K^-1 to the 448 normalized image.
    """

    rotation: NDArray[np.float64]
    scale: NDArray[np.float64]
    warp: NDArray[np.float64]
    face_center: NDArray[np.float64]
    head_rotation: NDArray[np.float64]

    @property
    def head_rotation_norm(self) -> NDArray[np.float64]:
        """H = R . hR."""
        return self.rotation @ self.head_rotation

    def head_pitchyaw(self) -> NDArray[np.float64]:
        return pitchyaw_from_head_rotation(self.head_rotation_norm)

    def gaze_vector(self, target: ArrayLike) -> NDArray[np.float64]:
        """g = normalize(R . (target - centre))."""
        g = self.rotation @ (np.asarray(target, dtype=np.float64) - self.face_center)
        return g / np.linalg.norm(g)

    def gaze_pitchyaw(self, target: ArrayLike) -> NDArray[np.float64]:
        return pitchyaw_from_vector(self.gaze_vector(target))


def normalizing_rotation(face_center: ArrayLike, head_rotation: ArrayLike) -> NDArray[np.float64]:
    """R with rows [right; down; forward] (Zhang et al. 2018, ETH-XGaze code).

    forward = c/|c|, down = normalize(forward x hR[:,0]),
    right = normalize(down x forward).
    """
    c = np.asarray(face_center, dtype=np.float64).reshape(3)
    hR = np.asarray(head_rotation, dtype=np.float64)
    forward = c / np.linalg.norm(c)
    down = np.cross(forward, hR[:, 0])
    down /= np.linalg.norm(down)
    right = np.cross(down, forward)
    right /= np.linalg.norm(right)
    return np.stack([right, down, forward], axis=0)


def normalize(
    head_pose: HeadPose,
    camera_matrix: ArrayLike,
    face_center: ArrayLike | None = None,
    spec: NormSpec = MPII_NV,
) -> Normalization:
    """Zhang's normalization of a frame with the given head pose and camera (warp to the 448 render)."""
    c = head_pose.face_center() if face_center is None else np.asarray(face_center, float).reshape(3)
    R = normalizing_rotation(c, head_pose.rotation)
    S = np.diag([1.0, 1.0, spec.distance / np.linalg.norm(c)])
    K = np.asarray(camera_matrix, dtype=np.float64)
    W = normalized_camera_matrix(NORM_RENDER_SIZE, spec) @ S @ R @ np.linalg.inv(K)
    return Normalization(R, S, W, c, head_pose.rotation)


def project(points: ArrayLike, camera_matrix: ArrayLike) -> NDArray[np.float64]:
    """Pinhole projection (no distortion) of camera points (..., 3) to pixels (..., 2)."""
    p = np.asarray(points, dtype=np.float64)
    K = np.asarray(camera_matrix, dtype=np.float64)
    uvw = p @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


def _wrap_angle(a: float) -> float:
    """``a`` wrapped to (-pi, pi]."""
    return float(np.arctan2(np.sin(a), np.cos(a)))


def head_pitchyaw_for_gaze(gaze_in_head: ArrayLike, gaze_pitchyaw: ArrayLike) -> NDArray[np.float64] | None:
    """Zero-roll head labels (p, y) with hR(p, y) . ``gaze_in_head`` = the gaze labelled ``gaze_pitchyaw``.

    With w = Rx(-p) . g the condition on w's y-component fixes p
    (g_y cos p + g_z sin p = -sin(gaze pitch)); Ry(y) then adds y to w's yaw.
    Of the two solutions the one with the smaller |p| (within +-90 degrees) is
    returned; ``None`` when the gaze cannot be reached by a zero-roll head.
    """
    g = np.asarray(gaze_in_head, dtype=np.float64).reshape(3)
    g = g / np.linalg.norm(g)
    pg, yg = (float(v) for v in np.asarray(gaze_pitchyaw, dtype=np.float64).reshape(2))
    amp = float(np.hypot(g[1], g[2]))
    want = -np.sin(pg)
    if amp < 1e-12 or abs(want) > amp:
        return None
    phi = float(np.arctan2(g[2], g[1]))
    delta = float(np.arccos(np.clip(want / amp, -1.0, 1.0)))
    candidates = [_wrap_angle(phi + s * delta) for s in (1.0, -1.0)]
    candidates = [p for p in candidates if abs(p) <= np.pi / 2]
    if not candidates:
        return None
    p = min(candidates, key=abs)
    w = rot_x(-p) @ g
    yaw_w = float(pitchyaw_from_vector(w)[1])
    y = _wrap_angle(yg - yaw_w)
    return pitchyaw_from_head_rotation(head_rotation_from_pitchyaw(p, y))
