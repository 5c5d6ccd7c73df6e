"""The smooth non-rigid deformation of the fit: vertex displacements by sparse linear least squares."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from nvsynth.recon.fit_model import FitModel, LandmarkBinding


def deform(
    model: FitModel,
    R: NDArray[np.float64],
    t: NDArray[np.float64],
    s: NDArray[np.float64],
    bind: LandmarkBinding,
    pts: NDArray[np.float64],
    K: NDArray[np.float64],
    sigma_px: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Displacements D (V, 3) in the scaled head frame; see the module docstring."""
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
    r = rhs.ravel()
    # (B + J^T J)^-1 J^T r = B^-1 J^T (I + J B^-1 J^T)^-1 r
    G = (J @ model._B_inv).T  # B^-1 J^T, (3V, m)
    M = np.eye(len(r)) + J @ G
    return (G @ np.linalg.solve(M, r)).reshape(-1, 3)
