"""An audit of rendered gaze: MediaPipe Iris on the rendered image, read back through the eyeball model.

For a rendered view (the render in the normalized camera at ``render.render_size``,
before the reduction to 224) this runs the iris model on each eye -- its crop from the
view's two eye-corner vertices, exactly as MediaPipe's pipeline crops from
the face mesh's corners (:meth:`recon.mediapipe.Roi.from_corners`) -- and
recovers the optical axis with the same eyeball model as the recon stage
(:func:`recon.eyeball.sphere_hit`: the camera ray through the iris centre met
with the sphere of the iris depth about the eyeball centre, which the view's
transform places). Adding
the subject's kappa (Listing orientation in the view's fitted head frame)
gives each eye's visual axis. Each is compared with its own direction to the
row's ``gaze_target_3d``; and the point at the target's distance along their
mean (from the eyes' midpoint) gives a face-centre gaze, compared with the
row's ``face_gaze`` label.

It audits the eye rendering (iris placement, lids, texture) against the
labels, with an independent detector; it is not a learned gaze estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from nvsynth.core import geometry
from nvsynth.recon.eyeball import iris_centre, listing_rotation, sphere_hit
from nvsynth.recon.mediapipe import IRIS_INPUT, MediaPipeLandmarker, Roi, crop, to_source
from nvsynth.render.eyes import EyeRig
from nvsynth.render.views import FACE_CENTER_NORM, View, apply_rigid

#: Test-time shifts of the iris crop, as fractions of its side: the model's estimate is averaged over them
#: (its 64-pixel input quantizes a 448 render's eye coarsely; one input pixel is about 1.6 render pixels).
CROP_SHIFTS = ((0.0, 0.0), (0.03, 0.0), (-0.03, 0.0), (0.0, 0.03), (0.0, -0.03))


#: Test-time scales of the crop (times MediaPipe's 2.3 x the corner distance).
CROP_SCALES = (0.9, 1.0, 1.1)
#: Passes that re-centre the crop on the previous estimate (0: the corners' crop only).
RECENTRE_PASSES = 3


def iris_centres(landmarker: MediaPipeLandmarker, image: NDArray[np.uint8], corners_px: NDArray[np.float64]) -> NDArray:
    """(2, 2) iris centres (pixels) in ``image`` of each eye, cropped from its corners ``corners_px`` (2, 2, 2).

    Eye 1 (the subject's left) is mirrored for the model and back, as in
    :meth:`recon.mediapipe.MediaPipeLandmarker.irises`. Each estimate is
    :func:`recon.eyeball.iris_centre` (as in the recon stage), averaged over
    the crop shifts :data:`CROP_SHIFTS`.
    """
    out = np.empty((2, 2))
    for eye in (0, 1):
        a, b = corners_px[eye]
        base = Roi.from_corners(a, b)
        centre = np.array([base.cx, base.cy])
        for _ in range(RECENTRE_PASSES + 1):
            est = []
            for (dx, dy), k in [(d, k) for d in CROP_SHIFTS for k in CROP_SCALES]:
                roi = Roi(centre[0] + dx * base.side, centre[1] + dy * base.side, k * base.side, base.angle)
                x, A = crop(image, roi, IRIS_INPUT, eye == 1)
                _contour, iris = landmarker.iris_net(x)
                est.append(iris_centre(to_source(iris, A, IRIS_INPUT, eye == 1)[:, :2]))
            out[eye] = np.mean(est, axis=0)
            centre = out[eye]
    return out


@dataclass(frozen=True)
class Audit:
    """One view's audit: degrees between the recovered and the labelled gaze."""

    face_error_deg: float  # mean of both eyes' recovered visual axes vs face_gaze
    eye_error_deg: NDArray[np.float64]  # (2,) each eye's recovered visual axis vs its direction to the target
    iris_px: NDArray[np.float64]  # (2, 2) detected iris centres, render pixels


def audit_view(landmarker: MediaPipeLandmarker, render: NDArray[np.uint8], view: View, rig: EyeRig,
               target_norm: NDArray[np.float64]) -> Audit:  # fmt: skip
    """Audit one rendered view (``render``: its square BGR render, any size; ``view``: its labels and transform)."""
    K = geometry.normalized_camera_matrix(render.shape[0])
    T = view.transform
    corners = geometry.project(apply_rigid(T, rig.corners.reshape(-1, 3)), K).reshape(2, 2, 2)
    iris = iris_centres(landmarker, render, corners)
    centres = apply_rigid(T, rig.eyes.centres)
    rays = np.c_[(iris - K[:2, 2]) / K[0, 0], np.ones(2)]
    hit = sphere_hit(rays, centres, rig.model.iris_depth_mm)
    head = T[:3, :3] @ rig.eyes.head_rotation  # the fitted head frame in the view's camera
    visual = np.empty((2, 3))
    for e in range(2):
        optical = (hit[e] - centres[e]) / np.linalg.norm(hit[e] - centres[e])
        visual[e] = head @ listing_rotation(head.T @ optical) @ rig.model.visual_axis(e)
    target = np.asarray(target_norm, dtype=np.float64)
    eye_err = geometry.angular_error_deg(visual, target - centres)
    # the face-centre gaze: the point at the label target's distance along the eyes' mean visual axis (from the
    # eyes' midpoint), seen from the face centre -- the eyes sit ~30 mm above the face centre, so their mean
    # axis alone differs from face_gaze by ~3 degrees at 600 mm even when both eyes are exact
    mid = centres.mean(axis=0)
    mean = visual.sum(axis=0) / np.linalg.norm(visual.sum(axis=0))
    seen = mid + np.linalg.norm(target - mid) * mean
    face_err = float(geometry.angular_error_deg(seen - FACE_CENTER_NORM, view.gaze))
    return Audit(face_err, eye_err, iris)
