"""Redirected eyes in the real renderer: the source's own gaze reproduces its eyes, signs, lids, the eye opening.

Records: ``nvsynth recon`` (mediapipe) on the bundled sample; the eyeball model
is the one recon fitted. Iris positions in renders come from the real MediaPipe
Iris model (:mod:`render.gaze_audit`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

from nvsynth.core import geometry
from nvsynth.core.config import from_dict
from nvsynth.recon.eyeball import EyeballModel, eyeball_path
from nvsynth.recon.eyes import EYELID_POLYGON
from nvsynth.recon.mediapipe import MediaPipeLandmarker
from nvsynth.recon.record import ReconRecord
from nvsynth.render.eye_gl import EyeScene
from nvsynth.render.eyes import EyeRig, build_eye_rig, eye_pose, lid_positions
from nvsynth.render.gaze import GazeDraw, eye_orientations, primary_gaze, redirect_view
from nvsynth.render.gaze_audit import iris_centres
from nvsynth.render.mesh import build_render_mesh
from nvsynth.render.uvlayout import TemplateChart
from nvsynth.render.views import View, apply_rigid, make_view, normalize_record
from tests.eye_scenes import closed_contour

REPO = Path(__file__).resolve().parents[1]
K448 = geometry.normalized_camera_matrix(448)


@pytest.fixture(scope="module")
def chart(template) -> TemplateChart:
    """The atlas layout the render stage textures with (render/uvlayout.py), for build_eye_rig."""
    return TemplateChart.of(template)


@pytest.fixture(scope="module")
def model(sample_recon: tuple[Path, str]) -> EyeballModel:
    return EyeballModel.load(eyeball_path(sample_recon[0] / "p00"))


@pytest.fixture(scope="module")
def landmarker(shared: Path) -> MediaPipeLandmarker:
    a = shared / "assets"
    cfg = from_dict(
        {"assets": {"face_landmark_model": str(a / "face_landmark.tflite"),
                    "iris_landmark_model": str(a / "iris_landmark.tflite")}}
    )  # fmt: skip
    return MediaPipeLandmarker.from_config(cfg)


def _image(rec: ReconRecord) -> np.ndarray:
    return cv2.imread(str(REPO / "supplementary" / "sample" / rec.source_file), cv2.IMREAD_COLOR)


def _turned(rig: EyeRig, view: View, source, pitchyaw_deg: tuple[float, float]):
    """The view redirected to the primary position plus ``pitchyaw_deg``, and its eye pose."""
    draw = GazeDraw(primary_gaze(rig, source) + np.radians(pitchyaw_deg), 600.0, 1)
    new, lab = redirect_view(view, draw)
    return new, eye_pose(rig, eye_orientations(rig, new, lab.target))


def _eye_box(rig: EyeRig, T: np.ndarray, pad: int = 6) -> tuple[slice, slice]:
    px = geometry.project(apply_rigid(T, rig.contour.reshape(-1, 3)), K448)
    lo, hi = np.floor(px.min(axis=0)).astype(int) - pad, np.ceil(px.max(axis=0)).astype(int) + pad
    return slice(lo[1], hi[1]), slice(lo[0], hi[0])


def test_the_sources_own_gaze_reproduces_its_eyes(sample_records: list[ReconRecord], model: EyeballModel,
                                                  renderer, chart: TemplateChart) -> None:  # fmt: skip
    """Eyes at their source orientation, in the source view: the eye region within 1 px median flow."""
    flows, diffs = [], []
    for rec in sample_records:
        image = _image(rec)
        rig = build_eye_rig(rec, image, model, chart)
        assert rig is not None
        src = normalize_record(rec)
        view = make_view(src, src.pose, rec.landmarks_3d)
        T = view.transform[None]
        plain_mesh = build_render_mesh(rec, image, chart)
        plain = renderer.render(plain_mesh.texture, plain_mesh.mesh, T).color[0]
        own = renderer.render(rig.texture, rig.face, T, eyes=EyeScene(rig, (eye_pose(rig, rig.eyes.orientation),)))
        box = _eye_box(rig, view.transform)
        a = cv2.cvtColor(np.ascontiguousarray(plain[box]), cv2.COLOR_BGR2GRAY)
        b = cv2.cvtColor(np.ascontiguousarray(own.color[0][box]), cv2.COLOR_BGR2GRAY)
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(a, b, None)
        flows.append(np.linalg.norm(flow, axis=2).ravel())
        diffs.append(np.abs(a.astype(float) - b).ravel())
    flow = np.concatenate(flows)
    assert np.median(flow) < 1.0
    assert np.percentile(flow, 90) < 2.0
    assert np.median(np.concatenate(diffs)) < 4.0  # grey levels


def test_gaze_up_and_left_move_the_rendered_iris_up_and_left(
    sample_records: list[ReconRecord], model: EyeballModel, renderer, landmarker, chart: TemplateChart
) -> None:
    rec = sample_records[0]
    image = _image(rec)
    rig = build_eye_rig(rec, image, model, chart)
    src = normalize_record(rec)
    view = make_view(src, src.pose, rec.landmarks_3d)
    gazes = {"ahead": (0, 0), "up": (15, 0), "down": (-15, 0), "left": (0, 15), "right": (0, -15)}
    views, poses = zip(*(_turned(rig, view, src, g) for g in gazes.values()), strict=True)
    batch = renderer.render(rig.texture, rig.face, np.stack([v.transform for v in views]), eyes=EyeScene(rig, poses))
    corners = geometry.project(apply_rigid(view.transform, rig.corners.reshape(-1, 3)), K448).reshape(2, 2, 2)
    iris = {k: iris_centres(landmarker, np.ascontiguousarray(batch.color[i]), corners) for i, k in enumerate(gazes)}
    # labels: up is positive pitch, image-left positive yaw (ETH-XGaze convention)
    lab = {k: v.face_gaze for k, v in zip(gazes, views, strict=True)}
    assert lab["up"][0] > lab["ahead"][0] > lab["down"][0] and lab["left"][1] > lab["ahead"][1] > lab["right"][1]
    for eye in (0, 1):
        assert iris["up"][eye, 1] < iris["ahead"][eye, 1] - 3 < iris["down"][eye, 1] - 6  # image y grows down
        assert iris["left"][eye, 0] < iris["ahead"][eye, 0] - 3 < iris["right"][eye, 0] - 6


def test_eyeballs_show_only_through_the_eye_openings(sample_records: list[ReconRecord], model: EyeballModel,
                                                     renderer, chart: TemplateChart) -> None:  # fmt: skip
    """Green eyeballs under a black face, head turned, eyes turned: green only inside the (moved) lid margins."""
    rec = sample_records[2]
    image = _image(rec)
    rig = build_eye_rig(rec, image, model, chart)
    green = np.zeros_like(rig.textures.image)
    green[..., 1] = 255
    rig = dataclasses.replace(rig, textures=dataclasses.replace(rig.textures, image=green,
                                                                 highlight=np.zeros_like(green)))  # fmt: skip
    src = normalize_record(rec)
    for head, gaze in [((0, 0), (25, 0)), ((10, 25), (-25, 10)), ((-10, -30), (0, -30))]:
        view = make_view(src, src.pose + np.radians(head), rec.landmarks_3d)
        new, pose = _turned(rig, view, src, gaze)
        out = renderer.render(np.zeros_like(rig.texture), rig.face, new.transform[None], eyes=EyeScene(rig, (pose,)))
        is_green = (out.color[0][..., 1] > 60) & (out.color[0][..., 2] < 30)
        lids = lid_positions(pose, rig.contour.reshape(-1, 3), rig.contour_lids.reshape(-1, 3)).reshape(2, 16, 3)
        inside = np.zeros(is_green.shape, dtype=bool)
        ys, xs = np.mgrid[0 : is_green.shape[0], 0 : is_green.shape[1]]
        pix = np.c_[xs.ravel(), ys.ravel()]
        for e in range(2):
            poly = geometry.project(apply_rigid(new.transform, lids[e][EYELID_POLYGON]), K448)
            path = PolygonPath(poly)  # a 1.5 px band around the margin counts as inside, whatever the winding
            for r in (1.5, -1.5):
                inside |= path.contains_points(pix, radius=r).reshape(inside.shape)
        assert is_green.sum() > 300
        assert np.sum(is_green & ~inside) <= 0.005 * is_green.sum()  # no sclera through the skin


def test_lids_follow_vertical_gaze(
    sample_records: list[ReconRecord], model: EyeballModel, chart: TemplateChart
) -> None:
    from nvsynth.render.eyes import LOWER_LID_RATIO, LOWER_LID_RATIO_DOWN, UPPER_LID_RATIO, UPPER_LID_RATIO_DOWN

    rec = sample_records[0]
    rig = build_eye_rig(rec, _image(rec), model, chart)
    src = normalize_record(rec)
    view = make_view(src, src.pose, rec.landmarks_3d)
    _v0, ahead = _turned(rig, view, src, (0, 0))
    # upgaze and downgaze have their own ratios (render/eyes.py: the lids' kinematics)
    for pitch, upper_ratio, lower_ratio in ((20, UPPER_LID_RATIO, LOWER_LID_RATIO),
                                            (-20, UPPER_LID_RATIO_DOWN, LOWER_LID_RATIO_DOWN)):  # fmt: skip
        _v1, turned = _turned(rig, view, src, (pitch, 0))
        for e in range(2):
            mid_upper, mid_lower = 12, 4  # the middle of the upper and of the lower lid margin
            y = {}
            for name, pose in (("ahead", ahead), ("turned", turned)):
                p = lid_positions(pose, rig.contour[e], rig.contour_lids[e])
                y[name] = (p - rig.eyes.centres[e]) @ rig.eyes.head_rotation  # head frame, y down

            ang = {k: np.arctan2(-v[:, 1], -v[:, 2]) for k, v in y.items()}  # pitch of each margin point
            upper_turn, lower_turn = (float(ang["turned"][i] - ang["ahead"][i]) for i in (mid_upper, mid_lower))
            eye_turn = np.radians(pitch)
            w_up, w_low = rig.contour_lids[e, mid_upper, 1], rig.contour_lids[e, mid_lower, 2]
            assert w_up > 0.9 and w_low > 0.9
            # the lid margins turn with the eye by their ratios (weight ~1 mid-lid), the lower lid less
            assert upper_turn == pytest.approx(upper_ratio * w_up * eye_turn, abs=np.radians(2.5))
            assert lower_turn == pytest.approx(lower_ratio * w_low * eye_turn, abs=np.radians(2.5))
            assert 0 < lower_turn / eye_turn < upper_turn / eye_turn
            # the corners stay
            np.testing.assert_allclose(y["turned"][[0, 8]], y["ahead"][[0, 8]], atol=1e-9)


def test_closed_eyes_are_not_redirected(
    sample_records: list[ReconRecord], model: EyeballModel, chart: TemplateChart
) -> None:
    rec = sample_records[1]
    shut = dataclasses.replace(rec, eye_contour_2d=closed_contour(rec.eye_contour_2d, eye=0))
    assert build_eye_rig(shut, _image(rec), model, chart) is None
    assert build_eye_rig(dataclasses.replace(rec, iris_2d=None), _image(rec), model, chart) is None
