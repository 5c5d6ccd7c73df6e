"""Scoring nvsynth's rows against renders of the true head at each row's labelled pose.

View geometry of a row (nvsynth.render.views, stated in its terms): the
source frame's annotated head pose gives the face centre ``fc`` (mean of the
six transformed MPIIGaze model points) and the normalizing rotation ``R``
(stored per row as ``face_mat_norm``); the row's novel-view rotation ``M``
(``rotation_matrix``) turns the normalized face about the face centre at
(0, 0, NORM_DISTANCE). So a source-camera point x lands at

    M R (x - fc) + (0, 0, NORM_DISTANCE)

in the normalized camera (focal 960, 448 px, area-reduced to 224).

The labelled truth. Every label of a row is measured from the annotation's
face centre, which a generic six-point model puts at a depth other than the
true face's. One image cannot tell a head from a larger
one farther away, so the truth a perfect recon could reach, and the one the
labels describe, is the true mesh scaled about the camera centre by
k = (fc . c) / |c|^2, c the mean of its six landmark vertices
(:func:`labelled_scale`): the same source image, its face centre at the
annotation's. That mesh, pushed through exactly the row's transform, is the
truth of the row (rendering the unscaled mesh instead would swing the face
off the patch centre in novel views, away from where its gaze label starts).

Per row (all images 224 px, grey = OpenCV's BGR -> grey, plain appearance):

* **truth**: the true mesh, textured by its own portrait, rendered by
  :class:`nvsynth.render.gl.FaceRenderer`; its face mask is the true face region
  (jaw and eyebrow outline of the true landmark vertices, the region nvsynth's
  own mask uses: :func:`nvsynth.render.regions.face_region_distance`).
* **flow**: OpenCV DIS optical flow (medium preset) from the truth's grey patch
  to nvsynth's; displacement = |flow| in patch pixels, taken over the
  **intersection** of the two face masks (nvsynth's ``face_mask`` and the truth's).
* **background share**: nvsynth's own mesh (its recon record through
  :func:`nvsynth.render.mesh.build_render_mesh`, as the render stage builds it)
  is rendered at the row's transform with the source frame replaced by the true
  head's coverage of that frame (255 where the true head is, 0 where the
  scene behind it is). A pixel of nvsynth's ``face_mask`` whose sampled
  coverage is below 1/2 takes its texel from the background: share = such
  pixels / mask pixels. The same mesh rendered with the real source frame must
  reproduce the stored patch (``repro`` = mean absolute grey difference inside
  the mask; about 0 while the render stage builds its mesh that way).
* **oracle**: the true mesh pushed through nvsynth's render path (a recon record
  with the true vertices, their distorted projections as uv and
  :func:`nvsynth.recon.visibility.visible_vertices`, through ``build_render_mesh``
  and the source frame): the floor of the measurement (resampling, JPEG,
  fill), scored with the same flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np
from numpy.typing import NDArray

from nvsynth.core import geometry
from nvsynth.datasets.mpii import Frame, Subject, open_subject
from nvsynth.recon.meshops import vertex_normals
from nvsynth.recon.record import ReconRecord, record_path
from nvsynth.recon.template import N_VERTICES
from nvsynth.recon.visibility import visible_vertices
from nvsynth.render.gl import FaceRenderer, RenderBatch
from nvsynth.render.mesh import RenderMesh, build_render_mesh
from nvsynth.render.regions import face_region_distance
from nvsynth.render.uvlayout import TemplateChart

from .scene import TruthSubject, coverage

PATCH = geometry.NORM_PATCH_SIZE


def row_transform(face_mat_norm: NDArray, rotation_matrix: NDArray, face_center: NDArray) -> NDArray[np.float64]:
    """4x4: source-camera mm -> normalized-camera mm of one output row (module docstring)."""
    A = np.asarray(rotation_matrix, np.float64) @ np.asarray(face_mat_norm, np.float64)
    T = np.eye(4)
    T[:3, :3] = A
    T[:3, 3] = np.array([0.0, 0.0, geometry.NORM_DISTANCE]) - A @ np.asarray(face_center, np.float64)
    return T


def to_patches(batch: RenderBatch) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """448 renders -> 224 patches (area) and masks (at least two of four render pixels in the mask)."""
    n = len(batch)
    patches = np.empty((n, PATCH, PATCH, 3), np.uint8)
    masks = np.empty((n, PATCH, PATCH), bool)
    for b in range(n):
        patches[b] = cv2.resize(batch.color[b], (PATCH, PATCH), interpolation=cv2.INTER_AREA)
        m = cv2.resize(np.ascontiguousarray(batch.mask[b]), (PATCH, PATCH), interpolation=cv2.INTER_AREA)
        masks[b] = m > 127
    return patches, masks


def labelled_scale(truth: TruthSubject, frame: Frame) -> float:
    """k that puts the true face centre at the annotation's depth: k c = fc projected on c's ray.

    c is the true face centre by the annotation's own definition: the mean of the head's
    six annotation points (:func:`.heads.annotation_points`).
    """
    c = truth.to_camera(truth.head.annotation_points, frame.index).mean(axis=0)
    return float(frame.head_pose.face_center() @ c / (c @ c))


def truth_record(truth: TruthSubject, frame: Frame, subject: Subject) -> ReconRecord:
    """A recon record holding the labelled truth of ``frame`` (what a perfect recon would write).

    The true mesh scaled about the camera centre by :func:`labelled_scale`: the same image
    in the source camera (so the same uv and visibility), with its face centre where the
    annotation puts it, which is where every label of the row is measured from.
    """
    cam = subject.calibration.camera
    true_verts = truth.camera_vertices(frame.index)
    k = labelled_scale(truth, frame)
    verts = k * true_verts
    lm3 = verts[truth.head.landmark_vertices]
    return ReconRecord(
        vertices=verts.astype(np.float32),
        faces=truth.head.faces.astype(np.int32),
        uv=cam.project(true_verts).astype(np.float32),
        visible=visible_vertices(true_verts, truth.head.faces, cam.matrix),
        mirror=truth.head.mirror.astype(np.int32),
        landmarks_2d=cam.project(lm3).astype(np.float32),
        landmarks_3d=lm3.astype(np.float32),
        head_rotation=truth.rotations[frame.index],
        head_translation=k * truth.translations[frame.index],
        reprojection_error_px=0.0,
        detector="truth",
        subject=subject.name,
        frame_index=frame.index,
        source_file=f"{subject.name}/{frame.relative_path}",
        image_size=np.array([1280, 720], dtype=np.int32),
        camera_matrix=cam.matrix,
        dist_coeffs=cam.dist_coeffs,
        annotation_rvec=frame.head_rvec,
        annotation_tvec=frame.head_tvec,
        gaze_target=frame.gaze_target,
    )


def truth_mesh(truth: TruthSubject, record: ReconRecord) -> RenderMesh:
    """The true mesh textured by its portrait, with the true face region as its mask attribute."""
    v = np.asarray(record.vertices, np.float64)
    return RenderMesh(
        positions=record.vertices,
        faces=record.faces,
        texcoords=truth.head.uv.astype(np.float32),
        normals=vertex_normals(v, record.faces).astype(np.float32),
        seen=np.ones(len(v), np.float32),
        landmarks=record.landmarks_3d,
        face_region=face_region_distance(record).astype(np.float32),
    )


def mesh_error(fitted: ReconRecord, truth: ReconRecord) -> tuple[float, float]:
    """(mean depth difference fitted - truth, RMS distance) in mm over the template's vertices.

    Both meshes are MediaPipe's canonical mesh or a subdivision of it, whose first
    ``N_VERTICES`` vertices are the template's; NaN when the fitted mesh has fewer.
    """
    if len(fitted.vertices) < N_VERTICES or len(truth.vertices) < N_VERTICES:
        return float("nan"), float("nan")
    d = np.asarray(fitted.vertices[:N_VERTICES], np.float64) - np.asarray(truth.vertices[:N_VERTICES], np.float64)
    return float(d[:, 2].mean()), float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


_DIS: cv2.DISOpticalFlow | None = None


def flow_magnitude(truth_bgr: NDArray[np.uint8], other_bgr: NDArray[np.uint8]) -> NDArray[np.float32]:
    """|DIS flow| (medium preset) from the truth's grey patch to the other's, pixels."""
    global _DIS
    if _DIS is None:
        _DIS = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    a = cv2.cvtColor(truth_bgr, cv2.COLOR_BGR2GRAY)
    b = cv2.cvtColor(other_bgr, cv2.COLOR_BGR2GRAY)
    flow = _DIS.calc(a, b, None)
    return np.linalg.norm(flow, axis=2).astype(np.float32)


@dataclass
class RowScore:
    subject: str
    pattern: str
    frame: int
    view: int
    flow: NDArray[np.float32]  # |flow| over the mask intersection
    oracle_flow: NDArray[np.float32]  # |flow| truth -> oracle over their mask intersection
    mask_iou: float
    background_px: int
    mask_px: int
    repro: float
    depth_scale: float  # labelled_scale of the source frame
    mesh_dz_mm: float  # mean depth of nvsynth's mesh minus the labelled truth's (shared template vertices)
    mesh_rms_mm: float  # RMS 3D distance between them, source camera
    images: dict[str, NDArray] = field(default_factory=dict)  # for the contact sheet


def score_h5(
    h5_path: Path,
    root: Path,
    truth: TruthSubject,
    pattern: str,
    keep_images: int = 2,
    renderer: FaceRenderer | None = None,
    chart: TemplateChart | None = None,
) -> list[RowScore]:
    """Score every row of one subject's output file; the first ``keep_images`` frames keep their images.

    ``root`` is the benchmark folder (:mod:`.scene`'s layout; nvsynth's recon records in ``root/obj``).
    """
    subject = open_subject(Path(root) / "raw", truth.subject)
    frames = {f.index: f for f in subject.frames()}
    fr = renderer or FaceRenderer()
    if chart is None:  # the atlas layout the render stage textures with (render/uvlayout.py)
        from nvsynth.core.config import Config
        from nvsynth.recon.template import template_from_config

        chart = TemplateChart.of(template_from_config(Config()))

    def textured(
        record: ReconRecord, image: NDArray[np.uint8], judge: NDArray[np.uint8] | None = None
    ) -> tuple[NDArray[np.uint8], RenderMesh]:
        t = build_render_mesh(record, image, chart, judge)  # the source's atlas, as the render stage builds it
        return t.texture, t.mesh

    with h5py.File(h5_path, "r") as f:
        cols = {k: f[k][...] for k in ("face_patch", "face_mask", "rotation_matrix", "face_mat_norm", "frame_index")}
        views = f["view_index"][...] if "view_index" in f else np.zeros(len(cols["frame_index"]), np.int32)
    scores: list[RowScore] = []
    for n_frame, fi in enumerate(np.unique(cols["frame_index"])):
        rows = np.flatnonzero(cols["frame_index"] == fi)
        frame = frames[int(fi)]
        fc = frame.head_pose.face_center()
        T = np.stack([row_transform(cols["face_mat_norm"][r], cols["rotation_matrix"][r], fc) for r in rows])
        source = frame.load_image()
        rec_true = truth_record(truth, frame, subject)
        t_patch, t_mask = to_patches(fr.render(truth.head.texture, truth_mesh(truth, rec_true), T))
        o_patch, o_mask = to_patches(fr.render(*textured(rec_true, source), T))
        record_name = str(Path(frame.relative_path).with_suffix(""))  # dayNN/NNNN, as nvsynth recon names it
        rec_nv = ReconRecord.load(record_path(Path(root) / "obj", truth.subject, record_name))
        repro_patch, _ = to_patches(fr.render(*textured(rec_nv, source), T))
        cover = cv2.cvtColor(coverage(root, truth.subject, int(fi)), cv2.COLOR_GRAY2BGR)
        # the coverage image goes through the same atlas completion: a texel mirrored from background counts;
        # the source frame's colours decide, as in the render stage, which own texels show the background
        cover_patch, _ = to_patches(fr.render(*textured(rec_nv, cover, judge=source), T))
        dz, rms = mesh_error(rec_nv, rec_true)
        for k, r in enumerate(rows):
            nv_patch = cols["face_patch"][r]
            nv_mask = cols["face_mask"][r] > 127
            both = nv_mask & t_mask[k]
            union = nv_mask | t_mask[k]
            mag = flow_magnitude(t_patch[k], nv_patch)
            omag = flow_magnitude(t_patch[k], o_patch[k])
            grey = cv2.cvtColor(nv_patch, cv2.COLOR_BGR2GRAY).astype(np.float32)
            rgrey = cv2.cvtColor(repro_patch[k], cv2.COLOR_BGR2GRAY).astype(np.float32)
            bg = nv_mask & (cover_patch[k, ..., 0] < 128)
            s = RowScore(
                subject=truth.subject,
                pattern=pattern,
                frame=int(fi),
                view=int(views[r]),
                flow=mag[both],
                oracle_flow=omag[o_mask[k] & t_mask[k]],
                mask_iou=float(both.sum() / max(union.sum(), 1)),
                background_px=int(bg.sum()),
                mask_px=int(nv_mask.sum()),
                repro=float(np.abs(grey - rgrey)[nv_mask].mean()) if nv_mask.any() else float("nan"),
                depth_scale=labelled_scale(truth, frame),
                mesh_dz_mm=dz,
                mesh_rms_mm=rms,
            )
            if n_frame < keep_images:
                s.images = {"truth": t_patch[k], "nvsynth": nv_patch, "flow": mag, "mask": both, "bg": bg}
            scores.append(s)
    if renderer is None:
        fr.release()
    return scores


@dataclass(frozen=True)
class Summary:
    rows: int
    median: float
    p90: float
    oracle_median: float
    oracle_p90: float
    background_share: float
    mask_iou: float
    repro: float
    depth_scale: float  # mean labelled_scale: annotation depth / true depth
    mesh_dz_mm: float  # mean over rows
    mesh_rms_mm: float


def summarize(scores: list[RowScore]) -> Summary:
    """Pooled over the rows' mask pixels: median and 90th percentile of the displacement, background share."""
    if not scores:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    flow = np.concatenate([s.flow for s in scores])
    oracle = np.concatenate([s.oracle_flow for s in scores])
    return Summary(
        rows=len(scores),
        median=float(np.median(flow)) if flow.size else float("nan"),
        p90=float(np.percentile(flow, 90)) if flow.size else float("nan"),
        oracle_median=float(np.median(oracle)) if oracle.size else float("nan"),
        oracle_p90=float(np.percentile(oracle, 90)) if oracle.size else float("nan"),
        background_share=sum(s.background_px for s in scores) / max(1, sum(s.mask_px for s in scores)),
        mask_iou=float(np.mean([s.mask_iou for s in scores])),
        repro=float(np.nanmean([s.repro for s in scores])),
        depth_scale=float(np.mean([s.depth_scale for s in scores])),
        mesh_dz_mm=float(np.nanmean([s.mesh_dz_mm for s in scores])),
        mesh_rms_mm=float(np.nanmean([s.mesh_rms_mm for s in scores])),
    )
