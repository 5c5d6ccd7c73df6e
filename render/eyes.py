"""Eyes in the render mesh: eye openings, lids that follow the eye, eyeballs and their pose per view.

For a source whose eyes are open (:attr:`recon.eyeball.SourceEyes.open`),
:func:`build_eye_rig` prepares, in source-camera mm:

1. **Lid margins on the eyeball.** Each eye's 16 eyelid-contour vertices
   (:data:`recon.eyes.EYELID_VERTICES`) move onto the camera rays of the eye
   opening's 16 points (MediaPipe Iris's eyelid contour moved inward by
   :data:`render.eye_texture.LID_MARGIN`, :func:`render.eye_texture.eye_opening`),
   where the rays meet a sphere :data:`LID_GAP_MM` outside the eyeball (the
   lids rest on the globe); a ray that misses it (the corners, beyond the
   eyeball's outline) keeps the vertex's depth. Their texture coordinates
   become those points, so the mesh's eye opening is the detected one. Other
   vertices within the eyeball's sphere plus the gap are pushed along their
   camera ray out of it: skin never cuts the eyeball, and in the source view
   nothing moves.
2. **Eye openings.** The triangles inside each eyelid polygon (head frame,
   frontal plane) are cut from the face. They are kept as a *backing*, drawn
   with their source texels :data:`BACKING_PUSH_MM` further along each view ray
   (same pixels, greater depth): it shows only where the eyeball does not
   cover the opening (the canthi, beyond the 12 mm sphere's outline).
3. **Lids.** Every vertex gets weights for the upper and lower lid (a sine
   profile between the eye corners, 1 on the lid margin, falling off linearly
   over :data:`UPPER_FALLOFF_MM` above the upper margin and
   :data:`LOWER_FALLOFF_MM` below the lower one, blended across the opening).
   Per view the lids turn about the eyeball centre around the head's x axis by
   the change of :func:`lid_lift` (piecewise linear in the eye's pitch from its
   primary position: :data:`UPPER_LID_RATIO`, :data:`LOWER_LID_RATIO` in
   upgaze, :data:`UPPER_LID_RATIO_DOWN`, :data:`LOWER_LID_RATIO_DOWN` in
   downgaze) from the source's to the view's (weighted per vertex, in the vertex shader).
4. **Eyeballs**: a sphere per eye (:func:`sphere_mesh`, unit directions in
   the eye frame, texture coordinates of :func:`render.eye_texture.direction_texcoords`)
   with the eye textures of :mod:`render.eye_texture`. Per view
   (:func:`eye_pose`) each is placed at its centre with its target orientation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from matplotlib.path import Path as PolygonPath
from numpy.typing import ArrayLike, NDArray

from nvsynth.recon.eyeball import FORWARD, EyeballModel, SourceEyes, source_eyes
from nvsynth.recon.eyes import EYE_CORNER_VERTICES, EYELID_POLYGON, EYELID_VERTICES
from nvsynth.recon.record import ReconRecord
from nvsynth.render.eye_texture import EyeTextures, direction_texcoords, eye_opening, unwrap_eyes
from nvsynth.render.mesh import RenderMesh, build_render_mesh
from nvsynth.render.uvlayout import TemplateChart

#: Lid kinematics: each lid margin turns about the eyeball centre (head x axis) by a ratio times the eye's pitch
#: from its primary position, one ratio for upgaze and one for downgaze; per view the lids turn by
#: lid_lift(view's pitch) - lid_lift(source's pitch). Measured on healthy subjects (margin-to-reflex distances,
#: mm): the upper lid keeps its place on the cornea, covering a little more of it in up- and more in downgaze
#: (MRD1 -1.0 mm at 30-40 deg down, "Quantitating the change in upper eyelid position during downgaze", 50
#: subjects; Mastropietro et al., Arq Bras Oftalmol 72(6), 2009, -30 ... +30 deg); the fissure narrows by 2.3 mm
#: there (same study) and from 9.7 to 6.4 mm at 40 deg down (Read et al., Optom Vis Sci 83(10), 2006): the lower
#: lid descends by most of the eye's movement; in upgaze the lower lid's distance to the pupil grows (it rises
#: little; Mastropietro et al.). A lid margin that stays on the cornea turns with the eye (ratio 1; a little more
#: where it covers more); a lid lagging the eye shows sclera above the iris in downgaze ("lid lag", a sign of
#: thyroid eye disease), which healthy eyes do not.
UPPER_LID_RATIO = 1.0  # upgaze
LOWER_LID_RATIO = 0.3  # upgaze: rises little
UPPER_LID_RATIO_DOWN = 1.1
LOWER_LID_RATIO_DOWN = 0.9
#: Upper-lid weights fall off to 0 this far (mm, head frame) above the upper margin (about the lid crease).
UPPER_FALLOFF_MM = 8.0
#: Lower-lid weights fall off to 0 this far below the lower margin.
LOWER_FALLOFF_MM = 5.0
#: The lid margins rest this far outside the eyeball sphere (mm); skin near the eye is kept at least this far out.
LID_GAP_MM = 0.5
#: The eyeballs are drawn this much deeper along each view ray (mm): lid-deformed skin triangles that dip up to
#: this far into the globe stay in front (a chord of 8 mm on the 12.5 mm lid sphere dips 0.64 mm).
EYE_DEPTH_BIAS_MM = 1.0
#: Skin vertices within this distance of an eyeball centre are checked against its sphere.
EYE_REGION_MM = 20.0
#: The opening's backing is drawn this much further along the view ray (mm): behind the whole eyeball.
BACKING_PUSH_MM = 30.0
#: The eyeball mesh: rings from the pole, segments around it, and its extent from the pole (the back never shows).
SPHERE_RINGS = 24
SPHERE_SEGMENTS = 40
SPHERE_THETA_MAX = np.radians(150.0)


@dataclass(frozen=True)
class SphereMesh:
    """Both eyeballs as one mesh of unit directions in their eye frames."""

    directions: NDArray[np.float32]  # (M, 3)
    texcoords: NDArray[np.float32]  # (M, 2) in the two-eye texture (eye 0 left half, eye 1 right half)
    eye: NDArray[np.float32]  # (M,) 0 or 1
    faces: NDArray[np.int32]  # (T, 3), outward winding


@lru_cache(maxsize=1)
def sphere_mesh() -> SphereMesh:
    """A UV sphere cap (pole = FORWARD) per eye; texture coordinates side by side in one (N, 2N) texture.

    The same for every source (made once per process; treat as read-only).
    """
    th = np.linspace(0.0, SPHERE_THETA_MAX, SPHERE_RINGS + 1)[1:]
    ph = np.linspace(-np.pi, np.pi, SPHERE_SEGMENTS, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    ring = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), -np.cos(T)], axis=-1).reshape(-1, 3)
    dirs = np.r_[FORWARD[None], ring]
    faces = []
    s = SPHERE_SEGMENTS
    for j in range(s):  # the pole's fan
        faces.append((0, 1 + (j + 1) % s, 1 + j))
    for i in range(SPHERE_RINGS - 1):
        for j in range(s):
            a, b = 1 + i * s + j, 1 + i * s + (j + 1) % s
            c, d = a + s, b + s
            faces += [(a, b, d), (a, d, c)]
    f = np.asarray(faces, dtype=np.int64)
    # outward winding: the normal of the first fan triangle must point along its vertices
    n = np.cross(dirs[f[0, 1]] - dirs[f[0, 0]], dirs[f[0, 2]] - dirs[f[0, 0]])
    if n @ dirs[f[0]].mean(axis=0) < 0:
        f = f[:, [0, 2, 1]]
    st = np.clip(direction_texcoords(dirs), 0.0, 1.0)  # beyond the texture's disc: its border (clamped)
    m = len(dirs)
    both_st = np.r_[np.c_[st[:, 0] * 0.5, st[:, 1]], np.c_[0.5 + st[:, 0] * 0.5, st[:, 1]]]
    return SphereMesh(
        directions=np.r_[dirs, dirs].astype(np.float32),
        texcoords=both_st.astype(np.float32),
        eye=np.r_[np.zeros(m), np.ones(m)].astype(np.float32),
        faces=np.r_[f, f + m].astype(np.int32),
    )


def _ray_sphere_near(rays: NDArray[np.float64], centre: NDArray[np.float64], radius: float) -> NDArray[np.float64]:
    """Distance along unit rays (K, 3) from the origin to the near intersection with a sphere; NaN on a miss."""
    b = rays @ centre
    disc = b * b - (centre @ centre - radius * radius)
    return np.where(disc >= 0, b - np.sqrt(np.maximum(disc, 0.0)), np.nan)


def snap_eyelids(record: ReconRecord, eyes: SourceEyes, model: EyeballModel) -> ReconRecord:
    """The record with its lid margins on the detected eyelids and the eyeballs, skin kept outside (1. above)."""
    v = np.array(record.vertices, dtype=np.float64)
    uv = np.array(record.uv, dtype=np.float64)
    K = np.asarray(record.camera_matrix, dtype=np.float64)
    d = np.asarray(record.dist_coeffs, dtype=np.float64).ravel()
    contour = np.stack([eye_opening(c) for c in np.asarray(record.eye_contour_2d, dtype=np.float64)])
    outer = model.radius_mm + LID_GAP_MM
    for e in range(2):
        idx = EYELID_VERTICES[e]
        rays = np.c_[cv2.undistortPoints(contour[e].reshape(-1, 1, 2), K, d).reshape(-1, 2), np.ones(16)]
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        t = _ray_sphere_near(rays, eyes.centres[e], outer)
        keep_depth = v[idx, 2] / rays[:, 2]
        v[idx] = rays * np.where(np.isnan(t), keep_depth, t)[:, None]
        uv[idx] = contour[e]
    for e in range(2):
        c = eyes.centres[e]
        dist = np.linalg.norm(v - c, axis=1)
        inside = np.flatnonzero(dist < outer)
        inside = np.setdiff1d(inside, EYELID_VERTICES.ravel())
        if len(inside):
            rays = v[inside] / np.linalg.norm(v[inside], axis=1, keepdims=True)
            v[inside] = rays * _ray_sphere_near(rays, c, outer)[:, None]
    return dataclasses.replace(record, vertices=v.astype(np.float32), uv=uv.astype(np.float32))


def _head(record: ReconRecord, points: ArrayLike) -> NDArray[np.float64]:
    return (np.asarray(points, dtype=np.float64) - record.head_translation) @ np.asarray(record.head_rotation)


def opening_faces(record: ReconRecord) -> NDArray[np.bool_]:
    """The eye openings: triangles all of whose vertices are eyelid-contour vertices of one eye, or (subdivided
    meshes) lie strictly inside its eyelid polygon (head frame, frontal plane)."""
    v = _head(record, record.vertices)
    faces = np.asarray(record.faces, dtype=np.int64)
    out = np.zeros(len(faces), dtype=bool)
    for e in range(2):
        poly = PolygonPath(v[EYELID_VERTICES[e][EYELID_POLYGON], :2])
        member = np.zeros(len(v), dtype=bool)
        member[EYELID_VERTICES[e]] = True
        member |= poly.contains_points(v[:, :2], radius=-0.3)  # strictly inside (subdivided meshes)
        out |= member[faces].all(axis=1)
    return out


def lid_weights(record: ReconRecord, positions: ArrayLike) -> NDArray[np.float32]:
    """(N, 3) per vertex: eye (0, 1; -1 none), upper-lid weight, lower-lid weight (3. in the module docstring)."""
    p = _head(record, positions)
    lids = _head(record, record.vertices)
    out = np.zeros((len(p), 3), dtype=np.float64)
    out[:, 0] = -1.0
    for e in range(2):
        c = lids[EYELID_VERTICES[e]]
        x0, x1 = c[0, 0], c[8, 0]
        u = (p[:, 0] - x0) / (x1 - x0)
        profile = np.where((u > 0) & (u < 1), np.sin(np.pi * np.clip(u, 0.0, 1.0)), 0.0)
        upper = c[[0, 9, 10, 11, 12, 13, 14, 15, 8]]
        lower = c[:9]
        yu = np.interp(p[:, 0], *_sorted_xy(upper))
        yl = np.interp(p[:, 0], *_sorted_xy(lower))
        y = p[:, 1]
        span = np.maximum(yl - yu, 1e-6)
        t = np.clip((y - yu) / span, 0.0, 1.0)
        wu = np.where(y < yu, np.clip(1.0 - (yu - y) / UPPER_FALLOFF_MM, 0.0, 1.0), 1.0 - t)
        wl = np.where(y > yl, np.clip(1.0 - (y - yl) / LOWER_FALLOFF_MM, 0.0, 1.0), t)
        wu = np.where(y > yl, 0.0, wu) * profile
        wl = np.where(y < yu, 0.0, wl) * profile
        mine = (wu + wl > 0) & (out[:, 1] + out[:, 2] == 0)
        out[mine] = np.c_[np.full(int(mine.sum()), float(e)), wu[mine], wl[mine]]
    return out.astype(np.float32)


def _sorted_xy(points: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]


@dataclass(frozen=True)
class EyeRig:
    """One source's eyes ready to draw: face with openings and lid weights, backing, eyeballs, textures."""

    eyes: SourceEyes
    model: EyeballModel
    textures: EyeTextures
    face: RenderMesh  # the face without its openings, then the backing triangles (the last ``backing`` faces)
    texture: NDArray[np.uint8]  # the face's texture: the source's atlas (render/atlas.py), BGR
    backing: int  # number of backing triangles at the end of ``face.faces``
    lids: NDArray[np.float32]  # (N, 4) per face vertex: eye, upper weight, lower weight, push (1 on the backing)
    sphere: SphereMesh
    corners: NDArray[np.float64]  # (2, 2, 3) eye-corner vertices (EYE_CORNER_VERTICES), source camera mm
    contour: NDArray[np.float64]  # (2, 16, 3) the lid margins (EYELID_VERTICES) on the eyeballs, source camera mm
    contour_lids: NDArray[np.float32]  # (2, 16, 3) their lid weights (lid_weights)


def build_eye_rig(
    record: ReconRecord, image: NDArray[np.uint8], model: EyeballModel, chart: TemplateChart
) -> EyeRig | None:
    """The eye rig of a source, or ``None`` when its eyes cannot be redirected (no irises, or an eye closed).

    The face is the render stage's textured mesh (``chart``: the atlas layout) of the record with its
    eyelids snapped onto the eyeballs.
    """
    if record.iris_2d is None or record.eye_contour_2d is None:
        return None
    eyes = source_eyes(record, model)
    if not eyes.open:
        return None
    snapped = snap_eyelids(record, eyes, model)
    textured = build_render_mesh(snapped, image, chart)
    mesh = textured.mesh
    cut = opening_faces(snapped)
    faces = np.asarray(mesh.faces)
    back = faces[cut]
    # the backing gets its own copies of its vertices (pushed in the vertex shader)
    used, inverse = np.unique(back.reshape(-1), return_inverse=True)
    n = len(mesh.positions)

    def cat(a: NDArray | None) -> NDArray | None:
        return None if a is None else np.concatenate([a, a[used]])

    face = RenderMesh(
        positions=cat(mesh.positions),  # type: ignore[arg-type]
        faces=np.r_[faces[~cut], n + inverse.reshape(-1, 3)].astype(np.int32),
        texcoords=cat(mesh.texcoords),  # type: ignore[arg-type]
        normals=cat(mesh.normals),  # type: ignore[arg-type]
        seen=cat(mesh.seen),  # type: ignore[arg-type]
        landmarks=mesh.landmarks,
        face_region=cat(mesh.face_region),
    )
    w = lid_weights(snapped, face.positions)
    push = np.r_[np.zeros(n), np.ones(len(used))].astype(np.float32)
    sv = np.asarray(snapped.vertices, dtype=np.float64)
    contour = sv[EYELID_VERTICES]
    return EyeRig(eyes, model, unwrap_eyes(image, record, eyes, model), face, textured.texture, int(cut.sum()),
                  np.c_[w, push].astype(np.float32), sphere_mesh(), sv[EYE_CORNER_VERTICES], contour,
                  lid_weights(snapped, contour.reshape(-1, 3)).reshape(2, 16, 3))  # fmt: skip


@dataclass(frozen=True)
class EyePose:
    """Both eyes of one view, in source-camera mm (the view's transform places them like the face)."""

    model: NDArray[np.float64]  # (2, 4, 4) unit sphere in the eye frame -> source camera (radius, orientation, centre)
    relative: NDArray[np.float64]  # (2, 3, 3) eye frame -> the source's eye frame (where the highlight stays)
    lid_angles: NDArray[np.float64]  # (2, 2) upper, lower lid rotation about the head's x axis, radians
    lid_axis: NDArray[np.float64]  # (3,) the head's x axis in source-camera coordinates
    centres: NDArray[np.float64]  # (2, 3)


def _pitch(R: NDArray[np.float64], orientation: NDArray[np.float64]) -> float:
    """Pitch (radians, up positive) of an orientation's optical axis in the head frame."""
    o = R.T @ orientation @ FORWARD
    return float(np.arcsin(np.clip(-o[1], -1.0, 1.0)))


def lid_lift(pitch: float) -> NDArray[np.float64]:
    """(2,) upper and lower lid angles (radians, up positive) for an eye pitched ``pitch`` (radians, up positive)
    from its primary position: the piecewise-linear lid kinematics of :data:`UPPER_LID_RATIO` and the others."""
    if pitch >= 0.0:
        return np.array([UPPER_LID_RATIO * pitch, LOWER_LID_RATIO * pitch])
    return np.array([UPPER_LID_RATIO_DOWN * pitch, LOWER_LID_RATIO_DOWN * pitch])


def eye_pose(rig: EyeRig, orientations: ArrayLike) -> EyePose:
    """The pose of both eyes turned to ``orientations`` (2, 3, 3) (eye frame -> source camera)."""
    orient = np.asarray(orientations, dtype=np.float64)
    eyes, R = rig.eyes, rig.eyes.head_rotation
    model = np.zeros((2, 4, 4))
    model[:, :3, :3] = orient * rig.model.radius_mm
    model[:, :3, 3] = eyes.centres
    model[:, 3, 3] = 1.0
    relative = np.einsum("eji,ejk->eik", eyes.orientation, orient)
    lift = np.array([lid_lift(_pitch(R, orient[e])) - lid_lift(_pitch(R, eyes.orientation[e])) for e in range(2)])
    # lifting the lids (> 0) is a rotation about the head's +x axis by a negative angle (y down)
    lids = -lift
    return EyePose(model, relative, lids, R[:, 0].copy(), eyes.centres.copy())


def _turn(v: NDArray[np.float64], k: NDArray[np.float64], a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rodrigues: rotate vectors ``v`` (N, 3) about the unit axis ``k`` by angles ``a`` (N,)."""
    c, s = np.cos(a)[:, None], np.sin(a)[:, None]
    return v * c + np.cross(k, v) * s + np.outer(v @ k, k) * (1.0 - c)


def lid_positions(pose: EyePose, positions: ArrayLike, lids: ArrayLike) -> NDArray[np.float64]:
    """Vertices (N, 3) moved with the lids of ``pose`` (per-vertex ``lids`` (N, >= 3): eye, upper, lower weight).

    The numpy twin of the face vertex shader (:data:`render.eye_gl.FACE_VERTEX_SHADER`).
    """
    p = np.array(positions, dtype=np.float64).reshape(-1, 3)
    w = np.asarray(lids, dtype=np.float64).reshape(len(p), -1)
    for e in range(2):
        sel = np.round(w[:, 0]) == e
        if np.any(sel):
            a = w[sel, 1] * pose.lid_angles[e, 0] + w[sel, 2] * pose.lid_angles[e, 1]
            p[sel] = pose.centres[e] + _turn(p[sel] - pose.centres[e], pose.lid_axis, a)
    return p
