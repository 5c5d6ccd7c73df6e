"""The fitted mesh on the frame's annotation: the six-point alignment, the depth, the comparison.

The labels (and the novel views' rotation) come from the annotation's head
pose and face centre (:mod:`nvsynth.core.geometry`: MPIIGaze six-point model,
face centre = mean of the six transformed model points). The fitted mesh must
agree with them, so that a view computed from the annotation shows the mesh
as the labels say:

* **Rotation.** The template's six vertices for the annotation's points (eye
  and mouth corners, iBUG ``ibug68.MPII_SIX`` through the 68 -> 468 map) are aligned
  once per template with the six-point model (Kabsch, on centred points):
  ``R_p`` maps the template's head frame to the model's. The annotation's
  template-to-camera rotation is then ``hR . R_p``; the fit is compared with
  it and, with ``recon.rotation_prior_deg``, drawn towards it (a prior in the
  pose-and-scale problem). The prior is on by default (0.25 deg,
  ``FitWeights.rotation_prior_deg``, measured there): the mesh then turns as
  the labels say, and novel views agree with them best.
* **Depth.** Scaling the mesh about the camera origin leaves every projection
  (and so the texture) unchanged; the factor is chosen so that the centroid of
  the six vertices has the depth of the annotation's face centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

from nvsynth.core import ibug68
from nvsynth.core.geometry import FACE_MODEL_6, HeadPose


@dataclass(frozen=True)
class SixPointAlignment:
    """The template's six annotation vertices and their rotation onto the MPIIGaze six-point model."""

    vertices: NDArray[np.int64]  # (6,) template vertices, in FACE_MODEL_6's order
    rotation: NDArray[np.float64]  # (3, 3) R_p: template head frame -> six-point model frame
    rms_mm: float  # residual of the alignment (shapes differ; the rotation is what matters)

    def annotation_rotation(self, annotation: HeadPose) -> NDArray[np.float64]:
        """The template-to-camera rotation the annotation implies: hR . R_p."""
        return annotation.rotation @ self.rotation

    def centroid_depth(self, vertices: ArrayLike) -> float:
        """Depth (camera z, mm) of the centroid of the six vertices of a fitted mesh (V, 3)."""
        return float(np.asarray(vertices, dtype=np.float64)[self.vertices, 2].mean())


def six_point_alignment(template_vertices: ArrayLike, landmark_map: ArrayLike) -> SixPointAlignment:
    """Kabsch fit of the template's six vertices (centred) onto the six-point model (centred)."""
    idx = np.asarray(landmark_map, dtype=np.int64)[ibug68.MPII_SIX]
    X = np.asarray(template_vertices, dtype=np.float64)[idx]
    a = FACE_MODEL_6 - FACE_MODEL_6.mean(axis=0)
    b = X - X.mean(axis=0)
    rot, rssd = Rotation.align_vectors(a, b)  # rot maps b onto a
    return SixPointAlignment(idx, rot.as_matrix(), float(rssd) / np.sqrt(len(idx)))


def rotation_difference_deg(a: ArrayLike, b: ArrayLike) -> float:
    """Angle of the rotation a . b^T, degrees."""
    rel = np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64).T
    return float(np.degrees(Rotation.from_matrix(rel).magnitude()))


@dataclass(frozen=True)
class DepthPlacement:
    """Scale about the camera origin that puts the six-point centroid at the annotation's face-centre depth."""

    factor: float  # multiply every camera-space point (and the head translation, the template scale) by this
    correction_mm: float  # annotation face-centre depth - the fitted six-point centroid's depth


def depth_placement(alignment: SixPointAlignment, vertices: ArrayLike, annotation: HeadPose) -> DepthPlacement:
    """The scaling of a fitted mesh (camera mm) that matches the annotation's face-centre depth."""
    z_fit = alignment.centroid_depth(vertices)
    z_ann = float(annotation.face_center()[2])
    if not (z_fit > 0.0 and z_ann > 0.0):
        raise ValueError(f"face behind the camera (fit {z_fit:.1f} mm, annotation {z_ann:.1f} mm)")
    return DepthPlacement(z_ann / z_fit, z_ann - z_fit)
