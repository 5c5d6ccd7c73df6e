"""The camera in OpenGL terms: projection from a 3x3 camera matrix, per-view matrices, clip -> pixel.

The renderer draws into the normalized camera
(:func:`nvsynth.core.geometry.normalized_camera_matrix`) at ``render.render_size``
(at 448 x 448: focal 960, principal point (224, 224); 320 shipped), OpenCV axes (x right, y down, z forward). The GL
projection is built from the 3x3 camera matrix (:func:`projection_matrix`) so
a vertex lands at exactly the pixel :func:`nvsynth.core.geometry.project`
gives, pixel centres at integer coordinates; image row 0 is the first row read
back, so no flip is needed. Depth is tested, perspective-correct, with no MSAA
(the reduction to 224 in :mod:`render.compose` supersamples).

A view is a rigid 4x4 transform from source-camera mm to normalized-camera mm;
:meth:`Camera.view_uniforms` turns it into the shader's MVP matrix and the
rotation of its normals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import geometry

#: Near and far planes (mm) of the GL projection; the face sits at ~300 mm.
NEAR_MM = 10.0
FAR_MM = 3000.0


def projection_matrix(
    camera_matrix: ArrayLike, width: int, height: int, near: float = NEAR_MM, far: float = FAR_MM
) -> NDArray[np.float64]:
    """GL projection of an OpenCV camera: pixel (u, v) of a point is where :func:`geometry.project` puts it.

    Window x = u + 0.5 and window y = v + 0.5 (GL samples pixel centres at
    half-integers, OpenCV puts them at integers), so with ``glReadPixels``
    row 0 is image row 0. Depth maps [near, far] to [-1, 1].
    """
    K = np.asarray(camera_matrix, dtype=np.float64)
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    return np.array(
        [
            [2.0 * fx / width, 2.0 * s / width, (2.0 * cx + 1.0) / width - 1.0, 0.0],
            [0.0, 2.0 * fy / height, (2.0 * cy + 1.0) / height - 1.0, 0.0],
            [0.0, 0.0, (far + near) / (far - near), -2.0 * far * near / (far - near)],
            [0.0, 0.0, 1.0, 0.0],
        ]
    )


def clip_to_pixels(clip: ArrayLike, width: int, height: int) -> NDArray[np.float64]:
    """Inverse of the viewport mapping used by :func:`projection_matrix`: clip coords (..., 4) to pixels (..., 2)."""
    c = np.asarray(clip, dtype=np.float64)
    ndc = c[..., :2] / c[..., 3:4]
    return np.stack([(ndc[..., 0] + 1.0) * width / 2.0 - 0.5, (ndc[..., 1] + 1.0) * height / 2.0 - 0.5], axis=-1)


@dataclass(frozen=True)
class ViewUniforms:
    """One view's matrices as the shader reads them (float32, column-major)."""

    mvp: bytes  # 4x4: projection @ view transform
    rotation: bytes  # 3x3: the view's rotation, applied to the normals


@dataclass(frozen=True, eq=False)
class Camera:
    """A square ``size`` x ``size`` pinhole camera (3x3 ``camera_matrix``, OpenCV axes) with its GL projection."""

    camera_matrix: NDArray[np.float64]
    size: int
    near: float = NEAR_MM
    far: float = FAR_MM
    projection: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        K = np.array(self.camera_matrix, dtype=np.float64)  # a copy: the caller's array may change
        if K.shape != (3, 3):
            raise ValueError(f"camera_matrix must be 3x3, got {K.shape}")
        object.__setattr__(self, "camera_matrix", K)
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "near", float(self.near))
        object.__setattr__(self, "far", float(self.far))
        object.__setattr__(self, "projection", projection_matrix(K, self.size, self.size, self.near, self.far))

    @classmethod
    def normalized(cls, size: int = geometry.NORM_RENDER_SIZE, near: float = NEAR_MM, far: float = FAR_MM) -> Camera:
        """The normalized camera at ``size`` (focal 960 and principal point 224 at 448, scaled)."""
        return cls(geometry.normalized_camera_matrix(size), size, near, far)

    def view_uniforms(self, transform: NDArray[np.float64]) -> ViewUniforms:
        """The shader's matrices for the view ``transform`` (4x4, float64, source mm -> this camera's mm)."""
        return ViewUniforms(
            mvp=(self.projection @ transform).T.astype("f4").tobytes(),  # column-major
            rotation=np.ascontiguousarray(transform[:3, :3].T, dtype="f4").tobytes(),
        )
