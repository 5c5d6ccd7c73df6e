"""The smooth non-rigid deformation of the fit: vertex displacements by sparse linear least squares.

Landmark rows pull the projection rays of the landmark points onto the
detected points; the model's constant normal matrix B (Laplacian smoothness,
a term on the head-frame depth component, a small ridge) regularises. With
68 points the solve uses the inverse of B, computed once (push-through
identity, a 136x136 system per frame). With dense points that carry relative
depth (:class:`RelativeDepth`) the depth rows and a weaker depth term make a
different system, solved sparse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import NDArray

from nvsynth.recon.fit_model import FitModel, LandmarkBinding


@dataclass(frozen=True)
class RelativeDepth:
    """Depth of every vertex up to a common offset, mm: rows (Z_i - o - z_i) / sigma with o free."""

    z_mm: NDArray[np.float64]  # (V,)
    sigma_mm: float
    depth_displacement: float  # the weight on D_z that replaces the model's (the depth is observed)


def _landmark_rows(
    model: FitModel,
    R: NDArray[np.float64],
    t: NDArray[np.float64],
    s: NDArray[np.float64],
    bind: LandmarkBinding,
    pts: NDArray[np.float64],
    K: NDArray[np.float64],
    sigma_px: NDArray[np.float64],
) -> tuple[sp.csr_matrix, NDArray[np.float64]]:
    """Rows J (2m, 3V) and right-hand side r of the landmark terms, in sigma units."""
    n3 = 3 * len(model.X0)
    P0 = (bind.points(model.X0) * s) @ R.T + t  # camera coordinates of the landmark points
    ray = (pts - K[[0, 1], [2, 2]]) / np.array([K[0, 0], K[1, 1]])  # normalised image coordinates
    f = 0.5 * (K[0, 0] + K[1, 1])
    m = len(bind.alpha)
    # Rows a . (P0 + R D_i) = 0 with a = (1, 0, -u) and (0, 1, -v): linear in D, and equal to the
    # pixel error times z / f, so the weight f / (z sigma) makes them pixel residuals in sigma units.
    A = np.zeros((m, 2, 3))
    A[:, 0, 0] = 1.0
    A[:, 1, 1] = 1.0
    A[:, :, 2] = -ray
    wk = (f / (P0[:, 2] * sigma_px))[:, None]
    coef = (A @ R) * wk[:, :, None]  # (a^T R) = d/dD_i
    rhs = -np.einsum("mij,mj->mi", A, P0) * wk
    # a landmark point is (1 - alpha) V[first] + alpha V[second]: its rows touch both vertices
    wa = np.repeat(1.0 - bind.alpha, 2)[:, None] * coef.reshape(2 * m, 3)
    wb = np.repeat(bind.alpha, 2)[:, None] * coef.reshape(2 * m, 3)
    rows = np.tile(np.repeat(np.arange(2 * m), 3), 2)
    cols = np.concatenate([(3 * np.repeat(v, 2)[:, None] + np.arange(3)).ravel() for v in (bind.first, bind.second)])
    J = sp.csr_matrix((np.concatenate([wa.ravel(), wb.ravel()]), (rows, cols)), shape=(2 * m, n3))
    return J, rhs.ravel()


def deform(
    model: FitModel,
    R: NDArray[np.float64],
    t: NDArray[np.float64],
    s: NDArray[np.float64],
    bind: LandmarkBinding,
    pts: NDArray[np.float64],
    K: NDArray[np.float64],
    sigma_px: NDArray[np.float64],
    depth: RelativeDepth | None = None,
) -> NDArray[np.float64]:
    """Displacements D (V, 3) in the scaled head frame; points with infinite sigma are left out."""
    keep = np.isfinite(sigma_px)
    bind = LandmarkBinding(bind.first[keep], bind.second[keep], bind.alpha[keep])
    J, r = _landmark_rows(model, R, t, s, bind, pts[keep], K, sigma_px[keep])
    if depth is None:
        # (B + J^T J)^-1 J^T r = B^-1 J^T (I + J B^-1 J^T)^-1 r
        G = (J @ model._B_inv).T  # B^-1 J^T, (3V, m)
        M = np.eye(len(r)) + J @ G
        return (G @ np.linalg.solve(M, r)).reshape(-1, 3)
    # Depth rows over u = (D, o): Z_i = (R S X_i + t)_z + R[2] . D_i; the targets are moved to the
    # template's mean depth so that the offset o stays small.
    n = len(model.X0)
    Z0 = (model.X0 * s) @ R[2] + t[2]
    target = depth.z_mm - depth.z_mm.mean() + Z0.mean()
    inv = 1.0 / depth.sigma_mm
    rows = np.repeat(np.arange(n), 4)
    cols = np.c_[3 * np.arange(n)[:, None] + np.arange(3), np.full(n, 3 * n)].ravel()
    vals = np.tile(np.r_[R[2], -1.0] * inv, n)
    Jd = sp.csr_matrix((vals, (rows, cols)), shape=(n, 3 * n + 1))
    rd = (target - Z0) * inv
    Jl = sp.hstack([J, sp.csr_matrix((J.shape[0], 1))]).tocsr()
    B = sp.block_diag([model.normal_matrix(depth.depth_displacement), sp.csr_matrix((1, 1))]).tocsr()
    N = (B + Jl.T @ Jl + Jd.T @ Jd).tocsc()
    u = spla.spsolve(N, Jl.T @ r + Jd.T @ rd)
    return np.asarray(u[: 3 * n]).reshape(-1, 3)
