"""Per-frame fit of the canonical face mesh to 68 landmarks, in the frame's calibrated camera.

Everything happens in the ideal pinhole camera (the landmarks are undistorted
first); millimetres throughout.

1. **Rigid pose**: PnP (EPnP, then Levenberg-Marquardt) of the template's
   vertices for the 51 interior landmarks (brows, nose, eyes, mouth).
2. **Shape scale**: pose and per-axis template scales (sx, sy, sz) by
   least squares over all 68 landmarks (``scipy.optimize.least_squares``,
   Levenberg-Marquardt with the analytic Jacobian), with priors: sx and sy
   near 1 (faces differ by about 10%), and sz tied to sx (the template's
   depth-to-width ratio, 0.647, is kept unless the data clearly demand
   otherwise -- depth is barely observable from one view).
3. **Smooth deformation**: displacements D of all vertices (in the scaled
   head frame) by sparse linear least squares: landmark rows pull the
   projection rays of the landmark vertices onto the detected points, a
   uniform-Laplacian term keeps D smooth, and a strong term on the depth
   (head z) component keeps the template's metric depth profile. The constant
   part of the normal matrix is inverted once per process; each frame adds
   only its landmark rows (push-through identity), so a frame costs a 136x136
   solve.

Jaw contour: dlib's 17 jaw points lie on the face's silhouette, which moves
over the 3D surface with the pose. At every pose each jaw landmark is
re-assigned to the point of the projected silhouette (mesh outline or
occluding contour) nearest to it in the image, on its side of the face: a
point on a silhouette edge, interpolated between its two vertices, so the fit
does not snap the contour to the coarse mesh's vertex spacing (hand-labelled
faces fitted to their own labels, error / outer-eye distance: breakingbad
0.0245 -> 0.0186, einstein 0.0219 -> 0.0176, takeo 0.0175 -> 0.0120).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core.geometry import estimate_head_pose, project, rot_x
from nvsynth.recon.deform import deform as _deform
from nvsynth.recon.fit_model import CHIN, INTERIOR, JAW, FitError, FitModel, FitWeights, LandmarkBinding
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


def fit_landmarks(
    model: FitModel,
    points_ideal: ArrayLike,
    camera_matrix: ArrayLike,
    deform: bool = True,
) -> FitResult:
    """Fit the template to 68 undistorted landmark points (ideal pinhole pixels)."""
    w = model.weights
    pts = np.asarray(points_ideal, dtype=np.float64).reshape(68, 2)
    K = np.asarray(camera_matrix, dtype=np.float64)
    if not np.all(np.isfinite(pts)):
        raise FitError("non-finite landmarks")
    io = float(np.linalg.norm(pts[45] - pts[36]))
    if io < 4.0:
        raise FitError(f"face too small (outer eye corners {io:.1f} px apart)")

    # 1. rigid PnP on the interior landmarks
    try:
        pose = estimate_head_pose(pts[INTERIOR], K, np.zeros(5), model=model.X0[model.landmark_map[INTERIOR]])
    except (ValueError, Exception) as err:  # cv2.error is an Exception
        raise FitError(f"PnP failed: {err}") from None
    R, t = pose.rotation, pose.translation
    if t[2] <= 0:
        # a mirror solution behind the camera: turn it around
        R, t = R @ rot_x(np.pi), -t

    # 2. pose + anisotropic scale with priors; jaw re-picked at each stage
    sig = np.where(np.arange(68) < 17, w.jaw_sigma, w.landmark_sigma) * io
    state = PoseScale(R, t, np.zeros(3))
    for _ in range(2):
        cam = model.shape(state.scale) @ state.R.T + state.t
        bind = model.jaw_contour(cam, project(cam, K), pts)
        state = fit_pose_scale(bind.points(model.X0), pts, K, sig, state, w)
    Rm, tv, s = state.R, state.t, state.scale
    if not (np.all(np.isfinite(Rm)) and np.all(np.isfinite(tv)) and np.all(np.isfinite(s))) or tv[2] <= 0:
        raise FitError("pose/scale fit diverged")
    cam = model.shape(s) @ Rm.T + tv
    bind = model.jaw_contour(cam, project(cam, K), pts)

    # 3. smooth non-rigid deformation (linear least squares in D)
    D = np.zeros_like(model.X0)
    if deform:
        D = _deform(model, Rm, tv, s, bind, pts, K, sig)
    head = model.shape(s, D)
    verts = head @ Rm.T + tv
    lm3 = bind.points(verts)
    err = float(np.linalg.norm(project(lm3, K) - pts, axis=1).mean())
    return FitResult(
        vertices=verts,
        rotation=Rm,
        translation=tv,
        scale=s,
        landmark_vertices=bind.nearest_vertices(),
        landmarks_3d=lm3,
        landmarks_ideal=pts,
        reprojection_error_ideal_px=err,
        depth_ratio=depth_to_width_ratio(head),
    )
