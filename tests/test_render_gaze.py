"""`render.gaze`: redirected eyes end to end on the sample -- labels, datasets, vergence, files, reproducibility."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from nvsynth.app.cli import exit_code, main
from nvsynth.core import geometry
from nvsynth.core.config import Config, from_dict
from nvsynth.core.errors import ConfigError
from nvsynth.core.h5io import validate_schema
from nvsynth.core.schema import ALL_FIELDS, FIELDS, GAZE_FIELDS
from nvsynth.recon.eyeball import EyeballModel, eyeball_path
from nvsynth.recon.record import ReconRecord
from nvsynth.render.backgrounds import BackgroundSource
from nvsynth.render.gaze import load_gaze_spec
from nvsynth.render.patterns import load_pattern
from nvsynth.render.stage import PreparedSource, RenderSpec, Source, SourceRenderer
from nvsynth.runtime.render_run import run
from tests.eye_scenes import closed_contour

SAMPLE = Path(__file__).resolve().parents[1] / "supplementary" / "sample"


def _cfg(obj: Path, **render: object) -> Config:
    r: dict[str, object] = {"views": 4, "seed": 3, "pattern": "gaussian", "gaze": "gaussian"}
    r.update(render)
    return from_dict({"data": {"input": str(SAMPLE), "records": str(obj)}, "render": r})


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in f}


def _gaze_in_head(d: dict[str, np.ndarray]) -> np.ndarray:
    H = np.stack([geometry.head_rotation_from_pitchyaw(*hp) for hp in d["face_head_pose"].astype(np.float64)])
    g = geometry.vector_from_pitchyaw(d["face_gaze"].astype(np.float64))
    return np.einsum("nji,nj->ni", H, g)


@pytest.fixture(scope="module")
def gaussian_run(sample_recon: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gaze") / "w1"
    assert run(_cfg(sample_recon[0], workers=1), out) == 0
    return out / "p00.h5"


def test_gaussian_gaze_in_head_is_the_drawn_eye_rotation(gaussian_run: Path) -> None:
    d = _read(gaussian_run)
    assert {f.name for f in GAZE_FIELDS} <= set(d)
    assert np.all(d["gaze_redirected"] == 1)  # the sample's eyes are open
    gh = _gaze_in_head(d)
    drawn = geometry.vector_from_pitchyaw(d["eye_rotation"].astype(np.float64))
    assert geometry.angular_error_deg(gh, drawn).max() < 0.01
    # not the source's gaze in head: it varies from view to view of one source
    for fr in np.unique(d["frame_index"]):
        rows = gh[d["frame_index"] == fr]
        assert geometry.angular_error_deg(rows, rows[:1]).max() > 1.0
    # the target lies on the gaze from the face centre, at a drawn distance
    rel = d["gaze_target_3d"].astype(np.float64) - np.array([0.0, 0.0, 300.0])
    g = geometry.vector_from_pitchyaw(d["face_gaze"].astype(np.float64))
    assert geometry.angular_error_deg(rel, g).max() < 0.01
    dist = np.linalg.norm(rel, axis=1)
    assert np.all((dist > 299.0) & (dist < 1001.0))
    # head poses and appearance are those of follow-head (their own generators)
    np.testing.assert_allclose(d["face_head_pose"], d["target_pose"], atol=1e-6)
    with h5py.File(gaussian_run, "r") as f:
        assert validate_schema(f, FIELDS, optional=ALL_FIELDS) == []


def test_any_worker_count_gives_identical_bytes(
    gaussian_run: Path, sample_recon: tuple[Path, str], tmp_path: Path
) -> None:
    assert run(_cfg(sample_recon[0], workers=2), tmp_path / "w2") == 0
    assert (tmp_path / "w2" / "p00.h5").read_bytes() == gaussian_run.read_bytes()


def test_follow_head_writes_no_gaze_datasets(sample_recon: tuple[Path, str], tmp_path: Path) -> None:
    assert run(_cfg(sample_recon[0], gaze="follow-head", views=2), tmp_path / "f") == 0
    d = _read(tmp_path / "f" / "p00.h5")
    assert sorted(d) == sorted(f.name for f in FIELDS)


def _renderer(cfg: Config) -> SourceRenderer:
    spec = RenderSpec(cfg, int(cfg.render.seed), load_pattern(cfg), SAMPLE, gaze=load_gaze_spec(cfg))
    return SourceRenderer(spec, BackgroundSource(None))


def test_both_eyes_verge_on_the_target(sample_recon: tuple[Path, str]) -> None:
    obj = sample_recon[0]
    model = EyeballModel.load(eyeball_path(obj / "p00"))
    r = _renderer(_cfg(obj))
    path = sorted((obj / "p00").rglob("*.npz"))[1]
    prep = r.prepare("p00", Source(path, 1), eyeball=model)
    assert isinstance(prep, PreparedSource) and prep.eyes is not None and prep.gaze is not None
    rig = prep.eyes.rig
    for vw, pose, lab in zip(prep.views, prep.eyes.poses, prep.gaze, strict=True):
        target = np.linalg.solve(vw.transform[:3, :3], lab.target - vw.transform[:3, 3])  # source camera
        for e in range(2):
            c = pose.centres[e]
            axis = pose.model[e][:3, :3] @ rig.model.visual_axis(e) / rig.model.radius_mm
            off = (target - c) - ((target - c) @ axis) * axis  # distance of the target from the visual axis
            assert np.linalg.norm(off) < 1e-6 and (target - c) @ axis > 0
    r.close()


def test_gaze_file_draws_its_directions(sample_recon: tuple[Path, str], tmp_path: Path) -> None:
    rows = np.radians([[-20.0, 5.0], [-30.0, -10.0], [-25.0, 12.0]])  # normalized-camera (pitch, yaw)
    np.save(tmp_path / "gaze.npy", rows)
    cfg = _cfg(sample_recon[0], gaze="file", gaze_file=str(tmp_path / "gaze.npy"), gaze_max_deg=60.0, views=3)
    assert run(cfg, tmp_path / "out") == 0
    d = _read(tmp_path / "out" / "p00.h5")
    g = geometry.vector_from_pitchyaw(d["face_gaze"].astype(np.float64))
    err = geometry.angular_error_deg(g[:, None], geometry.vector_from_pitchyaw(rows)[None]).min(axis=1)
    assert err.max() < 0.01


def test_closed_eyes_keep_their_own_eyes_and_say_so(sample_recon: tuple[Path, str], tmp_path: Path) -> None:
    obj = tmp_path / "obj"
    shutil.copytree(sample_recon[0], obj)
    path = sorted((obj / "p00").rglob("*.npz"))[2]
    rec = ReconRecord.load(path)
    dataclasses.replace(rec, eye_contour_2d=closed_contour(rec.eye_contour_2d, eye=1)).save(path)
    assert run(_cfg(obj, views=2), tmp_path / "out") == 0
    d = _read(tmp_path / "out" / "p00.h5")
    shut = d["frame_index"] == rec.frame_index
    assert np.all(d["gaze_redirected"][shut] == 0) and np.all(d["gaze_redirected"][~shut] == 1)
    # its labels follow the head: the source's gaze in head, the source's target through the view
    src_gh = _gaze_in_head(d)[shut]
    assert geometry.angular_error_deg(src_gh, src_gh[:1]).max() < 0.01
    eye_rot = geometry.vector_from_pitchyaw(d["eye_rotation"][shut].astype(np.float64))
    assert geometry.angular_error_deg(eye_rot, src_gh).max() < 0.01


def test_redirection_needs_the_eyeball_model(sample_recon: tuple[Path, str], tmp_path: Path) -> None:
    obj = tmp_path / "obj"
    shutil.copytree(sample_recon[0], obj)
    eyeball_path(obj / "p00").unlink()
    with pytest.raises(ConfigError, match="eyeball model"):
        run(_cfg(obj), tmp_path / "out")
    with pytest.raises(ConfigError, match="gaze_distance_mm"):
        from_dict({"render": {"gaze_distance_mm": [500, 300]}})
    assert exit_code(ConfigError("x")) == 2


def test_targets_from_h5_gaze(gaussian_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "gaze.npy"
    assert main(["targets", "--from-h5", str(gaussian_run), "-o", str(out), "--gaze"]) == 0
    np.testing.assert_array_equal(np.load(out), _read(gaussian_run)["face_gaze"].astype(np.float64))
