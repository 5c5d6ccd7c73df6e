"""The eyeball model: a sphere per eye, its optical axis from the iris, kappa and the centre per subject.

Geometry (head frame of the fitted mesh, :attr:`ReconRecord.head_rotation`:
x toward image-right for a frontal face, y down, z away from the camera; mm):

* each eye is a sphere of radius :data:`EYEBALL_RADIUS_MM` whose centre is the
  midpoint of the fitted mesh's two eye-corner vertices
  (:data:`recon.eyes.EYE_CORNER_VERTICES`) plus an offset, fixed in the head
  frame, with its x component mirrored so that +x is *nasal* for both eyes.
  The offset starts from OpenFace's (0, -3.5, 7) mm (3.5 mm up, 7 mm behind
  the corners) and is fitted per subject (:func:`fit_eyeball`);
* the iris is the polar cap of angular radius asin(:data:`IRIS_RADIUS_MM` /
  :data:`EYEBALL_RADIUS_MM`) about the optical axis: its boundary (the limbus)
  is a circle on the sphere whose centre lies on the axis at the *iris depth*
  sqrt(R^2 - r_iris^2) = 10.45 mm from the eyeball centre. The **optical axis**
  of a source frame is centre -> the iris centre of MediaPipe Iris (the centre
  of the limbus it sees), back-projected onto the sphere of the iris depth (the
  camera ray through the undistorted pixel, nearest intersection). Seen
  obliquely, the limbus centre and the sphere's front point (the pole) project
  apart by up to (12 - 10.45) mm x sin(angle), about 4 degrees of axis at 30
  degrees: the limbus centre is what an iris detector reports;
* the eye's orientation follows **Listing's law**: the rotation that takes the
  primary direction (head -z, out of the face) to the optical axis about an axis
  perpendicular to it (:func:`listing_rotation`); this fixes the torsion;
* the **visual axis** is the optical axis turned by the subject's kappa,
  (up, nasal) degrees, in the eye's own frame (:func:`kappa_direction`); the
  dataset's gaze label is the visual axis: from the eye towards the 3D target.

Per subject, :func:`fit_eyeball` estimates kappa and the centre offset (5
numbers, mirrored for the left eye) over all its frames with open eyes by robust
least squares (``scipy.optimize.least_squares``, soft-L1), so that each eye's
model visual axis points at the annotated target, with weak priors
(:data:`KAPPA_PRIOR_DEG`, :data:`OFFSET_PRIOR_SIGMA_MM`) that keep the problem
well posed on few frames. The residual (degrees between each eye's model visual
axis and its direction to the target) is reported per subject.

Blinks and closed eyes: the eye aspect ratio (Soukupova & Cech, "Real-Time Eye
Blink Detection using Facial Landmarks", CVWW 2016) from the eyelid contour of
MediaPipe Iris, :func:`eye_aspect_ratio`; an eye below :data:`EAR_CLOSED` is closed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import geometry
from nvsynth.core.atomic import write_text
from nvsynth.recon.eyes import EYE_CORNER_VERTICES
from nvsynth.recon.record import ReconRecord

#: Eyeball radius, mm: OpenFace's gaze estimator (GazeAnalyser.cpp, Baltrusaitis et al. 2018) intersects the
#: pupil ray with a 12 mm sphere; the adult eye's axial length is about 24 mm.
EYEBALL_RADIUS_MM = 12.0
#: Iris radius, mm: the horizontal visible iris diameter is 11.7 +- 0.5 mm across a wide population
#: (MediaPipe Iris, Ablavatski et al., CVPRW 2020, which uses it to estimate depth).
IRIS_RADIUS_MM = 5.9
#: Default eyeball-centre offset from the eye corners' midpoint, head frame mm (x nasal, y down, z back):
#: OpenFace GazeAnalyser.cpp, ``offset = (0, -3.5, 7.0)``.
CENTRE_OFFSET_MM = np.array([0.0, -3.5, 7.0])
#: Prior of kappa (up, nasal) in degrees: the visual axis lies nasal of the optical axis (positive angle kappa),
#: usually within about 5 degrees (EyeWiki, "Optical Axes and Angle Kappa"); vertical component taken as 0.
KAPPA_PRIOR_DEG = np.array([0.0, 5.0])
#: Prior spreads: kappa (degrees) and centre offset (mm). Weak: one sigma costs as much as one eye's residual of
#: ROBUST_SCALE_DEG in one frame, so a subject's frames outweigh them.
KAPPA_PRIOR_SIGMA_DEG = 5.0
OFFSET_PRIOR_SIGMA_MM = 2.0
#: Soft-L1 scale of the gaze residuals (degrees): residuals beyond it count linearly (robust to bad frames).
ROBUST_SCALE_DEG = 2.0
#: Bounds of the fit: kappa within +-15 degrees, the offset within +-6 mm of CENTRE_OFFSET_MM.
KAPPA_BOUND_DEG = 15.0
OFFSET_BOUND_MM = 6.0
#: An eye whose aspect ratio is below this is closed (Soukupova & Cech 2016 threshold their EAR at 0.2).
EAR_CLOSED = 0.2
#: Per eye, +1 where +x (head frame) is nasal: eye 0 is the subject's right eye (image left), eye 1 the left.
NASAL_SIGN = np.array([1.0, -1.0])
#: The primary direction of gaze in the head frame: out of the face.
FORWARD = np.array([0.0, 0.0, -1.0])
#: File name of a subject's eyeball model in its recon output folder.
EYEBALL_FILE = "eyeball.json"


def _cross(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """a x b of two 3-vectors (``np.cross`` costs ~20 us a call here; this ~2)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _rodrigues(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """The smallest rotation (3, 3) taking unit ``a`` to unit ``b`` (Rodrigues' formula); ``a`` = -``b`` turns
    about y."""
    axis = _cross(a, b)
    s, c = float(np.sqrt(axis @ axis)), float(a @ b)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([-1.0, 1.0, -1.0])
    k = axis / s
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * K + (1.0 - c) * (K @ K)


def listing_rotation(direction: ArrayLike) -> NDArray[np.float64]:
    """The rotation (3, 3) that takes :data:`FORWARD` to ``direction`` about an axis perpendicular to FORWARD."""
    d = np.asarray(direction, dtype=np.float64)
    return _rodrigues(FORWARD, d / np.sqrt(d @ d))


def kappa_direction(kappa_deg: ArrayLike, eye: int) -> NDArray[np.float64]:
    """The visual axis in the eye's own frame (unit): FORWARD turned ``kappa`` = (up, nasal) degrees."""
    up, nasal = np.radians(np.asarray(kappa_deg, dtype=np.float64).reshape(2))
    # gaze-label convention (nvsynth.core.geometry): positive yaw points to -x, so nasal is -NASAL_SIGN yaw
    return geometry.vector_from_pitchyaw(np.array([up, -NASAL_SIGN[eye] * nasal]))


def eye_aspect_ratio(contour: ArrayLike) -> NDArray[np.float64]:
    """(2,) eye aspect ratio of each eye from its MediaPipe Iris contour (2, >= 16, 2).

    The first 16 contour points are the lower lid outer -> inner (9, corners
    included) and the upper lid outer -> inner (7): the 6-point EAR of
    Soukupova & Cech, (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|), with p2, p3 the
    upper-lid points at about one and two thirds of the lid and p6, p5 the
    lower-lid points below them.
    """
    c = np.asarray(contour, dtype=np.float64)[:, :16]
    width = np.linalg.norm(c[:, 8] - c[:, 0], axis=1)
    gaps = np.linalg.norm(c[:, [11, 13]] - c[:, [3, 5]], axis=2).sum(axis=1)
    return gaps / np.maximum(2.0 * width, 1e-9)


def eye_centres(vertices: ArrayLike, head_rotation: ArrayLike, offset_mm: ArrayLike) -> NDArray[np.float64]:
    """(2, 3) eyeball centres, camera mm: eye-corner midpoints plus the (nasal-mirrored) head-frame offset."""
    v = np.asarray(vertices, dtype=np.float64)
    R = np.asarray(head_rotation, dtype=np.float64)
    o = np.asarray(offset_mm, dtype=np.float64).reshape(3)
    mids = v[EYE_CORNER_VERTICES].mean(axis=1)
    return np.stack([mids[e] + R @ (o * np.array([NASAL_SIGN[e], 1.0, 1.0])) for e in range(2)])


def iris_centre(iris: ArrayLike) -> NDArray[np.float64]:
    """The limbus centre (..., 2) from MediaPipe Iris's five points (..., 5, 2): the midpoint of the two boundary
    points along the eye (1 and 3).

    The lids cover the top and bottom of the iris whenever the eye looks up or
    down; the horizontal diameter's ends are the points they hide least, and
    they lie at the centre's height. (On rendered eyes turned 20-30 degrees up
    or down it read the same as point 0 to about a pixel at 448: both drift
    toward the visible part; the gaze benchmark's crop re-centring is what
    removes most of that drift.)
    """
    p = np.asarray(iris, dtype=np.float64)
    return 0.5 * (p[..., 1, :] + p[..., 3, :])


def iris_rays(record: ReconRecord) -> NDArray[np.float64]:
    """(2, 3) camera rays (z = 1) through the two iris centres (:func:`iris_centre`), undistorted."""
    if record.iris_2d is None:
        raise ValueError(f"record {record.source_file} has no iris (recon.detector: mediapipe writes it)")
    px = iris_centre(record.iris_2d).reshape(2, 1, 2)
    xy = cv2.undistortPoints(px, record.camera_matrix, np.asarray(record.dist_coeffs, dtype=np.float64).ravel())
    return np.c_[xy.reshape(2, 2), np.ones(2)]


def sphere_hit(rays: ArrayLike, centres: ArrayLike, radius: float = EYEBALL_RADIUS_MM) -> NDArray[np.float64]:
    """(2, 3) nearest intersection of each camera ray (from the origin) with its sphere.

    A ray that misses takes the sphere point nearest to it (the ray's closest
    approach pushed out to the surface), so the axis degrades gracefully.
    """
    d = np.asarray(rays, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    c = np.asarray(centres, dtype=np.float64)
    b = np.einsum("ij,ij->i", d, c)
    disc = b * b - (np.einsum("ij,ij->i", c, c) - radius * radius)
    t = b - np.sqrt(np.maximum(disc, 0.0))
    p = d * t[:, None]
    miss = disc < 0
    if np.any(miss):
        q = d[miss] * b[miss, None] - c[miss]
        p[miss] = c[miss] + radius * q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return p


@dataclass(frozen=True)
class EyeballModel:
    """A subject's eyeball parameters and how well they reproduce its gaze labels."""

    kappa_deg: tuple[float, float] = (float(KAPPA_PRIOR_DEG[0]), float(KAPPA_PRIOR_DEG[1]))  # (up, nasal)
    offset_mm: tuple[float, float, float] = (0.0, -3.5, 7.0)  # centre offset (nasal, down, back), head frame
    radius_mm: float = EYEBALL_RADIUS_MM
    iris_radius_mm: float = IRIS_RADIUS_MM
    frames: int = 0  # frames the fit used (both eyes open)
    frames_closed: int = 0  # frames left out: an eye closed
    residual_median_deg: float = float("nan")  # per eye: model visual axis vs direction to the target
    residual_p90_deg: float = float("nan")
    residual_face_median_deg: float = float("nan")  # mean of both eyes' axes vs face centre -> target
    residual_prior_median_deg: float = float("nan")  # the same per-eye residual with the prior parameters
    frame_residuals_deg: list[float] = field(default_factory=list)  # per used frame, mean of the two eyes

    @property
    def iris_angle(self) -> float:
        """Angular radius (radians) of the iris cap on the sphere."""
        return float(np.arcsin(self.iris_radius_mm / self.radius_mm))

    @property
    def iris_depth_mm(self) -> float:
        """Distance from the eyeball centre to the limbus circle's centre, where iris centres are back-projected."""
        return float(np.sqrt(self.radius_mm**2 - self.iris_radius_mm**2))

    def visual_axis(self, eye: int) -> NDArray[np.float64]:
        """The visual axis in the eye's own frame."""
        return kappa_direction(self.kappa_deg, eye)

    def save(self, path: Path) -> Path:
        write_text(path, json.dumps(asdict(self), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> EyeballModel:
        d = json.loads(Path(path).read_text())
        d["kappa_deg"] = tuple(float(x) for x in d["kappa_deg"])
        d["offset_mm"] = tuple(float(x) for x in d["offset_mm"])
        return cls(**d)

    def report(self, subject: str) -> str:
        """One line for ``nvsynth recon``."""
        k, o = self.kappa_deg, self.offset_mm
        return (
            f"{subject}: eyeball model over {self.frames} frames ({self.frames_closed} with a closed eye left out): "
            f"kappa {k[0]:+.1f} deg up, {k[1]:+.1f} deg nasal; centre offset ({o[0]:+.1f}, {o[1]:+.1f}, {o[2]:+.1f}) "
            f"mm (nasal, down, back); gaze residual per eye median {self.residual_median_deg:.2f} deg, "
            f"p90 {self.residual_p90_deg:.2f} deg (face {self.residual_face_median_deg:.2f} deg; "
            f"{self.residual_prior_median_deg:.2f} deg with the prior parameters)"
        )


def eyeball_path(subject_dir: Path) -> Path:
    """Where a subject's eyeball model lives: ``<obj>/<subject>/eyeball.json``."""
    return Path(subject_dir) / EYEBALL_FILE


@dataclass(frozen=True)
class SourceEyes:
    """Both eyes of one source frame under a subject's :class:`EyeballModel` (camera mm of the source)."""

    centres: NDArray[np.float64]  # (2, 3)
    orientation: NDArray[np.float64]  # (2, 3, 3) eye frame -> source camera (head rotation . Listing rotation)
    optical: NDArray[np.float64]  # (2, 3) unit optical axes, camera
    visual: NDArray[np.float64]  # (2, 3) unit visual axes, camera
    ear: NDArray[np.float64]  # (2,) eye aspect ratios
    head_rotation: NDArray[np.float64]  # (3, 3) fitted head frame -> camera

    @property
    def open(self) -> bool:
        """Both eyes open (aspect ratio at least :data:`EAR_CLOSED`): the frame's eyes may be redirected."""
        return bool(np.all(self.ear >= EAR_CLOSED))


def source_eyes(record: ReconRecord, model: EyeballModel) -> SourceEyes:
    """The eyes of a frame: centres, optical axes from the iris, orientation (Listing), visual axes."""
    if record.eye_contour_2d is None:
        raise ValueError(f"record {record.source_file} has no eye contours (recon.detector: mediapipe writes them)")
    R = np.asarray(record.head_rotation, dtype=np.float64)
    c = eye_centres(record.vertices, R, model.offset_mm)
    hit = sphere_hit(iris_rays(record), c, model.iris_depth_mm)
    optical = (hit - c) / np.linalg.norm(hit - c, axis=1, keepdims=True)
    orient = np.stack([R @ listing_rotation(R.T @ optical[e]) for e in range(2)])
    visual = np.stack([orient[e] @ model.visual_axis(e) for e in range(2)])
    return SourceEyes(c, orient, optical, visual, eye_aspect_ratio(record.eye_contour_2d), R)


def orientation_towards(model: EyeballModel, head_rotation: ArrayLike, centre: ArrayLike, target: ArrayLike,
                        eye: int, iterations: int = 12) -> NDArray[np.float64]:  # fmt: skip
    """The Listing orientation (eye frame -> camera, 3x3) whose visual axis points from ``centre`` at ``target``.

    Solved by fixed-point iteration on the optical axis (kappa is small: each
    step shrinks the error by about kappa's angle in radians), to 1e-12 radians.
    """
    R = np.asarray(head_rotation, dtype=np.float64)
    want = R.T @ (np.asarray(target, dtype=np.float64) - np.asarray(centre, dtype=np.float64))
    want /= np.sqrt(want @ want)
    k = model.visual_axis(eye)
    optical = listing_rotation(want) @ _rodrigues(k, FORWARD) @ FORWARD  # kappa undone in the target's frame
    for _ in range(iterations):
        v = listing_rotation(optical) @ k
        miss = _cross(v, want)
        if float(miss @ miss) < 1e-24:  # below 1e-12 radians
            break
        optical = _rodrigues(v, want) @ optical
    return R @ listing_rotation(optical)
