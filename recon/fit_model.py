"""What the fit knows about the template: landmark bindings, jaw regions, weights, normal matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import ibug68
from nvsynth.core.config import ReconConfig
from nvsynth.recon.meshops import edges_with_faces, face_normals
from nvsynth.recon.placement import six_point_alignment
from nvsynth.recon.template import FaceTemplate

JAW = ibug68.JAW
INTERIOR = ibug68.INTERIOR
CHIN = ibug68.CHIN


class FitError(Exception):
    """The fit failed; the message is the reason recorded for the frame."""


@dataclass(frozen=True)
class FitWeights:
    """Noise levels, regularisation and limits of the fit (residuals are in units of these sigmas)."""

    landmark_sigma: float = 0.02  # landmark noise, as a fraction of the outer-eye-corner distance
    # dlib's jaw points are noisier (and discretised on the silhouette). inf leaves them out of the fit
    # altogether; on the fidelity benchmark that was worse (novel-view flow median 1.43 -> 1.60 px, out
    # of the pose and scales only: 1.55 px).
    jaw_sigma: float = 0.04
    scale_sigma: float = 0.10  # prior spread of the template's x and y scales
    depth_sigma: float = 0.02  # prior spread of log(sz / sx): keeps the depth-to-width ratio
    # weight of |L D|^2 (mm^-2); 0.25 lets the mesh follow the landmarks to ~0.007 of the outer-eye
    # distance on the labelled faces (1.0 left 0.015 and pulled brows and nose off the detections)
    laplacian: float = 0.25
    depth_displacement: float = 4.0  # weight of |D_z|^2 (mm^-2), keeps the metric depth profile
    ridge: float = 1e-3  # weight of |D|^2 (mm^-2), makes the system definite
    jaw_region_margin_mm: float = 10.0  # jaw candidates start this far above the highest jaw vertex
    # -- dense landmarks (468 points, vertex i <-> point i) -----------------------------------------------
    dense_sigma: float = 0.05  # per point: 0.02 * sqrt(468 / 68), the 68 points' information spread over 468
    dense_outline_sigma: float = 0.2  # the face-oval points follow the silhouette, not the mesh outline
    dense_depth_sigma_mm: float = 2.0  # the points' relative depth, a soft shape prior
    dense_depth_displacement: float = 0.04  # weight of |D_z|^2 (mm^-2) when the points carry depth
    # -- the annotation (recon.placement) ------------------------------------------------------------
    # recon.rotation_prior_deg: spread of the rotation about the annotation's; None: no prior. Measured on
    # the fidelity benchmark (benchmarks/bench_fidelity.py, dlib, tuning subjects; novel-view flow median /
    # p90 px, fit-vs-annotation median deg): none 1.25 / 4.92, 5.9 deg; 0.5 deg 0.88 / 3.56, 1.1 deg;
    # 0.25 deg 0.86 / 3.52, 0.42 deg. The mesh turned as the labels say matches the truth rendered at the
    # labels' poses better than the landmarks-only rotation does, and 0.25 keeps fit and labels within 1 deg.
    rotation_prior_deg: float | None = 0.25
    # recon.max_annotation_deg: a frame whose landmarks-only pose is farther from the annotation's is
    # rejected (a wrong face or a broken annotation); the sample's frames are 16-21.5 deg off.
    max_annotation_deg: float = 30.0


def fit_weights(cfg: ReconConfig) -> FitWeights:
    """The fit's weights with the configured annotation prior and limit."""
    return FitWeights(rotation_prior_deg=cfg.rotation_prior_deg, max_annotation_deg=cfg.max_annotation_deg)


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
        if self.landmark_map.shape != (68,):
            raise ValueError("landmark map must hold 68 vertex indices")
        n = len(self.X0)
        self.edges, self.edge_faces = edges_with_faces(self.faces)
        self.alignment = six_point_alignment(self.X0, self.landmark_map)
        self.outline_edges = self.edge_faces[:, 1] < 0
        self.outline_vertices = np.zeros(n, dtype=bool)
        self.outline_vertices[self.edges[self.outline_edges].ravel()] = True
        # Jaw candidates: from a little above the highest jaw vertex down, split by side.
        y_top = self.X0[self.landmark_map[JAW], 1].min() - w.jaw_region_margin_mm
        region = self.X0[:, 1] >= y_top
        x = self.X0[:, 0]
        self.jaw_side = {
            "right": region & (x <= 1e-6),  # subject's right = image left = iBUG 0-7
            "left": region & (x >= -1e-6),
            "chin": region & (np.abs(x) <= 0.25 * np.ptp(x)),
        }
        self._jaw_allowed = np.stack(
            [self.jaw_side["right" if k < CHIN else "left" if k > CHIN else "chin"] for k in JAW]
        )
        # Constant part of the deformation's normal matrix, over D flattened as (3V,) = [x0 y0 z0 x1 ...].
        L = uniform_laplacian(n, self.edges)
        LtL = (L.T @ L).tocsr()
        zmask = np.tile([0.0, 0.0, 1.0], n)
        self._smooth = (w.laplacian * sp.kron(LtL, sp.identity(3)) + sp.diags(np.full(3 * n, w.ridge))).tocsr()
        self._zmask = zmask
        self._B_inv = np.linalg.inv(self.normal_matrix(w.depth_displacement).toarray())

    def normal_matrix(self, depth_displacement: float) -> sp.csr_matrix:
        """The deformation's constant normal matrix: smoothness, ridge and the weight on D_z."""
        return (self._smooth + sp.diags(depth_displacement * self._zmask)).tocsr()

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
        q = points[JAW]
        alpha = np.einsum("mkj,kj->mk", q[:, None, :] - a[None], ab) / np.maximum(np.sum(ab * ab, axis=1), 1e-12)
        alpha = np.clip(alpha, 0.0, 1.0)
        d = np.sum((a[None] + alpha[:, :, None] * ab[None] - q[:, None, :]) ** 2, axis=2)
        d = np.where(allowed, d, np.inf)
        best = np.argmin(d, axis=1)
        found = np.isfinite(d[JAW, best])
        k = JAW[found]
        binding.first[k] = e[best[found], 0]
        binding.second[k] = e[best[found], 1]
        binding.alpha[k] = alpha[JAW, best][found]
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
