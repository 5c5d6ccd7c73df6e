"""View geometry: where the mesh goes for a target head pose, and its exact labels.

Everything follows :mod:`nvsynth.core.geometry`; nothing here restates a formula.

1. The source is normalized as in Zhang et al. 2018, but rigidly: points are
   rotated by the normalizing rotation R about the camera origin, then moved
   along the optical axis so the face centre sits at (0, 0, d) mm, d the
   distance of the output's :class:`~nvsynth.core.geometry.NormSpec`
   (``render.normalization``: 300 for ``mpii-nv``, 600 for ``eth-xgaze``).
   The mesh is not S-scaled (a z-scale would distort it); the normalized
   camera's focal length does the zoom.
2. The source's normalized head pose H_s = R . hR has no roll, so it is
   hR(p_s, y_s). A target (p_t, y_t) turns everything about the face centre by
   rot = hR(p_t, y_t) . hR(p_s, y_s)^-1.
3. Strict re-normalization: the normalizing rotation of the turned face
   (face centre on the optical axis, so it only removes roll) is applied last.

Gaze turns with the head, so hR^T . g is the same for every view of a source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import geometry
from nvsynth.core.limits import LabelLimits, float32_norm_deg
from nvsynth.recon.record import ReconRecord

#: Where the face centre sits in normalized camera coordinates, mm (``mpii-nv``).
FACE_CENTER_NORM = np.array([0.0, 0.0, geometry.NORM_DISTANCE])


def face_center_norm(spec: geometry.NormSpec) -> NDArray[np.float64]:
    """Where the face centre sits in the normalized camera of ``spec``, mm."""
    return np.array([0.0, 0.0, spec.distance])


def rigid_matrix(rotation: ArrayLike, translation: ArrayLike) -> NDArray[np.float64]:
    """The 4x4 homogeneous matrix of x -> rotation . x + translation."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(rotation, dtype=np.float64)
    m[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return m


def apply_rigid(matrix: ArrayLike, points: ArrayLike) -> NDArray[np.float64]:
    """Apply a 4x4 rigid matrix to points (..., 3)."""
    m = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def pose_norm_deg(pitchyaw: ArrayLike) -> float:
    """sqrt(p^2 + y^2) of head labels, in degrees (the rejection criterion)."""
    p, y = np.asarray(pitchyaw, dtype=np.float64).reshape(2)
    return float(np.degrees(np.hypot(p, y)))


@dataclass(frozen=True)
class NormalizedSource:
    """A source frame after rigid normalization (from its annotation only)."""

    normalization: geometry.Normalization  # Zhang's normalization of the annotated pose
    to_norm: NDArray[np.float64]  # (4, 4) source camera mm -> normalized camera mm
    head_rotation: NDArray[np.float64]  # H_s = R . hR, roll-free
    pose: NDArray[np.float64]  # (2,) (p_s, y_s)
    gaze: NDArray[np.float64]  # (3,) unit gaze g_s, normalized camera
    gaze_labels: NDArray[np.float64]  # (2,) Zhang's gaze (pitch, yaw)
    spec: geometry.NormSpec = geometry.MPII_NV  # the output's normalization constants

    @property
    def gaze_in_head(self) -> NDArray[np.float64]:
        """hR^T . g: the same for every view of this source."""
        return self.head_rotation.T @ self.gaze


def normalize_source(
    rvec: ArrayLike,
    tvec: ArrayLike,
    camera_matrix: ArrayLike,
    gaze_target: ArrayLike,
    spec: geometry.NormSpec = geometry.MPII_NV,
) -> NormalizedSource:
    """Rigidly normalize a frame given its annotated head pose, camera and 3D gaze target."""
    pose = geometry.HeadPose.from_rvec(rvec, tvec)
    norm = geometry.normalize(pose, camera_matrix, spec=spec)
    R = norm.rotation
    shift = face_center_norm(spec) - R @ norm.face_center  # along the optical axis only
    H = norm.head_rotation_norm
    g = norm.gaze_vector(gaze_target)
    return NormalizedSource(
        normalization=norm,
        to_norm=rigid_matrix(R, shift),
        head_rotation=H,
        pose=geometry.pitchyaw_from_head_rotation(H),
        gaze=g,
        gaze_labels=geometry.pitchyaw_from_vector(g),
        spec=spec,
    )


def normalize_record(record: ReconRecord, spec: geometry.NormSpec = geometry.MPII_NV) -> NormalizedSource:
    """:func:`normalize_source` on a recon record's labels (its head pose and gaze target)."""
    return normalize_source(
        record.annotation_rvec, record.annotation_tvec, record.camera_matrix, record.gaze_target, spec
    )


@dataclass(frozen=True)
class View:
    """One novel view of a source: the renderer's transform and the row's labels."""

    target: NDArray[np.float64]  # (2,) requested head (pitch, yaw)
    transform: NDArray[np.float64]  # (4, 4) source camera mm -> normalized camera mm
    rotation_matrix: NDArray[np.float64]  # (3, 3) renorm . rot, applied in normalized space
    head_rotation: NDArray[np.float64]  # (3, 3) final H
    gaze: NDArray[np.float64]  # (3,) unit gaze, normalized camera
    face_gaze: NDArray[np.float64]  # (2,)
    face_head_pose: NDArray[np.float64]  # (2,)
    face_mat_norm: NDArray[np.float64]  # (3, 3) the source's R
    landmarks_norm: NDArray[np.float64]  # (68, 2) 224-patch pixels


def landmarks_to_patch(
    transform: ArrayLike, landmarks_3d: ArrayLike, spec: geometry.NormSpec = geometry.MPII_NV
) -> NDArray[np.float64]:
    """Source-camera landmarks through ``transform``, projected into the 224 patch."""
    pts = apply_rigid(transform, landmarks_3d)
    K = geometry.normalized_camera_matrix(geometry.NORM_RENDER_SIZE, spec)
    return geometry.render_to_patch_pixels(geometry.project(pts, K))


def make_view(source: NormalizedSource, target: ArrayLike, landmarks_3d: ArrayLike) -> View | None:
    """Turn the normalized source to head pose ``target``; ``None`` if re-normalization is degenerate."""
    target = np.asarray(target, dtype=np.float64).reshape(2)
    rot = geometry.head_rotation_from_pitchyaw(*target) @ source.head_rotation.T
    c = face_center_norm(source.spec)
    turned = rigid_matrix(rot, c - rot @ c)
    H_turned = rot @ source.head_rotation
    if np.hypot(H_turned[0, 0], H_turned[1, 0]) < 1e-9:  # head x axis along the optical axis: roll undefined
        return None
    renorm = geometry.normalizing_rotation(c, H_turned)
    rotation = renorm @ rot
    transform = rigid_matrix(renorm, np.zeros(3)) @ turned @ source.to_norm
    H = rotation @ source.head_rotation
    g = rotation @ source.gaze
    return View(
        target=target,
        transform=transform,
        rotation_matrix=rotation,
        head_rotation=H,
        gaze=g,
        face_gaze=geometry.pitchyaw_from_vector(g),
        face_head_pose=geometry.pitchyaw_from_head_rotation(H),
        face_mat_norm=source.normalization.rotation,
        landmarks_norm=landmarks_to_patch(transform, landmarks_3d, source.spec),
    )


#: A pose sampler: draws a target head pose for a source (``None``: draw again).
PoseSampler = Callable[[np.random.Generator, NormalizedSource], "NDArray[np.float64] | None"]


@dataclass(frozen=True)
class Sampled:
    """The outcome of :func:`sample_view`: a view, or ``None`` with the reason it was skipped."""

    view: View | None
    attempts: int
    reason: str = ""


def sample_view(
    source: NormalizedSource,
    sampler: PoseSampler,
    rng: np.random.Generator,
    landmarks_3d: ArrayLike,
    max_pose_deg: float,
    max_attempts: int,
) -> Sampled:
    """Draw targets until the view's labels are valid (:class:`nvsynth.core.limits.LabelLimits`).

    Valid: head-pose norm within ``max_pose_deg`` and every gaze and head angle
    within +-90 degrees, checked on the float32 labels the file stores, exactly
    as ``nvsynth inspect`` checks them. At most ``max_attempts`` draws; after
    that the view is skipped (``view`` is ``None``) and ``reason`` says why.
    Never loops forever.
    """
    limits = LabelLimits(max_pose_deg=float(max_pose_deg))
    unreachable = 0
    gaze_out = 0
    closest = np.inf
    for attempt in range(1, max_attempts + 1):
        target = sampler(rng, source)
        view = None if target is None else make_view(source, target, landmarks_3d)
        if view is None:
            unreachable += 1
            continue
        bad = limits.violations(view.face_gaze, view.face_head_pose)
        if not (bad["gaze_angle"][0] or bad["head_angle"][0] or bad["head_norm"][0]):
            return Sampled(view, attempt)
        if bad["head_norm"][0] or bad["head_angle"][0]:
            closest = min(closest, float32_norm_deg(view.face_head_pose))
        else:
            gaze_out += 1
    reason = f"no head pose within {max_pose_deg:g} deg in {max_attempts} attempts"
    if np.isfinite(closest):
        reason += f" (closest {closest:.1f} deg)"
    if gaze_out:
        reason += f" ({gaze_out} with gaze beyond +-{limits.angle_deg:g} deg)"
    if unreachable:
        reason += f" ({unreachable} unreachable targets)"
    return Sampled(None, max_attempts, reason)
