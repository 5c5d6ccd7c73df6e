"""The pose-and-scale step of the fit: rotation, translation and log template scales by Levenberg-Marquardt."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from nvsynth.core.geometry import project
from nvsynth.recon.fit_model import FitWeights

#: Solver settings of the pose-and-scale step (``scipy.optimize.least_squares``): MINPACK's
#: Levenberg-Marquardt with Marquardt's column scaling; 4-7 evaluations per call on real faces, and
#: within 3e-4 mm (vertices) of a solve at 1e-14 tolerances.
LSQ_OPTIONS: dict = {"method": "lm", "x_scale": "jac", "ftol": 1e-8, "xtol": 1e-8, "gtol": 1e-8, "max_nfev": 100}


#: Levi-Civita symbol: (a x b)_i = EPS[i, j, k] a_j b_k, so the cross-product matrix [a]_x = -EPS @ a.
EPS = np.zeros((3, 3, 3))
EPS[[0, 1, 2], [1, 2, 0], [2, 0, 1]] = 1.0
EPS[[0, 1, 2], [2, 0, 1], [1, 2, 0]] = -1.0


def rotvec_left_jacobian(w: NDArray[np.float64]) -> NDArray[np.float64]:
    """J(w) with d/dw [Rotation.from_rotvec(w) y] = -[R y]_x J(w) (the left Jacobian of SO(3)).

    J = I + (1 - cos a) / a^2 [w]_x + (a - sin a) / a^3 [w]_x^2, a = |w| (series near 0),
    with [w]_x^2 = w w^T - a^2 I.
    """
    a2 = float(w @ w)
    if a2 < 1e-8:
        c1, c2 = 0.5 - a2 / 24.0, 1.0 / 6.0 - a2 / 120.0
    else:
        a = np.sqrt(a2)
        c1, c2 = (1.0 - np.cos(a)) / a2, (a - np.sin(a)) / (a2 * a)
    J = (c2 * w)[:, None] * w - c1 * (EPS @ w)  # c2 w w^T + c1 [w]_x
    J[np.diag_indices(3)] += 1.0 - c2 * a2
    return J


def rotvec_to_matrix(w: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rodrigues' formula (OpenCV's, as ``Rotation.from_rotvec(w).as_matrix()`` to ~1e-16, ~50x faster)."""
    return cv2.Rodrigues(np.asarray(w, dtype=np.float64).reshape(3, 1))[0]


def matrix_to_rotvec(R: NDArray[np.float64]) -> NDArray[np.float64]:
    """The rotation vector of a rotation matrix (inverse of :func:`rotvec_to_matrix`).

    theta = atan2(|v|, (tr R - 1) / 2) with v = vee(R - R^T) / 2 = sin(theta) axis: exact to
    rounding near the identity, where this fit's prior term lives; from 120 deg on, scipy's.
    """
    v = 0.5 * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    c = 0.5 * (R[0, 0] + R[1, 1] + R[2, 2] - 1.0)
    if c < -0.5:
        return Rotation.from_matrix(R).as_rotvec()
    s = float(np.sqrt(v @ v))
    theta = np.arctan2(s, c)
    return v * (theta / s if s > 1e-12 else 1.0 + theta * theta / 6.0)


@dataclass(frozen=True)
class PoseScale:
    R: NDArray[np.float64]
    t: NDArray[np.float64]
    log_scale: NDArray[np.float64]  # log sx, log sy, log(sz / sx)

    @property
    def scale(self) -> NDArray[np.float64]:
        sx, sy, dz = np.exp(self.log_scale)
        return np.array([sx, sy, sx * dz])


class PoseScaleProblem:
    """Residuals (landmarks in sigma units, the three scale priors, the rotation prior) and their Jacobian.

    Parameters x = (w, t, log sx, log sy, log(sz / sx)): the rotation is
    ``Rotation.from_rotvec(w)`` applied after the start rotation R0, so w
    starts at 0 and stays small. The model points of the last x are kept:
    the solver asks for the Jacobian where it has just evaluated the residuals.

    With a prior rotation Rp (the annotation's, :mod:`recon.placement`), three
    more residuals phi / sigma, phi = rotvec(R Rp^T) = log(exp(w) R0 Rp^T), pull
    the rotation towards it; d phi / d w = J(phi)^-1 J(w) with J the left
    Jacobian of SO(3) (:func:`rotvec_left_jacobian`).
    """

    def __init__(
        self,
        X: NDArray[np.float64],
        pts: NDArray[np.float64],
        K: NDArray[np.float64],
        sig: NDArray[np.float64],
        R0: NDArray[np.float64],
        w: FitWeights,
        prior_rotation: NDArray[np.float64] | None = None,
    ) -> None:
        self.X, self.pts, self.K, self.R0 = X, pts, K, R0
        self.inv_sig = 1.0 / sig[:, None]
        self.prior = np.array([w.scale_sigma, w.scale_sigma, w.depth_sigma])
        self._X_rows = np.repeat(X, 2, axis=0)  # the model point of each row (u, v) of the Jacobian
        self._prior_jacobian = np.diag(1.0 / self.prior)
        # rotation prior: phi = log(exp(w) A) with A = R0 Rp^T
        self._A = None if prior_rotation is None else R0 @ np.asarray(prior_rotation, dtype=np.float64).T
        if self._A is not None and w.rotation_prior_deg is None:
            raise ValueError("a prior rotation needs FitWeights.rotation_prior_deg")
        self._inv_rot_sigma = 0.0 if w.rotation_prior_deg is None else 1.0 / np.radians(w.rotation_prior_deg)
        self._key = b""
        self._points: tuple[PoseScale, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]

    def state(self, x: NDArray[np.float64]) -> PoseScale:
        return PoseScale(rotvec_to_matrix(x[:3]) @ self.R0, x[3:6].copy(), x[6:9].copy())

    def points(
        self, x: NDArray[np.float64]
    ) -> tuple[PoseScale, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """State, rotated and scaled model points Y = R S X, camera points P = Y + t, and their pixels."""
        key = x.tobytes()
        if key != self._key:
            st = self.state(x)
            Y = (self.X * st.scale) @ st.R.T
            P = Y + st.t
            self._key, self._points = key, (st, Y, P, project(P, self.K))
        return self._points

    def _phi(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """rotvec(R Rp^T), radians."""
        return matrix_to_rotvec(rotvec_to_matrix(x[:3]) @ self._A)

    def residuals(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        proj = self.points(x)[3]
        parts = [((proj - self.pts) * self.inv_sig).ravel(), x[6:9] / self.prior]
        if self._A is not None:
            parts.append(self._phi(x) * self._inv_rot_sigma)
        return np.concatenate(parts)

    def jacobian(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        st, Y, P, proj = self.points(x)
        n = len(self.X)
        # d proj / d P = (K[:2] - proj e_z^T) / z for a camera matrix with last row (0, 0, 1), in sigma units
        Jp = np.empty((n, 2, 3))
        Jp[:] = self.K[:2]
        Jp[:, :, 2] -= proj
        Jp *= (self.inv_sig / P[:, 2:3])[:, :, None]
        J = np.zeros((2 * n + 3 + (0 if self._A is None else 3), 9))
        # rotation: dP/dw = -[Y]_x J(w); (EPS @ Y.T).transpose(2, 0, 1) is -[Y]_x per point
        J[: 2 * n, 0:3] = (Jp @ (EPS @ Y.T).transpose(2, 0, 1)).reshape(2 * n, 3) @ rotvec_left_jacobian(x[:3])
        J[: 2 * n, 3:6] = Jp.reshape(2 * n, 3)
        # log scales: dP/d log s_c = X_c (column c of R S); sx scales x and (through sz) z
        JA = Jp.reshape(2 * n, 3) @ (st.R * st.scale)
        Xr = self._X_rows
        J[: 2 * n, 6] = Xr[:, 0] * JA[:, 0] + Xr[:, 2] * JA[:, 2]
        J[: 2 * n, 7] = Xr[:, 1] * JA[:, 1]
        J[: 2 * n, 8] = Xr[:, 2] * JA[:, 2]
        J[2 * n : 2 * n + 3, 6:] = self._prior_jacobian
        if self._A is not None:
            Jw = np.linalg.solve(rotvec_left_jacobian(self._phi(x)), rotvec_left_jacobian(x[:3]))
            J[2 * n + 3 :, 0:3] = Jw * self._inv_rot_sigma
        return J


def fit_pose_scale(
    X: NDArray[np.float64],
    pts: NDArray[np.float64],
    K: NDArray[np.float64],
    sig: NDArray[np.float64],
    st: PoseScale,
    w: FitWeights,
    prior_rotation: NDArray[np.float64] | None = None,
) -> PoseScale:
    """Pose and log scales by Levenberg-Marquardt (``scipy.optimize.least_squares``), analytic Jacobian.

    Points whose sigma is infinite carry no weight and are left out.
    """
    keep = np.isfinite(sig)
    X, pts, sig = X[keep], pts[keep], sig[keep]
    problem = PoseScaleProblem(X, pts, K, sig, st.R, w, prior_rotation)
    x0 = np.concatenate([np.zeros(3), st.t, st.log_scale])
    sol = least_squares(problem.residuals, x0, jac=problem.jacobian, **LSQ_OPTIONS)
    return problem.state(sol.x)
