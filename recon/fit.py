"""Per-frame fit of the canonical face mesh to 68 landmarks, in the frame's calibrated camera.

Everything happens in the ideal pinhole camera (the landmarks are undistorted
first); millimetres throughout.

1. **Rigid pose**: PnP (EPnP, then Levenberg-Marquardt) of the template's
   vertices for the 51 interior landmarks (brows, nose, eyes, mouth).
2. **Shape scale**: pose and per-axis template scales (sx, sy, sz) by
   least squares over all 68 landmarks (``scipy.optimize.least_squares``,
   Levenberg-Marquardt with the analytic Jacobian, :mod:`recon.pose_scale`),
   with priors: sx and sy near 1 (faces differ by about 10%), and sz tied to
   sx (the template's depth-to-width ratio, 0.647, is kept unless the data
   clearly demand otherwise -- depth is barely observable from one view).
   With the frame's annotation, the landmarks-only pose is compared with it
   and, where configured, the step is repeated with a prior towards the
   annotation's rotation (0.25 deg by default: see ``FitWeights.rotation_prior_deg``).
3. **Smooth deformation** (:mod:`recon.deform`): displacements D of all
   vertices (in the scaled head frame) by sparse linear least squares:
   landmark rows pull the projection rays of the landmark vertices onto the
   detected points, a uniform-Laplacian term keeps D smooth, and a strong term
   on the depth (head z) component keeps the template's metric depth profile.
   The constant part of the normal matrix is inverted once per process; each
   frame adds only its landmark rows (push-through identity), so a frame costs
   a 136x136 solve.
4. **Placement** (:mod:`recon.placement`): with the annotation, the mesh is
   scaled about the camera origin so that the centroid of its six annotation
   vertices has the depth of the annotation's face centre.

Jaw contour: dlib's 17 jaw points lie on the face's silhouette, which moves
over the 3D surface with the pose. At every pose each jaw landmark is bound to the point of
the projected silhouette (mesh outline or occluding contour) nearest to it in
the image, on its side of the face: a point on a silhouette edge, interpolated
between its two vertices, so the fit does not snap the contour to the coarse
mesh's vertex spacing (hand-labelled faces fitted to their own labels, error /
outer-eye distance: breakingbad 0.0245 -> 0.0186, einstein 0.0219 -> 0.0176,
takeo 0.0175 -> 0.0120).

Dense landmarks (468 points in the template's vertex order, with relative
depth) replace the 68 points in steps 1-3 where a backend provides them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import ibug68
from nvsynth.core.geometry import HeadPose, estimate_head_pose, project, rot_x
from nvsynth.recon.deform import RelativeDepth
from nvsynth.recon.deform import deform as _deform
from nvsynth.recon.fit_model import CHIN, INTERIOR, JAW, FitError, FitModel, FitWeights, LandmarkBinding, fit_weights
from nvsynth.recon.placement import depth_placement, rotation_difference_deg
from nvsynth.recon.pose_scale import PoseScale, fit_pose_scale
from nvsynth.recon.subdivision import Subdivision, subdivision
from nvsynth.recon.template import depth_to_width_ratio

__all__ = [
    "CHIN",
    "INTERIOR",
    "JAW",
    "FitError",
    "FitModel",
    "FitResult",
    "FitWeights",
    "LandmarkBinding",
    "Subdivision",
    "fit_landmarks",
    "fit_weights",
    "place_at_annotation_depth",
    "subdivision",
]


@dataclass(frozen=True)
class FitResult:
    vertices: NDArray[np.float64]  # (V, 3) camera mm
    rotation: NDArray[np.float64]  # (3, 3) template head frame -> camera
    translation: NDArray[np.float64]  # (3,) mm
    scale: NDArray[np.float64]  # (3,) template scales sx, sy, sz
    landmark_vertices: NDArray[np.int64]  # (68,) vertex of each landmark (jaw re-picked)
    landmarks_3d: NDArray[np.float64]  # (68, 3) camera mm
    landmarks_ideal: NDArray[np.float64]  # (68, 2) the undistorted detected points that were fitted
    reprojection_error_ideal_px: float  # mean over 68, undistorted pixels
    depth_ratio: float  # z-extent / x-extent of the fitted mesh in its head frame
    # -- against the annotation (nan without one); R_p: recon.placement ---------------------------
    annotation_rotation_deg: float = float("nan")  # angle between the fitted rotation and hR . R_p
    landmark_rotation_deg: float = float("nan")  # the same for the landmarks-only pose (with a prior: their PnP)
    depth_correction_mm: float = float("nan")  # annotation face-centre depth - fitted six-point centroid depth


@dataclass(frozen=True)
class _Targets:
    """What the pose-and-scale step fits: fixed (vertex, ideal pixel, sigma px) triples, and the jaw."""

    vertices: NDArray[np.int64]
    points: NDArray[np.float64]
    sigma: NDArray[np.float64]
    landmarks: NDArray[np.float64] | None  # (68, 2) where the jaw is fitted (bound to the silhouette per pass)
    jaw_sigma: float


def _targets(model: FitModel, pts: NDArray[np.float64], io: float, dense: NDArray[np.float64] | None) -> _Targets:
    """Dense points (the face oval down-weighted), or the 68 points' interior (and jaw where weighted)."""
    w = model.weights
    if dense is not None:
        sig = np.where(model.outline_vertices, w.dense_outline_sigma, w.dense_sigma) * io
        return _Targets(np.arange(len(model.X0)), dense[:, :2], sig, None, np.inf)
    sig = np.full(len(INTERIOR), w.landmark_sigma * io)
    jaw = pts if np.isfinite(w.jaw_sigma) else None
    return _Targets(model.landmark_map[INTERIOR], pts[INTERIOR], sig, jaw, w.jaw_sigma * io)


def _pose_scale(
    model: FitModel,
    tg: _Targets,
    K: NDArray[np.float64],
    state: PoseScale,
    prior: NDArray[np.float64] | None,
) -> PoseScale:
    """Pose and scales; a weighted jaw is re-bound to the silhouette and the fit repeated once."""
    for _ in range(1 if tg.landmarks is None else 2):
        X, P, S = model.X0[tg.vertices], tg.points, tg.sigma
        if tg.landmarks is not None:
            cam = model.shape(state.scale) @ state.R.T + state.t
            jaw = model.jaw_contour(cam, project(cam, K), tg.landmarks)
            X = np.concatenate([jaw.points(model.X0)[JAW], X])
            P, S = np.concatenate([tg.landmarks[JAW], P]), np.concatenate([np.full(len(JAW), tg.jaw_sigma), S])
        state = fit_pose_scale(X, P, K, S, state, model.weights, prior)
    if not (np.all(np.isfinite(state.R)) and np.all(np.isfinite(state.t))) or not np.all(np.isfinite(state.scale)):
        raise FitError("pose/scale fit diverged")
    if state.t[2] <= 0:
        raise FitError("pose/scale fit diverged (face behind the camera)")
    return state


def fit_landmarks(
    model: FitModel,
    points_ideal: ArrayLike,
    camera_matrix: ArrayLike,
    deform: bool = True,
    *,
    annotation: HeadPose | None = None,
    dense: ArrayLike | None = None,
) -> FitResult:
    """Fit the template to 68 undistorted landmark points (ideal pinhole pixels).

    ``annotation``: the frame's annotated head pose (MPIIGaze six-point model).
    The landmarks-only pose is compared with it (farther than
    ``max_annotation_deg``: :class:`FitError`), the pose is fitted again with
    a prior towards it where ``rotation_prior_deg`` is set, and the mesh is
    scaled about the camera origin so that its six annotation vertices'
    centroid has the depth of the annotation's face centre (:mod:`recon.placement`).

    ``dense``: (468, 3) points in the template's vertex order, x and y in
    ideal pixels, z their relative depth in the same pixel scale (smaller is
    nearer). Vertex i is then fitted to point i (the face oval down-weighted)
    and the depth is a soft shape prior; the 68 points still give the jaw
    binding and the reported landmarks.
    """
    w = model.weights
    pts = np.asarray(points_ideal, dtype=np.float64).reshape(68, 2)
    K = np.asarray(camera_matrix, dtype=np.float64)
    dn = None if dense is None else np.asarray(dense, dtype=np.float64).reshape(len(model.X0), 3)
    if not np.all(np.isfinite(pts)) or (dn is not None and not np.all(np.isfinite(dn))):
        raise FitError("non-finite landmarks")
    io = float(np.linalg.norm(pts[ibug68.LEFT_EYE_OUTER] - pts[ibug68.RIGHT_EYE_OUTER]))
    if io < 4.0:
        raise FitError(f"face too small (outer eye corners {io:.1f} px apart)")
    tg = _targets(model, pts, io, dn)

    # 1. rigid PnP on the well-placed points (not the jaw or the face oval)
    inner = np.ones(len(tg.vertices), dtype=bool) if dn is None else ~model.outline_vertices
    try:
        pose = estimate_head_pose(tg.points[inner], K, np.zeros(5), model=model.X0[tg.vertices[inner]])
    except (ValueError, Exception) as err:  # cv2.error is an Exception
        raise FitError(f"PnP failed: {err}") from None
    R, t = pose.rotation, pose.translation
    if t[2] <= 0:
        # a mirror solution behind the camera: turn it around
        R, t = R @ rot_x(np.pi), -t

    # 2. pose + anisotropic scale with priors: towards the annotation where there is one and a prior is set
    #    (the landmarks-only pose compared with the annotation is then the PnP's), else from the landmarks alone
    start = PoseScale(R, t, np.zeros(3))
    prior = None if annotation is None else model.alignment.annotation_rotation(annotation)
    with_prior = prior is not None and w.rotation_prior_deg is not None
    state = start if with_prior else _pose_scale(model, tg, K, start, None)
    lm_deg = ann_deg = float("nan")
    if prior is not None:
        lm_deg = rotation_difference_deg(state.R, prior)
        if lm_deg > w.max_annotation_deg:
            raise FitError(
                f"landmarks disagree with the annotated head pose by {lm_deg:.1f} deg "
                f"(recon.max_annotation_deg {w.max_annotation_deg:g})"
            )
        if with_prior:
            state = _pose_scale(model, tg, K, start, prior)
        ann_deg = rotation_difference_deg(state.R, prior)
    Rm, tv, s = state.R, state.t, state.scale
    cam = model.shape(s) @ Rm.T + tv
    bind = model.jaw_contour(cam, project(cam, K), pts)

    # 3. smooth non-rigid deformation (linear least squares in D); the jaw on the silhouette
    D = np.zeros_like(model.X0)
    if deform:
        if dn is None:
            sig = np.r_[np.full(len(JAW), w.jaw_sigma), np.full(len(INTERIOR), w.landmark_sigma)] * io
            D = _deform(model, Rm, tv, s, bind, pts, K, sig)
        else:
            z_mm = dn[:, 2] * float(cam[:, 2].mean()) / (0.5 * (K[0, 0] + K[1, 1]))
            depth = RelativeDepth(z_mm, w.dense_depth_sigma_mm, w.dense_depth_displacement)
            D = _deform(model, Rm, tv, s, LandmarkBinding.at_vertices(tg.vertices), tg.points, K, tg.sigma, depth)
    head = model.shape(s, D)
    verts = head @ Rm.T + tv

    lm3 = bind.points(verts)
    err = float(np.linalg.norm(project(lm3, K) - pts, axis=1).mean())
    fit = FitResult(
        vertices=verts,
        rotation=Rm,
        translation=tv,
        scale=s,
        landmark_vertices=bind.nearest_vertices(),
        landmarks_3d=lm3,
        landmarks_ideal=pts,
        reprojection_error_ideal_px=err,
        depth_ratio=depth_to_width_ratio(head),
        annotation_rotation_deg=ann_deg,
        landmark_rotation_deg=lm_deg,
    )
    # 4. the annotation's depth
    return fit if annotation is None else place_at_annotation_depth(fit, model, annotation)


def place_at_annotation_depth(fit: FitResult, model: FitModel, annotation: HeadPose) -> FitResult:
    """The fit scaled about the camera origin: its six-point centroid at the annotation's face-centre depth.

    Every projection (so the texture) is unchanged; the vertices, landmarks, head
    translation and template scales are multiplied by the same factor.
    """
    try:
        place = depth_placement(model.alignment, fit.vertices, annotation)
    except ValueError as err:
        raise FitError(str(err)) from None
    k = place.factor
    return replace(
        fit,
        vertices=fit.vertices * k,
        translation=fit.translation * k,
        scale=fit.scale * k,
        landmarks_3d=fit.landmarks_3d * k,
        depth_correction_mm=place.correction_mm,
    )
