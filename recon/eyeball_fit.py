"""The per-subject eyeball fit: kappa and the eyeball-centre offset over all of a subject's frames.

See :mod:`nvsynth.recon.eyeball` for the model and its constants (sources there). Robust least
squares (scipy, soft-L1 with weak priors) so that each eye's visual axis points at the annotated gaze
target; :func:`fit_subject` saves ``eyeball.json`` beside the subject's records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from nvsynth.core import geometry
from nvsynth.recon.eyeball import (
    CENTRE_OFFSET_MM,
    EAR_CLOSED,
    EYEBALL_RADIUS_MM,
    FORWARD,
    KAPPA_BOUND_DEG,
    KAPPA_PRIOR_DEG,
    KAPPA_PRIOR_SIGMA_DEG,
    NASAL_SIGN,
    OFFSET_BOUND_MM,
    OFFSET_PRIOR_SIGMA_MM,
    ROBUST_SCALE_DEG,
    EyeballModel,
    eye_aspect_ratio,
    eyeball_path,
    iris_rays,
    kappa_direction,
    sphere_hit,
)
from nvsynth.recon.eyes import EYE_CORNER_VERTICES
from nvsynth.recon.record import ReconRecord


def _angle_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    return geometry.angular_error_deg(a, b)


@dataclass(frozen=True)
class _Frames:
    """What the fit needs of F frames, stacked (camera mm)."""

    rotation: NDArray[np.float64]  # (F, 3, 3) fitted head rotations
    mids: NDArray[np.float64]  # (F, 2, 3) eye-corner midpoints
    rays: NDArray[np.float64]  # (F, 2, 3) iris rays
    target: NDArray[np.float64]  # (F, 3) gaze targets
    face_centre: NDArray[np.float64]  # (F, 3) annotation face centres

    @classmethod
    def of(cls, records: list[ReconRecord]) -> _Frames:
        return cls(
            np.stack([np.asarray(r.head_rotation, dtype=np.float64) for r in records]),
            np.stack([np.asarray(r.vertices, dtype=np.float64)[EYE_CORNER_VERTICES].mean(axis=1) for r in records]),
            np.stack([iris_rays(r) for r in records]),
            np.stack([np.asarray(r.gaze_target, dtype=np.float64) for r in records]),
            np.stack([_face_centre(r) for r in records]),
        )


def _face_centre(record: ReconRecord) -> NDArray[np.float64]:
    return geometry.HeadPose.from_rvec(record.annotation_rvec, record.annotation_tvec).face_center()


def listing_rotations(directions: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`listing_rotation` of many unit directions (..., 3) -> (..., 3, 3) (Rodrigues' formula)."""
    d = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    axis = np.cross(FORWARD, d)
    s = np.linalg.norm(axis, axis=-1)
    c = d @ FORWARD
    k = axis / np.maximum(s, 1e-15)[..., None]
    K = np.zeros((*d.shape[:-1], 3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + s[..., None, None] * K + (1.0 - c)[..., None, None] * (K @ K)


def _visual_axes(params: NDArray[np.float64], fr: _Frames, radius: float) -> tuple[NDArray, NDArray]:
    """Model visual axes (F, 2, 3) and unit directions eye centre -> target (F, 2, 3), camera, for ``params``."""
    kappa, offset = params[:2], params[2:]
    k = np.stack([kappa_direction(kappa, e) for e in range(2)])  # (2, 3)
    off = offset[None, :] * np.c_[NASAL_SIGN, np.ones(2), np.ones(2)]  # (2, 3) per eye, head frame
    c = fr.mids + np.einsum("fij,ej->fei", fr.rotation, off)  # (F, 2, 3)
    hit = sphere_hit(fr.rays.reshape(-1, 3), c.reshape(-1, 3), radius).reshape(c.shape)  # at the iris depth
    opt = hit - c
    opt_head = np.einsum("fji,fej->fei", fr.rotation, opt)  # R^T opt
    visual_head = np.einsum("feij,ej->fei", listing_rotations(opt_head), k)
    axes = np.einsum("fij,fej->fei", fr.rotation, visual_head)
    d = fr.target[:, None, :] - c
    return axes, d / np.linalg.norm(d, axis=-1, keepdims=True)


def fit_eyeball(records: list[ReconRecord], radius_mm: float = EYEBALL_RADIUS_MM) -> EyeballModel | None:
    """Kappa and the eyeball-centre offset of one subject from its frames (``None`` without usable frames).

    Frames need the dense record fields (``recon.detector: mediapipe``) and both
    eyes open. Residuals: each eye's model visual axis minus its unit direction
    to the frame's gaze target (about radians), soft-L1 with scale
    :data:`ROBUST_SCALE_DEG`, plus the priors.
    """
    usable = [r for r in records if r.iris_2d is not None and r.eye_contour_2d is not None]
    open_ = [r for r in usable if np.all(eye_aspect_ratio(r.eye_contour_2d) >= EAR_CLOSED)]
    if not open_:
        return None
    terms = _Frames.of(open_)
    tau = np.radians(ROBUST_SCALE_DEG)
    x0 = np.r_[KAPPA_PRIOR_DEG, CENTRE_OFFSET_MM]
    sigma = np.r_[np.full(2, KAPPA_PRIOR_SIGMA_DEG), np.full(3, OFFSET_PRIOR_SIGMA_MM)]

    def residuals(x: NDArray[np.float64]) -> NDArray[np.float64]:
        axes, dirs = _visual_axes(x, terms, depth)
        return np.r_[(axes - dirs).ravel(), tau * (x - x0) / sigma]

    lo = np.r_[np.full(2, -KAPPA_BOUND_DEG), CENTRE_OFFSET_MM - OFFSET_BOUND_MM]
    hi = np.r_[np.full(2, KAPPA_BOUND_DEG), CENTRE_OFFSET_MM + OFFSET_BOUND_MM]
    depth = EyeballModel(radius_mm=radius_mm).iris_depth_mm
    sol = least_squares(residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=tau, x_scale=sigma)
    axes, dirs = _visual_axes(sol.x, terms, depth)
    per_eye = _angle_deg(axes, dirs)  # (F, 2)
    prior_axes, prior_dirs = _visual_axes(x0, terms, depth)
    face = _angle_deg(axes.sum(axis=1), terms.target - terms.face_centre)
    return EyeballModel(
        kappa_deg=(float(sol.x[0]), float(sol.x[1])),
        offset_mm=(float(sol.x[2]), float(sol.x[3]), float(sol.x[4])),
        radius_mm=radius_mm,
        frames=len(open_),
        frames_closed=len(usable) - len(open_),
        residual_median_deg=float(np.median(per_eye)),
        residual_p90_deg=float(np.percentile(per_eye, 90)),
        residual_face_median_deg=float(np.median(face)),
        residual_prior_median_deg=float(np.median(_angle_deg(prior_axes, prior_dirs))),
        frame_residuals_deg=[round(float(x), 3) for x in per_eye.mean(axis=1)],
    )


def fit_subject(record_files: list[Path], subject_dir: Path) -> EyeballModel | None:
    """Fit a subject's eyeball model from its record files and save it beside them (``eyeball.json``).

    Records without irises (68-point backends) are ignored; with none usable,
    no model is written and a stale one is removed.
    """
    records = [ReconRecord.load(p) for p in record_files]
    model = fit_eyeball(records)
    path = eyeball_path(subject_dir)
    if model is None:
        path.unlink(missing_ok=True)
        return None
    model.save(path)
    return model
