"""The render mesh of one source frame: the fitted face, textured by its atlas.

:func:`build_render_mesh` unwraps the source frame into the template's UV
chart and completes what the source did not see (:mod:`render.atlas`), then
returns the fitted mesh with texture coordinates in atlas pixels (OpenCV
convention: pixel centres at integer coordinates) and the atlas as its
texture. The mesh is the record's own, welded: one chart, no seams.
``RenderMesh.seen`` is the atlas's own-texel alpha at each vertex (1 = the
source's own texel, seen well; 0 = mirrored or filled).

Face mask
---------
``RenderMesh.face_region`` is the per-vertex face-mask attribute rendered into
the second render target: the signed distance (mm, positive inside) to the
face outline (:func:`render.regions.face_region_distance`: the dlib jaw line
and eyebrows, in the frontal plane of the fitted head frame, so a fixed
region of the face whatever the pose). The renderer interpolates it and keeps
fragments where it is >= 0. It depends on the geometry only, never on the
texture, so the mask cannot take in the source's background.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from nvsynth.recon.meshops import vertex_normals
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.visibility import MAX_VIEW_ANGLE_DEG, OCCLUSION_GAP_MM, OCCLUSION_MARGIN_MM
from nvsynth.render.atlas import Atlas, build_atlas, outward_sign
from nvsynth.render.regions import face_region_distance
from nvsynth.render.uvlayout import TemplateChart


@dataclass(frozen=True)
class RenderMesh:
    """A textured triangle mesh in source-camera millimetres, ready for :class:`render.gl.FaceRenderer`."""

    positions: NDArray[np.float32]  # (N, 3) source-camera mm
    faces: NDArray[np.int32]  # (F, 3) into positions
    texcoords: NDArray[np.float32]  # (N, 2) texture pixels (x, y), centres at integers
    normals: NDArray[np.float32]  # (N, 3) unit, source camera, pointing out of the face
    seen: NDArray[np.float32]  # (N,) 1 where the texel is the vertex's own, 0 where completed
    landmarks: NDArray[np.float32]  # (68, 3) record.landmarks_3d
    face_region: NDArray[np.float32] | None = None  # (N,) face-mask attribute, inside where >= 0; None = all

    def region(self) -> NDArray[np.float32]:
        """The face-mask attribute (inside where >= 0), ones when the mesh carries none."""
        if self.face_region is None:
            return np.ones(len(self.positions), dtype=np.float32)
        return self.face_region


@dataclass(frozen=True)
class TexturedMesh:
    """A render mesh and its texture (the source's atlas), what the renderer takes for one source."""

    mesh: RenderMesh
    texture: NDArray[np.uint8]  # (S, S, 3) BGR
    atlas: Atlas


def build_render_mesh(
    record: ReconRecord, image: NDArray[np.uint8], chart: TemplateChart, judge: NDArray[np.uint8] | None = None
) -> TexturedMesh:
    """The render mesh of one source frame, textured by its completed atlas (see the module docstring).

    ``judge``: see :func:`render.atlas.build_atlas` (``None``: ``image`` itself, as the render stage does).
    """
    v = np.asarray(record.vertices, dtype=np.float64)
    faces = np.asarray(record.faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"record {record.source_file}: malformed mesh {v.shape}, {faces.shape}")
    layout = chart.layout(len(v))
    atlas = build_atlas(record, image, layout, judge)
    tc = layout.texcoords
    seen = cv2.remap(atlas.own, tc[None, :, 0], tc[None, :, 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mesh = RenderMesh(
        positions=v.astype(np.float32),
        faces=faces.astype(np.int32),
        texcoords=tc.copy(),
        normals=(vertex_normals(v, faces) * outward_sign(v, faces, record.head_rotation)).astype(np.float32),
        seen=seen.reshape(-1).astype(np.float32),
        landmarks=np.asarray(record.landmarks_3d, dtype=np.float32),
        face_region=face_region_distance(record).astype(np.float32),
    )
    return TexturedMesh(mesh, atlas.texture, atlas)


def occlusion_visible(
    verts: NDArray[np.floating],
    faces: NDArray[np.integer],
    eps: float = 1e-3,
    max_angle_deg: float = MAX_VIEW_ANGLE_DEG,
    gap_mm: float = OCCLUSION_GAP_MM,
    margin_mm: float = OCCLUSION_MARGIN_MM,
) -> NDArray[np.bool_]:
    """Vertices that face a camera at the origin and that no other triangle hides from it (ray casting).

    The same rules as :func:`recon.visibility.visible_vertices`: a vertex
    normal more than ``max_angle_deg`` from the line of sight counts as
    unseen, and so do vertices within ``margin_mm`` of one hidden behind
    surface at least ``gap_mm`` in front of it.
    Normals follow the winding, which must point out of the surface. Cost:
    one ray per vertex against every triangle (vectorised; ~50 ms for the
    template), so it is meant for tools and tests, not the render loop.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    cos = -np.einsum("ij,ij->i", vertex_normals(verts, faces), verts) / np.linalg.norm(verts, axis=1)
    facing = cos > np.cos(np.radians(max_angle_deg))
    tri = verts[faces]  # (F, 3, 3)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    d = verts[:, None, :]  # ray o = 0, direction = vertex (t = 1 at the vertex)
    p = np.cross(d, e2[None])
    det = np.einsum("vfj,fj->vf", p, e1)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = -tri[None, :, 0]
    u = np.einsum("vfj,vfj->vf", np.broadcast_to(s, p.shape), p) * inv
    q = np.cross(np.broadcast_to(s, p.shape), e1[None])
    v = np.einsum("vfj,vfj->vf", np.broadcast_to(d, q.shape), q) * inv
    t = np.einsum("vfj,fj->vf", q, e2) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > eps) & (t < 1 - eps)
    incident = np.zeros(hit.shape, dtype=bool)
    incident[faces[:, 0], np.arange(len(faces))] = True
    incident[faces[:, 1], np.arange(len(faces))] = True
    incident[faces[:, 2], np.arange(len(faces))] = True
    blocked = hit & ~incident
    visible = facing & ~blocked.any(axis=1)
    t_near = np.where(blocked, t, np.inf).min(axis=1)
    deep = facing & (np.linalg.norm(verts, axis=1) * (1.0 - t_near) >= gap_mm)
    if deep.any():
        dist, _ = cKDTree(verts[deep]).query(verts, distance_upper_bound=margin_mm)
        visible &= ~np.isfinite(dist)
    return visible
