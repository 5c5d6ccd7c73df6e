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
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from nvsynth.core import ibug68
from nvsynth.core.geometry import estimate_head_pose, project, rot_x
from nvsynth.recon.meshops import face_normals
from nvsynth.recon.template import FaceTemplate, depth_to_width_ratio

#: Solver settings of the pose-and-scale step (``scipy.optimize.least_squares``): MINPACK's
#: Levenberg-Marquardt with Marquardt's column scaling; 4-7 evaluations per call on real faces, and
#: within 3e-4 mm (vertices) of a solve at 1e-14 tolerances.
LSQ_OPTIONS: dict = {"method": "lm", "x_scale": "jac", "ftol": 1e-8, "xtol": 1e-8, "gtol": 1e-8, "max_nfev": 100}


class FitError(Exception):
    """The fit failed; the message is the reason recorded for the frame."""


@dataclass(frozen=True)
class FitWeights:
    """Noise levels and regularisation of the fit (residuals are in units of these sigmas)."""

    landmark_sigma: float = 0.02  # landmark noise, as a fraction of the outer-eye-corner distance
    jaw_sigma: float = 0.04  # jaw points are noisier (and discretised on the silhouette)
    scale_sigma: float = 0.10  # prior spread of the template's x and y scales
    depth_sigma: float = 0.02  # prior spread of log(sz / sx): keeps the depth-to-width ratio
    # weight of |L D|^2 (mm^-2); 0.25 lets the mesh follow the landmarks to ~0.007 of the outer-eye
    # distance on the labelled faces (1.0 left 0.015 and pulled brows and nose off the detections)
    laplacian: float = 0.25
    depth_displacement: float = 4.0  # weight of |D_z|^2 (mm^-2), keeps the metric depth profile
    ridge: float = 1e-3  # weight of |D|^2 (mm^-2), makes the system definite
    jaw_region_margin_mm: float = 10.0  # jaw candidates start this far above the highest jaw vertex


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


def _edges(faces: NDArray[np.int32]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Unique undirected edges (E, 2) and their one or two faces (E, 2), -1 where absent."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    fid = np.tile(np.arange(len(f)), 3)
    e = np.sort(e, axis=1)
    uniq, inv = np.unique(e, axis=0, return_inverse=True)
    inv = inv.ravel()
    adj = np.full((len(uniq), 2), -1, dtype=np.int64)
    order = np.argsort(inv, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = inv[order][1:] != inv[order][:-1]
    adj[inv[order][first], 0] = fid[order][first]
    adj[inv[order][~first], 1] = fid[order][~first]
    return uniq, adj


def uniform_laplacian(n: int, edges: NDArray[np.int64]) -> sp.csr_matrix:
    """L = I - D^-1 A of the mesh graph (rows sum to zero)."""
    i, j = edges[:, 0], edges[:, 1]
    A = sp.coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    deg = np.asarray(A.sum(axis=1)).ravel()
    return (sp.identity(n, format="csr") - sp.diags(1.0 / deg) @ A).tocsr()


class FitModel:
    """Everything about the template that does not change from frame to frame."""

    def __init__(self, template: FaceTemplate, landmark_map: ArrayLike, weights: FitWeights | None = None) -> None:
        self.template = template
        self.weights = w = weights or FitWeights()
        self.X0 = np.asarray(template.vertices, dtype=np.float64)
        self.faces = np.asarray(template.faces, dtype=np.int32)
        self.landmark_map = np.asarray(landmark_map, dtype=np.int64)
        if self.landmark_map.shape != (ibug68.N_LANDMARKS,):
            raise ValueError(f"landmark map must hold {ibug68.N_LANDMARKS} vertex indices")
        n = len(self.X0)
        self.edges, self.edge_faces = _edges(self.faces)
        self.outline_edges = self.edge_faces[:, 1] < 0
        # Jaw candidates: from a little above the highest jaw vertex down, split by side.
        y_top = self.X0[self.landmark_map[ibug68.JAW], 1].min() - w.jaw_region_margin_mm
        region = self.X0[:, 1] >= y_top
        x = self.X0[:, 0]
        self.jaw_side = {
            "right": region & (x <= 1e-6),  # subject's right = image left = iBUG 0-7
            "left": region & (x >= -1e-6),
            "chin": region & (np.abs(x) <= 0.25 * np.ptp(x)),
        }
        self._jaw_allowed = np.stack(
            [self.jaw_side["right" if k < ibug68.CHIN else "left" if k > ibug68.CHIN else "chin"] for k in ibug68.JAW]
        )
        # Constant part of the deformation's normal matrix, over D flattened as (3V,) = [x0 y0 z0 x1 ...].
        L = uniform_laplacian(n, self.edges)
        LtL = (L.T @ L).tocsr()
        zmask = np.tile([0.0, 0.0, 1.0], n)
        B = w.laplacian * sp.kron(LtL, sp.identity(3)) + sp.diags(w.depth_displacement * zmask + w.ridge)
        self._B_inv = np.linalg.inv(B.toarray())

    # -- geometry helpers ---------------------------------------------------------------------------

    def shape(self, scale: NDArray[np.float64], D: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        """Template vertices in the fitted head frame: S X0 (+ D)."""
        v = self.X0 * scale
        return v if D is None else v + D

    def silhouette_edges(self, cam: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Edges on the image silhouette: outline edges of front faces, and front/back fold edges."""
        n = face_normals(cam, self.faces)
        centroid = cam[self.faces].mean(axis=1)
        front = np.einsum("ij,ij->i", n, centroid) < 0.0
        f0 = front[self.edge_faces[:, 0]]
        f1 = np.where(self.outline_edges, False, front[np.maximum(self.edge_faces[:, 1], 0)])
        return np.where(self.outline_edges, f0, f0 != f1)

    def silhouette_vertices(self, cam: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Vertices on the image silhouette (ends of :meth:`silhouette_edges`)."""
        mask = np.zeros(len(cam), dtype=bool)
        mask[self.edges[self.silhouette_edges(cam)].ravel()] = True
        return mask

    def jaw_contour(
        self, cam: NDArray[np.float64], proj: NDArray[np.float64], points: NDArray[np.float64]
    ) -> LandmarkBinding:
        """The 68 landmark points with the 17 jaw entries moved onto the silhouette.

        Each jaw landmark goes to the closest point of the projected silhouette
        (a point on a silhouette edge, on its side of the face), so the contour
        is followed between vertices rather than in vertex-sized steps.
        """
        binding = LandmarkBinding.at_vertices(self.landmark_map)
        e = self.edges[self.silhouette_edges(cam)]
        if len(e) == 0:
            return binding
        allowed = self._jaw_allowed[:, e[:, 0]] & self._jaw_allowed[:, e[:, 1]]  # (17, n_e)
        a, b = proj[e[:, 0]], proj[e[:, 1]]
        ab = b - a
        q = points[ibug68.JAW]
        alpha = np.einsum("mkj,kj->mk", q[:, None, :] - a[None], ab) / np.maximum(np.sum(ab * ab, axis=1), 1e-12)
        alpha = np.clip(alpha, 0.0, 1.0)
        d = np.sum((a[None] + alpha[:, :, None] * ab[None] - q[:, None, :]) ** 2, axis=2)
        d = np.where(allowed, d, np.inf)
        best = np.argmin(d, axis=1)
        rows = np.arange(len(ibug68.JAW))  # row m of d / alpha is jaw landmark ibug68.JAW[m]
        found = np.isfinite(d[rows, best])
        k = ibug68.JAW[found]
        binding.first[k] = e[best[found], 0]
        binding.second[k] = e[best[found], 1]
        binding.alpha[k] = alpha[rows, best][found]
        return binding

    def pick_jaw(
        self, cam: NDArray[np.float64], proj: NDArray[np.float64], points: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        """Landmark vertices with the 17 jaw entries on the silhouette (the nearer end of the contour edge)."""
        return self.jaw_contour(cam, proj, points).nearest_vertices()


@dataclass(frozen=True)
class LandmarkBinding:
    """Where each landmark lies on the mesh: (1 - alpha) * V[first] + alpha * V[second]."""

    first: NDArray[np.int64]  # (68,)
    second: NDArray[np.int64]  # (68,)
    alpha: NDArray[np.float64]  # (68,)

    @classmethod
    def at_vertices(cls, idx: ArrayLike) -> LandmarkBinding:
        i = np.array(idx, dtype=np.int64)
        return cls(i, i.copy(), np.zeros(len(i)))

    def points(self, vertices: NDArray[np.float64]) -> NDArray[np.float64]:
        """The landmark points of a vertex array (V, 3) -> (68, 3)."""
        a = self.alpha[:, None]
        return (1.0 - a) * vertices[self.first] + a * vertices[self.second]

    def nearest_vertices(self) -> NDArray[np.int64]:
        return np.where(self.alpha <= 0.5, self.first, self.second)


#: Levi-Civita symbol: (a x b)_i = EPS[i, j, k] a_j b_k, so the cross-product matrix [a]_x = -EPS @ a.
EPS = np.zeros((3, 3, 3))
EPS[[0, 1, 2], [1, 2, 0], [2, 0, 1]] = 1.0
EPS[[0, 1, 2], [2, 0, 1], [1, 2, 0]] = -1.0


def _rotvec_left_jacobian(w: NDArray[np.float64]) -> NDArray[np.float64]:
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


@dataclass(frozen=True)
class _PoseScale:
    R: NDArray[np.float64]
    t: NDArray[np.float64]
    log_scale: NDArray[np.float64]  # log sx, log sy, log(sz / sx)

    @property
    def scale(self) -> NDArray[np.float64]:
        sx, sy, dz = np.exp(self.log_scale)
        return np.array([sx, sy, sx * dz])


class _PoseScaleProblem:
    """Residuals (landmarks in sigma units, then the three scale priors) and their Jacobian.

    Parameters x = (w, t, log sx, log sy, log(sz / sx)): the rotation is
    ``Rotation.from_rotvec(w)`` applied after the start rotation R0, so w
    starts at 0 and stays small. The model points of the last x are kept:
    the solver asks for the Jacobian where it has just evaluated the residuals.
    """

    def __init__(
        self,
        X: NDArray[np.float64],
        pts: NDArray[np.float64],
        K: NDArray[np.float64],
        sig: NDArray[np.float64],
        R0: NDArray[np.float64],
        w: FitWeights,
    ) -> None:
        self.X, self.pts, self.K, self.R0 = X, pts, K, R0
        self.inv_sig = 1.0 / sig[:, None]
        self.prior = np.array([w.scale_sigma, w.scale_sigma, w.depth_sigma])
        self._X_rows = np.repeat(X, 2, axis=0)  # the model point of each row (u, v) of the Jacobian
        self._prior_jacobian = np.diag(1.0 / self.prior)
        self._key = b""
        self._points: tuple[_PoseScale, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]

    def state(self, x: NDArray[np.float64]) -> _PoseScale:
        return _PoseScale(Rotation.from_rotvec(x[:3]).as_matrix() @ self.R0, x[3:6].copy(), x[6:9].copy())

    def points(
        self, x: NDArray[np.float64]
    ) -> tuple[_PoseScale, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """State, rotated and scaled model points Y = R S X, camera points P = Y + t, and their pixels."""
        key = x.tobytes()
        if key != self._key:
            st = self.state(x)
            Y = (self.X * st.scale) @ st.R.T
            P = Y + st.t
            self._key, self._points = key, (st, Y, P, project(P, self.K))
        return self._points

    def residuals(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        proj = self.points(x)[3]
        return np.concatenate([((proj - self.pts) * self.inv_sig).ravel(), x[6:9] / self.prior])

    def jacobian(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        st, Y, P, proj = self.points(x)
        n = len(self.X)
        # d proj / d P = (K[:2] - proj e_z^T) / z for a camera matrix with last row (0, 0, 1), in sigma units
        Jp = np.empty((n, 2, 3))
        Jp[:] = self.K[:2]
        Jp[:, :, 2] -= proj
        Jp *= (self.inv_sig / P[:, 2:3])[:, :, None]
        J = np.zeros((2 * n + 3, 9))
        # rotation: dP/dw = -[Y]_x J(w); (EPS @ Y.T).transpose(2, 0, 1) is -[Y]_x per point
        J[: 2 * n, 0:3] = (Jp @ (EPS @ Y.T).transpose(2, 0, 1)).reshape(2 * n, 3) @ _rotvec_left_jacobian(x[:3])
        J[: 2 * n, 3:6] = Jp.reshape(2 * n, 3)
        # log scales: dP/d log s_c = X_c (column c of R S); sx scales x and (through sz) z
        JA = Jp.reshape(2 * n, 3) @ (st.R * st.scale)
        Xr = self._X_rows
        J[: 2 * n, 6] = Xr[:, 0] * JA[:, 0] + Xr[:, 2] * JA[:, 2]
        J[: 2 * n, 7] = Xr[:, 1] * JA[:, 1]
        J[: 2 * n, 8] = Xr[:, 2] * JA[:, 2]
        J[2 * n :, 6:] = self._prior_jacobian
        return J


def _fit_pose_scale(
    X: NDArray[np.float64],
    pts: NDArray[np.float64],
    K: NDArray[np.float64],
    sig: NDArray[np.float64],
    st: _PoseScale,
    w: FitWeights,
) -> _PoseScale:
    """Pose and log scales by Levenberg-Marquardt (``scipy.optimize.least_squares``), analytic Jacobian."""
    problem = _PoseScaleProblem(X, pts, K, sig, st.R, w)
    x0 = np.concatenate([np.zeros(3), st.t, st.log_scale])
    sol = least_squares(problem.residuals, x0, jac=problem.jacobian, **LSQ_OPTIONS)
    return problem.state(sol.x)


def fit_landmarks(
    model: FitModel,
    points_ideal: ArrayLike,
    camera_matrix: ArrayLike,
    deform: bool = True,
) -> FitResult:
    """Fit the template to 68 undistorted landmark points (ideal pinhole pixels)."""
    w = model.weights
    pts = np.asarray(points_ideal, dtype=np.float64).reshape(ibug68.N_LANDMARKS, 2)
    K = np.asarray(camera_matrix, dtype=np.float64)
    if not np.all(np.isfinite(pts)):
        raise FitError("non-finite landmarks")
    io = float(np.linalg.norm(pts[ibug68.LEFT_EYE_OUTER] - pts[ibug68.RIGHT_EYE_OUTER]))
    if io < 4.0:
        raise FitError(f"face too small (outer eye corners {io:.1f} px apart)")

    # 1. rigid PnP on the interior landmarks
    try:
        pose = estimate_head_pose(
            pts[ibug68.INTERIOR], K, np.zeros(5), model=model.X0[model.landmark_map[ibug68.INTERIOR]]
        )
    except (ValueError, Exception) as err:  # cv2.error is an Exception
        raise FitError(f"PnP failed: {err}") from None
    R, t = pose.rotation, pose.translation
    if t[2] <= 0:
        # a mirror solution behind the camera: turn it around
        R, t = R @ rot_x(np.pi), -t

    # 2. pose + anisotropic scale with priors; jaw re-picked at each stage
    sig = np.where(np.isin(np.arange(ibug68.N_LANDMARKS), ibug68.JAW), w.jaw_sigma, w.landmark_sigma) * io
    state = _PoseScale(R, t, np.zeros(3))
    for _ in range(2):
        cam = model.shape(state.scale) @ state.R.T + state.t
        bind = model.jaw_contour(cam, project(cam, K), pts)
        state = _fit_pose_scale(bind.points(model.X0), pts, K, sig, state, w)
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


def _deform(
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


@dataclass(frozen=True)
class Subdivision:
    """A fixed subdivision of the template's topology: new vertices = ``operator @ vertices``."""

    operator: sp.csr_matrix  # (V', V); its first V rows are the identity
    faces: NDArray[np.int32]  # (4^steps F, 3), same winding
    mirror: NDArray[np.int32]  # (V',) left/right mirror vertex

    def apply(self, vertices: ArrayLike) -> NDArray[np.float64]:
        return np.asarray(self.operator @ np.asarray(vertices, dtype=np.float64))


def subdivision(faces: ArrayLike, mirror: ArrayLike, steps: int = 1) -> Subdivision:
    """Split every triangle in four with the (interpolating) butterfly rule, ``steps`` times.

    The fitted vertices stay where the fit put them (unlike Loop subdivision,
    which would pull the nose tip and the jaw inward); a new edge point is
    1/2 (a + b) + 1/8 (c + d) - 1/16 (e + f + g + h) with c, d the opposite
    vertices and e..h the wings, the plain midpoint where a wing is missing,
    and the four-point rule 9/16 (a + b) - 1/16 (a' + b') along the outline.
    The mirror map extends to edge points: the mirror of edge (a, b) is (m(a), m(b)).
    Built once per process; applying it is one sparse product.
    """
    f = np.asarray(faces, dtype=np.int64)
    m = np.asarray(mirror, dtype=np.int64)
    n = len(m)
    op = sp.identity(n, format="csr")
    for _ in range(steps):
        step, f, m = _butterfly_step(f, m)
        op = (step @ op).tocsr()
    return Subdivision(op, f.astype(np.int32), m.astype(np.int32))


def _butterfly_step(
    f: NDArray[np.int64], m: NDArray[np.int64]
) -> tuple[sp.csr_matrix, NDArray[np.int64], NDArray[np.int64]]:
    n = len(m)
    edges, edge_faces = _edges(f.astype(np.int32))
    key = {(int(a), int(b)): i for i, (a, b) in enumerate(edges)}

    def eid(a: int, b: int) -> int:
        return key[(a, b) if a < b else (b, a)]

    def opposite(face: int, a: int, b: int) -> int:
        return int(next(x for x in f[face] if x != a and x != b))

    def wing(a: int, c: int, face: int) -> int | None:
        """The vertex across edge (a, c) from triangle ``face``."""
        for g in edge_faces[eid(a, c)]:
            if g >= 0 and g != face:
                return opposite(int(g), a, c)
        return None

    outline = edge_faces[:, 1] < 0
    nbr: dict[int, list[int]] = {}
    for a, b in edges[outline]:
        nbr.setdefault(int(a), []).append(int(b))
        nbr.setdefault(int(b), []).append(int(a))

    rows, cols, vals = list(range(n)), list(range(n)), [1.0] * n

    def put(i: int, stencil: list[tuple[int, float]]) -> None:
        for j, w in stencil:
            rows.append(n + i)
            cols.append(j)
            vals.append(w)

    for i, (a, b) in enumerate(edges):
        a, b = int(a), int(b)
        f0, f1 = int(edge_faces[i, 0]), int(edge_faces[i, 1])
        mid = [(a, 0.5), (b, 0.5)]
        if f1 < 0:
            pa = [x for x in nbr.get(a, []) if x != b]
            pb = [x for x in nbr.get(b, []) if x != a]
            ok = len(pa) == 1 and len(pb) == 1
            put(i, [(a, 9 / 16), (b, 9 / 16), (pa[0], -1 / 16), (pb[0], -1 / 16)] if ok else mid)
            continue
        c, d = opposite(f0, a, b), opposite(f1, a, b)
        wings = [wing(a, c, f0), wing(b, c, f0), wing(a, d, f1), wing(b, d, f1)]
        if any(w is None for w in wings):
            put(i, mid)
        else:
            put(i, [*mid, (c, 0.125), (d, 0.125), *[(int(w), -0.0625) for w in wings if w is not None]])
    op = sp.csr_matrix((vals, (rows, cols)), shape=(n + len(edges), n))  # duplicates add up
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    ab = n + np.array([eid(int(x), int(y)) for x, y in zip(a, b, strict=True)])
    bc = n + np.array([eid(int(x), int(y)) for x, y in zip(b, c, strict=True)])
    ca = n + np.array([eid(int(x), int(y)) for x, y in zip(c, a, strict=True)])
    faces = np.concatenate([np.c_[a, ab, ca], np.c_[ab, b, bc], np.c_[ca, bc, c], np.c_[ab, bc, ca]])
    mirror_new = n + np.array([eid(int(m[x]), int(m[y])) for x, y in edges])
    return op, faces, np.concatenate([m, mirror_new])
