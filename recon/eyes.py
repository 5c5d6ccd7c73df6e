"""Eyes on the MediaPipe face mesh: eyelid-contour vertices, iris results, the 3D iris centre.

Side convention (as everywhere in nvsynth): index 0 is the subject's right eye
(image left for a frontal face; iBUG 36-41, MediaPipe mesh corners 33/133), index
1 the subject's left eye (iBUG 42-47, mesh corners 362/263).

The eyelid contour of each eye is 16 canonical-mesh vertices, in the order of
the first 16 of MediaPipe Iris's 71 eye-contour points (MediaPipe
``update_face_landmarks_calculator.cc``, Apache-2.0): the lower lid from the
outer to the inner corner (9 points, corners included), then the upper lid from
the outer to the inner side (7 points, corners excluded). The subject's left eye
uses the mirror-symmetric vertices in the same order.

:func:`iris_3d` places each iris centre on its fitted eye: the camera ray through
the iris centre's pixel (undistorted) meets the least-squares plane through the
fitted mesh's 16 eyelid vertices of that eye. All 3D quantities are camera
coordinates in mm (OpenCV axes, as in :mod:`nvsynth.core.geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Canonical-mesh vertices of the eyelid contours, (2, 16): subject's right eye, then left eye.
EYELID_VERTICES = np.array(
    [
        [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173],
        [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398],
    ],
    dtype=np.int64,
)
#: Eye corners on the canonical mesh, (2, 2): (outer, inner) of the right eye, (inner, outer) of the left,
#: i.e. each pair runs toward image-right for an upright face (MediaPipe's iris ROI start/end points).
EYE_CORNER_VERTICES = np.array([[33, 133], [362, 263]], dtype=np.int64)
#: The first 16 of the iris model's 71 contour points are the eyelid contour (order as EYELID_VERTICES);
#: as a closed polygon: the lower lid outer -> inner, then the upper lid inner -> outer.
EYELID_POLYGON = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 14, 13, 12, 11, 10, 9], dtype=np.int64)
N_CONTOUR = 71
N_IRIS = 5


@dataclass(frozen=True)
class Irises:
    """MediaPipe Iris results of both eyes, in source-image pixels (distorted, like the landmarks).

    Index 0 is the subject's right eye, 1 the left eye. ``iris[:, 0]`` is the
    iris centre and ``iris[:, 1:]`` four points on the iris boundary.
    """

    contour: NDArray[np.float64]  # (2, 71, 2) eye contour, eyelid halos and brow
    iris: NDArray[np.float64]  # (2, 5, 2) centre first

    @property
    def centre(self) -> NDArray[np.float64]:
        """(2, 2) iris centres."""
        return self.iris[:, 0]

    @property
    def radius(self) -> NDArray[np.float64]:
        """(2,) iris radius in pixels: mean distance of the four boundary points from the centre."""
        return np.linalg.norm(self.iris[:, 1:] - self.iris[:, :1], axis=2).mean(axis=1)

    @property
    def eyelids(self) -> NDArray[np.float64]:
        """(2, 16, 2) the eyelid contour as closed polygons (:data:`EYELID_POLYGON` order)."""
        return self.contour[:, EYELID_POLYGON]


def eye_plane(vertices: ArrayLike, eye: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A point and unit normal of the least-squares plane through one eye's eyelid vertices.

    The normal points toward the camera side of the face (its z component is negative
    for a face that looks at the camera: out of the face, like the template's normals).
    """
    v = np.asarray(vertices, dtype=np.float64)[EYELID_VERTICES[eye]]
    c = v.mean(axis=0)
    n = np.linalg.svd(v - c)[2][2]
    return c, (-n if n[2] > 0 else n)


def iris_3d(
    vertices: ArrayLike, iris_centres_px: ArrayLike, camera_matrix: ArrayLike, dist_coeffs: ArrayLike | None = None
) -> NDArray[np.float64]:
    """The two iris centres on their fitted eyes, camera mm (2, 3).

    ``vertices``: the fitted mesh (468, 3) in camera mm (canonical-mesh vertex
    order, e.g. ``FitResult.vertices``); ``iris_centres_px``: (2, 2) iris
    centres in source pixels, distorted as stored (``Irises.centre``). Each
    pixel's camera ray meets the plane of its eye (:func:`eye_plane`); a ray
    parallel to the plane gives NaN for that eye.
    """
    K = np.asarray(camera_matrix, dtype=np.float64)
    d = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, dtype=np.float64).ravel()
    px = np.asarray(iris_centres_px, dtype=np.float64).reshape(2, 1, 2)
    rays = np.c_[cv2.undistortPoints(px, K, d).reshape(2, 2), np.ones(2)]  # (2, 3) with z = 1
    out = np.full((2, 3), np.nan)
    for eye in range(2):
        c, n = eye_plane(vertices, eye)
        denom = float(n @ rays[eye])
        if abs(denom) > 1e-9:
            out[eye] = rays[eye] * float(n @ c) / denom
    return out
