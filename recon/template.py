"""The face template: MediaPipe's canonical face mesh (Apache-2.0), in head coordinates.

The OBJ (468 vertices, 898 triangles, UVs) is in cm with y up and z toward
the viewer. nvsynth's head frame follows the MPIIGaze face model and the
OpenCV camera: x toward image-right for a frontal face, y down, z away from
the camera, millimetres. The conversion (x, y, z) -> 10 * (x, -y, -z) is a
proper rotation (180 degrees about x), so triangle winding is preserved.
The file is not part of this repository; see :mod:`nvsynth.core.assets`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from nvsynth.core import ibug68
from nvsynth.core.assets import FACE_TEMPLATE, resolve
from nvsynth.core.config import Config
from nvsynth.core.errors import AssetError

CM_TO_MM = 10.0
N_VERTICES = 468
N_FACES = 898
#: z-extent over x-extent of all template vertices (measured on the OBJ).
TEMPLATE_DEPTH_RATIO = 0.647


@dataclass(frozen=True)
class FaceTemplate:
    vertices: NDArray[np.float64]  # (468, 3) head frame, mm
    faces: NDArray[np.int32]  # (898, 3)
    uv: NDArray[np.float64]  # (468, 2) the OBJ's texture coordinates
    mirror: NDArray[np.int32]  # (468,) left/right mirror-symmetric vertex


def depth_to_width_ratio(vertices: NDArray[np.floating]) -> float:
    """z-extent over x-extent of a vertex set (0.647 for the template)."""
    v = np.asarray(vertices, dtype=np.float64)
    return float(np.ptp(v[:, 2]) / np.ptp(v[:, 0]))


def mirror_indices(vertices: NDArray[np.floating], tol_mm: float = 0.5) -> NDArray[np.int32]:
    """Index of the vertex at (-x, y, z) for each vertex (the mesh is symmetric)."""
    v = np.asarray(vertices, dtype=np.float64)
    dist, idx = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    if float(dist.max()) > tol_mm:
        raise ValueError(f"template is not left/right symmetric (worst pair {dist.max():.2f} mm apart)")
    return idx.astype(np.int32)


def load_template(path: Path) -> FaceTemplate:
    """Parse the canonical face OBJ; raises ``AssetError`` on a malformed file."""
    verts: list[list[float]] = []
    tex: list[list[float]] = []
    tris: list[list[tuple[int, int]]] = []
    try:
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "vt":
                tex.append([float(x) for x in parts[1:3]])
            elif parts[0] == "f":
                corners = [c.split("/") for c in parts[1:]]
                tris.append([(int(c[0]) - 1, int(c[1]) - 1) for c in corners])
    except (OSError, ValueError, IndexError) as err:
        raise AssetError(f"face template {path}: cannot parse ({err})") from None
    if len(verts) != N_VERTICES or len(tris) != N_FACES or any(len(t) != 3 for t in tris):
        raise AssetError(
            f"face template {path}: expected {N_VERTICES} vertices and {N_FACES} triangles, "
            f"found {len(verts)} and {len(tris)}"
        )
    v = np.asarray(verts, dtype=np.float64) * CM_TO_MM * np.array([1.0, -1.0, -1.0])
    faces = np.array([[c[0] for c in t] for t in tris], dtype=np.int32)
    uv = np.zeros((N_VERTICES, 2))
    for t in tris:
        for vi, ti in t:
            uv[vi] = tex[ti]
    return FaceTemplate(v, faces, uv, mirror_indices(v))


def template_from_config(cfg: Config) -> FaceTemplate:
    """Resolve (config, environment, cache, download) and load the template."""
    return load_template(resolve(FACE_TEMPLATE, cfg.assets.face_template, cfg.assets.cache_dir))


LANDMARK_MAP_ENV = "NVSYNTH_LANDMARK_MAP"


def load_landmark_map(cfg: Config | None = None) -> NDArray[np.int32]:
    """The 68 template-vertex indices of dlib's iBUG landmarks.

    Order: ``assets.landmark_map``, then ``$NVSYNTH_LANDMARK_MAP``, then the
    map shipped in ``supplementary/face_model/landmark_map.json``. A JSON file
    is either a list of 68 ints or an object whose key ``empirical`` (or
    ``indices``) holds one.
    """
    path: Path | None = cfg.assets.landmark_map if cfg is not None else None
    if path is None and os.environ.get(LANDMARK_MAP_ENV):
        path = Path(os.environ[LANDMARK_MAP_ENV])
    if path is None:
        ref = resources.files("nvsynth.supplementary") / "face_model" / "landmark_map.json"
        text = ref.read_text()
        where = "supplementary/face_model/landmark_map.json"
    else:
        if not Path(path).is_file():
            raise AssetError(f"landmark map not found: {path}")
        text = Path(path).read_text()
        where = str(path)
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("indices", data.get("empirical"))
    idx = np.asarray(data, dtype=np.int64)
    if idx.shape != (ibug68.N_LANDMARKS,) or idx.min() < 0 or idx.max() >= N_VERTICES:
        raise AssetError(f"landmark map {where}: expected {ibug68.N_LANDMARKS} vertex indices in [0, {N_VERTICES})")
    return idx.astype(np.int32)
