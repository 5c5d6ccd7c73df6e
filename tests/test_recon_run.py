"""`nvsynth recon` on a copy of the bundled sample subject, including broken input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from nvsynth.app.cli import main
from nvsynth.recon.record import ReconRecord

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "supplementary" / "sample"


def make_dataset(tmp_path: Path) -> Path:
    """A copy of the sample subject and a config pointing at it; returns the config path."""
    shutil.copytree(SAMPLE / "p00", tmp_path / "raw" / "p00")
    cfg = tmp_path / "config_path.yaml"
    cfg.write_text("data:\n  input: raw\n  records: obj\n")
    return cfg


def manifest(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "obj" / "p00" / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_recon_end_to_end_with_bad_frames(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = make_dataset(tmp_path)
    day = tmp_path / "raw" / "p00" / "day01"
    (day / "0003.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")  # corrupt
    cv2.imwrite(str(day / "0005.jpg"), np.full((720, 1280, 3), 128, np.uint8))  # no face
    obj = tmp_path / "obj" / "p00" / "day01"

    assert main(["recon", "--config", str(cfg), "--export-obj"]) == 0
    out = capsys.readouterr()
    assert "4 frames ok" in out.out and "2 skipped" in out.out
    assert "reprojection error: mean" in out.out and "95th percentile" in out.out
    assert "ms per frame" in out.out
    assert "recon p00" in out.err  # the progress bar

    rows = manifest(tmp_path)
    assert [r["image"] for r in rows] == [f"day01/{i:04d}.jpg" for i in range(1, 7)]
    status = {r["image"]: r for r in rows}
    assert status["day01/0003.jpg"]["status"] == "skipped"
    assert "corrupt" in status["day01/0003.jpg"]["reason"]
    assert status["day01/0005.jpg"]["status"] == "skipped"
    assert "no face" in status["day01/0005.jpg"]["reason"]
    assert not (obj / "0003.npz").exists() and not (obj / "0005.npz").exists()

    ann = (tmp_path / "raw" / "p00" / "p00.txt").read_text().split("\n")
    for i in (1, 2, 4, 6):
        row = status[f"day01/{i:04d}.jpg"]
        assert row["status"] == "ok" and float(row["reprojection_error_px"]) < 4.0
        rec = ReconRecord.load(obj / f"{i:04d}.npz")
        assert rec.source_file == f"p00/day01/{i:04d}.jpg"
        assert rec.subject == "p00" and rec.frame_index == i - 1
        assert rec.vertices.shape == (468, 3) and rec.vertices.dtype == np.float32
        assert rec.faces.shape == (898, 3) and rec.faces.dtype == np.int32
        assert rec.uv.shape == (468, 2) and rec.visible.dtype == np.bool_
        assert rec.landmarks_2d.shape == (68, 2) and rec.landmarks_3d.shape == (68, 3)
        assert rec.head_rotation.shape == (3, 3) and rec.head_translation.shape == (3,)
        assert rec.detector == "dlib/annotation"
        assert tuple(rec.image_size) == (1280, 720)
        cols = ann[i - 1].split()
        np.testing.assert_allclose(rec.annotation_rvec, np.array(cols[15:18], float))
        np.testing.assert_allclose(rec.gaze_target, np.array(cols[24:27], float))
        assert 0.6 < rec.visible.mean() < 1.0
        assert np.all(rec.vertices[:, 2] > 300)  # camera mm, in front of the camera
        # uv: the distorted projection, inside the image, on the face
        img = cv2.imread(str(day / f"{i:04d}.jpg"))
        assert np.all((rec.uv >= 0) & (rec.uv < [1280, 720]))
        # the exported texture holds the same pixels the uv address in the frame
        tex = cv2.imread(str(obj / f"{i:04d}.png"))
        vt = np.array(
            [ln.split()[1:] for ln in (obj / f"{i:04d}.obj").read_text().splitlines() if ln.startswith("vt ")], float
        )
        th, tw = tex.shape[:2]
        tx = np.round(vt[:, 0] * tw - 0.5).astype(int)
        ty = np.round((1.0 - vt[:, 1]) * th - 0.5).astype(int)
        sx, sy = np.round(rec.uv[:, 0]).astype(int), np.round(rec.uv[:, 1]).astype(int)
        assert np.mean(np.all(tex[ty, tx] == img[sy, sx], axis=1)) > 0.95
        assert "map_Kd" in (obj / f"{i:04d}.mtl").read_text()

    # re-run: every record exists and loads, nothing is recomputed
    mtime = (obj / "0001.npz").stat().st_mtime_ns
    assert main(["recon", "--config", str(cfg)]) == 0
    assert "4 frames ok (0 computed, 4 existing), 2 skipped" in capsys.readouterr().out
    assert (obj / "0001.npz").stat().st_mtime_ns == mtime
    assert len(manifest(tmp_path)) == 6

    # a truncated record is recomputed; --force recomputes the rest, with two workers, identically
    before = ReconRecord.load(obj / "0002.npz")
    (obj / "0001.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(["recon", "--config", str(cfg), "--limit", "1"]) == 0
    assert "1 frames ok (1 computed, 0 existing)" in capsys.readouterr().out
    assert main(["recon", "--config", str(cfg), "--force", "--workers", "2"]) == 0
    assert "4 frames ok (4 computed, 0 existing), 2 skipped" in capsys.readouterr().out
    after = ReconRecord.load(obj / "0002.npz")
    np.testing.assert_array_equal(before.vertices, after.vertices)
    np.testing.assert_array_equal(before.visible, after.visible)


def test_missing_camera_mat_names_the_subject(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = make_dataset(tmp_path)
    (tmp_path / "raw" / "p00" / "Calibration" / "Camera.mat").unlink()
    assert main(["recon", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "p00" in err and "Camera.mat" in err


def test_missing_template_offline_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    cfg = make_dataset(tmp_path)
    monkeypatch.delenv("NVSYNTH_FACE_TEMPLATE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NVSYNTH_OFFLINE", "1")
    assert main(["recon", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "canonical_face_model.obj" in err and str(tmp_path / "cache" / "nvsynth") in err


def test_unset_output_folder_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(SAMPLE / "p00", tmp_path / "raw" / "p00")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  input: raw\n")
    assert main(["recon", "--config", str(cfg)]) == 2
    assert "data.records" in capsys.readouterr().err
