"""`nvsynth render` end to end (runtime/render_run.py, render/stage.py) on recon records of known poses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from render_records import write_dataset

from nvsynth.app.cli import main
from nvsynth.core import geometry
from nvsynth.core.config import Config, from_dict
from nvsynth.core.errors import ConfigError, OutputError, RenderError
from nvsynth.core.h5io import partial_path, validate_schema
from nvsynth.core.schema import FIELDS
from nvsynth.recon.record import ReconRecord
from nvsynth.runtime.render_run import run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, template_path: Path, shared: Path) -> tuple[Path, Path]:
    """Three sources of subject p00 (raw images and recon records)."""
    root = tmp_path_factory.mktemp("small")
    raw, obj, _ = write_dataset(root, template_path, shared, "p00", 3, seed=1)
    return raw, obj


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, template_path: Path, shared: Path) -> tuple[Path, Path]:
    """Forty sources of subject p01, for interrupting mid-subject."""
    root = tmp_path_factory.mktemp("large")
    raw, obj, _ = write_dataset(root, template_path, shared, "p01", 40, seed=2)
    return raw, obj


def _cfg(raw: Path, obj: Path, **render: object) -> Config:
    r = {"views": 4, "seed": 5, "pattern": "gaussian"}
    r.update(render)
    return from_dict({"data": {"input": str(raw), "records": str(obj)}, "render": r})


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    with h5py.File(path, "r") as f:
        data = {k: f[k][...] for k in f}
        attrs = {k: f.attrs[k] for k in f.attrs}
        attrs.update({f"{k}/{a}": f[k].attrs[a] for k in f for a in f[k].attrs})
    return data, attrs


def _assert_same(a: Path, b: Path) -> None:
    da, aa = _read(a)
    db, ab = _read(b)
    assert sorted(da) == sorted(db) == sorted(f.name for f in FIELDS)
    for k in da:
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)
    assert sorted(aa) == sorted(ab)
    for k in aa:
        assert np.array_equal(np.asarray(aa[k]), np.asarray(ab[k])), k


def test_one_and_two_workers_give_identical_datasets(small: tuple[Path, Path], tmp_path: Path) -> None:
    raw, obj = small
    assert run(_cfg(raw, obj, workers=1), tmp_path / "w1") == 0
    assert run(_cfg(raw, obj, workers=2), tmp_path / "w2") == 0
    a, b = tmp_path / "w1" / "p00.h5", tmp_path / "w2" / "p00.h5"
    _assert_same(a, b)
    with h5py.File(a, "r") as f:
        assert validate_schema(f, FIELDS) == []
        assert f["face_patch"].shape == (12, 224, 224, 3)
        # frame order, then view order
        assert f["frame_index"][...].tolist() == [0] * 4 + [1] * 4 + [2] * 4
        assert f["view_index"][...].tolist() == [0, 1, 2, 3] * 3
        assert f.attrs["seed"] == 5 and f.attrs["pattern"] == "gaussian" and f.attrs["views_per_source"] == 4
        assert f.attrs["subject"] == "p00" and f.attrs["nvsynth_version"]
        assert list(f["variant"].attrs["names"]) == [
            "black",
            "black-dark",
            "color",
            "color-dark",
            "image",
            "image-dark",
        ]
        # the face is drawn: the mask covers a face-sized region near the centre
        mask = f["face_mask"][...]
        area = (mask > 0).mean(axis=(1, 2))
        assert np.all(area > 0.15) and np.all(area < 0.9)
    assert a.read_bytes() == b.read_bytes()


def _gaze_in_head(f: h5py.File) -> np.ndarray:
    H = np.stack([geometry.head_rotation_from_pitchyaw(*hp) for hp in f["face_head_pose"][...]])
    g = geometry.vector_from_pitchyaw(f["face_gaze"][...].astype(np.float64))
    return np.einsum("nji,nj->ni", H, g)


def test_labels_in_the_file(small: tuple[Path, Path], tmp_path: Path) -> None:
    raw, obj = small
    run(_cfg(raw, obj, views=6, pattern="gaussian", gaussian_sigma_deg=30.0), tmp_path / "g")
    run(_cfg(raw, obj, views=1, pattern="source"), tmp_path / "s")
    records = sorted((ReconRecord.load(p) for p in obj.rglob("*.npz")), key=lambda r: r.frame_index)
    with h5py.File(tmp_path / "g" / "p00.h5", "r") as f:
        gh = _gaze_in_head(f)
        frames = f["frame_index"][...]
        worst = 0.0
        for fr in np.unique(frames):
            rows = gh[frames == fr]
            worst = max(worst, float(geometry.angular_error_deg(rows, rows[:1]).max()))
        assert worst < 0.01
        np.testing.assert_allclose(f["face_head_pose"][...], f["target_pose"][...], atol=1e-6)
        assert np.all(f["pose_attempts"][...] >= 1)
    with h5py.File(tmp_path / "s" / "p00.h5", "r") as f:
        for row, rec in enumerate(records):
            pose = geometry.HeadPose.from_rvec(rec.annotation_rvec, rec.annotation_tvec)
            norm = geometry.normalize(pose, rec.camera_matrix)
            err_gaze = geometry.angular_error_deg(
                geometry.vector_from_pitchyaw(f["face_gaze"][row]),
                geometry.vector_from_pitchyaw(norm.gaze_pitchyaw(rec.gaze_target)),
            )
            assert err_gaze < 0.01
            np.testing.assert_allclose(f["face_head_pose"][row], norm.head_pitchyaw(), atol=np.radians(0.01))
            np.testing.assert_allclose(f["face_mat_norm"][row], norm.rotation, atol=1e-6)
            np.testing.assert_allclose(f["rotation_matrix"][row], np.eye(3), atol=1e-6)
            assert f["source_file"][row].decode() == rec.source_file


def test_eyediap_cs_pattern_draws_from_the_file(small: tuple[Path, Path], tmp_path: Path, shared: Path) -> None:
    raw, obj = small
    rows = np.loadtxt(shared / "targets" / "EYEDIAP_CS_head_distribution.txt").astype(np.float32)
    cfg = _cfg(raw, obj, views=8, pattern="eyediap-cs")
    run(cfg, tmp_path / "e")
    with h5py.File(tmp_path / "e" / "p00.h5", "r") as f:
        targets = f["target_pose"][...]
        assert len(targets) == 24
        assert np.all(targets >= rows.min(axis=0)) and np.all(targets <= rows.max(axis=0))
        for t in targets:
            assert np.any(np.all(rows == t, axis=1))
        np.testing.assert_allclose(f["face_head_pose"][...], targets, atol=1e-6)
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["pattern"]["rows"] == len(rows)
    assert manifest["pattern"]["file"].endswith("EYEDIAP_CS_head_distribution.txt")


def test_skipped_views_are_recorded(small: tuple[Path, Path], tmp_path: Path) -> None:
    raw, obj = small
    cfg = _cfg(raw, obj, views=6, gaussian_sigma_deg=60.0, max_pose_deg=25.0, max_attempts=2)
    assert run(cfg, tmp_path / "k") == 0
    m = json.loads((tmp_path / "k" / "manifest.json").read_text())
    with h5py.File(tmp_path / "k" / "p00.h5", "r") as f:
        n = len(f["view_index"])
        written = set(zip(f["frame_index"][...].tolist(), f["view_index"][...].tolist(), strict=True))
        assert np.all(np.degrees(np.hypot(*f["face_head_pose"][...].T)) <= 25.0 + 1e-4)
    skipped = {(s["frame_index"], s["view_index"]) for s in m["skips"]}
    assert skipped and n + len(skipped) == 18
    assert not (skipped & written)
    assert all("25 deg in 2 attempts" in s["reason"] for s in m["skips"])
    assert m["subjects"]["p00"]["views_skipped"] == len(skipped) and m["subjects"]["p00"]["rows"] == n
    assert m["status"] == "finished" and m["elapsed_s"] > 0
    assert set(m["versions"]) >= {"nvsynth", "numpy", "moderngl", "gl_renderer", "h5py", "cv2"}
    assert m["versions"]["gl_renderer"]
    assert m["config"]["render"]["max_pose_deg"] == 25.0


def test_the_device_is_printed_and_recorded(
    small: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, obj = small
    assert run(_cfg(raw, obj, views=1, workers=2, device="cpu"), tmp_path / "d") == 0
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    dev = m["device"]
    assert dev["requested"] == "cpu" and dev["workers"] == 2
    assert dev["egl_device"].startswith("EGL device ") and "Mesa software (llvmpipe)" in dev["egl_device"]
    assert dev["gl_renderer"].startswith("llvmpipe") and "Mesa" in dev["gl_version"]
    assert m["versions"]["gl_renderer"] == dev["gl_renderer"] and m["versions"]["gl_version"] == dev["gl_version"]
    err = capsys.readouterr().err
    assert f"nvsynth render: 2 worker(s) on {dev['egl_device']} (device: cpu)" in err
    assert f"nvsynth render: {dev['gl_renderer']} ({dev['gl_version']})" in err


def test_where_a_run_ran_does_not_change_the_file_attributes(small: tuple[Path, Path]) -> None:
    from nvsynth.runtime.render_plan import file_attrs

    raw, obj = small
    one = file_attrs(_cfg(raw, obj, workers=1, device="auto"), "p00")
    assert file_attrs(_cfg(raw, obj, workers="auto", device=0), "p00") == one
    cfg = _cfg(raw, obj, workers=3, device="cpu")
    assert file_attrs(cfg.model_copy(update={"recon": cfg.recon.model_copy(update={"workers": 7})}), "p00") == one
    assert "device" not in json.loads(one["config_json"])["render"]


def test_existing_output_and_missing_records(small: tuple[Path, Path], tmp_path: Path) -> None:
    raw, obj = small
    cfg = _cfg(raw, obj, views=1)
    run(cfg, tmp_path / "o")
    before = (tmp_path / "o" / "p00.h5").read_bytes()
    with pytest.raises(OutputError, match=r"exists: pass --resume"):
        run(cfg, tmp_path / "o")
    assert run(cfg, tmp_path / "o", resume=True) == 0  # finished subjects are skipped
    assert (tmp_path / "o" / "p00.h5").read_bytes() == before
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["subjects"]["p00"]["status"] == "finished-before" and m["subjects"]["p00"]["rows"] == 3
    with pytest.raises(OutputError, match="seed=5, this run has seed=6"):
        run(_cfg(raw, obj, views=1, seed=6), tmp_path / "o", resume=True)

    (tmp_path / "obj_empty" / "p07").mkdir(parents=True)
    with pytest.raises(RenderError, match=r"subject p07: no recon records .* run `nvsynth recon` first"):
        run(_cfg(raw, tmp_path / "obj_empty"), tmp_path / "x", subjects="p07")


def test_no_records_is_one_line_from_the_cli(
    small: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, _ = small
    (tmp_path / "obj" / "p03").mkdir(parents=True)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"data": {"input": str(raw), "records": str(tmp_path / "obj")}}))
    rc = main(["render", "-save", str(tmp_path / "out"), "--config", str(cfg_path), "--subjects", "p03"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "p03" in err and "nvsynth recon" in err
    assert not (tmp_path / "out" / "p03.h5").exists()


def test_sigint_mid_subject_then_resume(large: tuple[Path, Path], tmp_path: Path) -> None:
    raw, obj = large
    settings = {"views": 8, "seed": 9, "workers": 1}
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"data": {"input": str(raw), "records": str(obj)}, "render": settings}))
    out = tmp_path / "out"
    final = out / "p01.h5"
    cmd = [sys.executable, "-m", "nvsynth.app.cli", "render", "-save", str(out), "--config", str(cfg_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = final.with_name("p01.h5.parts")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(parts.glob("unit-*.unit"))) >= 1:  # the first rows are committed
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("nvsynth render: interrupted by SIGINT; the committed units are kept")
    assert err.rstrip().endswith("--resume`")
    assert not final.exists() and not partial_path(final).exists()  # nothing half-written is left
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["subjects"]["p01"]["status"] == "interrupted"
    committed = m["subjects"]["p01"]["rows"]  # SIGINT commits what was rendered
    assert 0 < committed < 320

    proc = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert final.exists() and not partial_path(final).exists() and not parts.exists()
    m = json.loads((out / "manifest.json").read_text())
    assert m["subjects"]["p01"]["status"] == "resumed"
    assert m["subjects"]["p01"]["rows_kept"] == committed
    assert m["subjects"]["p01"]["rows_this_run"] == 320 - committed
    with h5py.File(final, "r") as f:
        pairs = list(zip(f["frame_index"][...].tolist(), f["view_index"][...].tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) == 320

    cfg = from_dict({"data": {"input": str(raw), "records": str(obj)}, "render": settings})
    run(cfg, tmp_path / "straight")
    _assert_same(final, tmp_path / "straight" / "p01.h5")


def test_encoded_rows_store_the_same_bytes_as_plain_rows(tmp_path: Path) -> None:
    from nvsynth.core.h5io import H5Writer, encode_rows
    from nvsynth.core.schema import CORE_FIELDS

    rng = np.random.default_rng(0)
    n = 5
    patches = rng.integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
    patches[:, :100] = 0  # some compressible rows, some not
    masks = np.zeros((n, 224, 224), np.uint8)
    masks[:, 50:150, 60:160] = 255
    batch = {
        "face_patch": patches,
        "face_mask": masks,
        "face_gaze": rng.normal(size=(n, 2)),
        "face_head_pose": rng.normal(size=(n, 2)),
        "rotation_matrix": np.tile(np.eye(3), (n, 1, 1)),
        "face_mat_norm": np.tile(np.eye(3), (n, 1, 1)),
        "landmarks_norm": rng.normal(size=(n, 68, 2)),
        "frame_index": np.arange(n),
        "source_file": [f"p00/day01/{i:04d}.jpg" for i in range(n)],
    }
    fields = {f.name: f for f in CORE_FIELDS}
    plain, encoded = tmp_path / "plain.h5", tmp_path / "encoded.h5"
    with H5Writer(plain) as w:
        w.append(batch)
        w.commit()
    enc = dict(batch)
    enc["face_patch"] = encode_rows(fields["face_patch"], patches)
    enc["face_mask"] = encode_rows(fields["face_mask"], masks)
    with H5Writer(encoded) as w:
        w.append(enc)
        w.commit()
    with h5py.File(plain, "r") as a, h5py.File(encoded, "r") as b:
        for k in ("face_patch", "face_mask"):
            np.testing.assert_array_equal(a[k][...], b[k][...])
            for i in range(n):
                zeros = (0,) * (a[k].ndim - 1)
                assert a[k].id.read_direct_chunk((i, *zeros)) == b[k].id.read_direct_chunk((i, *zeros))


def test_unreadable_records_and_empty_subjects_are_skipped_and_recorded(
    small: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, obj = small
    copy = tmp_path / "obj"
    shutil.copytree(obj, copy)
    (copy / "p00" / "day01" / "9999.npz").write_bytes(b"not a zip file")
    (copy / "p05").mkdir()
    assert run(_cfg(raw, copy, views=2), tmp_path / "out") == 0  # all subjects: the empty one is skipped
    assert "skipping subject p05: no recon records" in capsys.readouterr().err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["subjects"]["p05"]["status"] == "no-records"
    assert m["subjects"]["p00"]["rows"] == 6 and m["subjects"]["p00"]["sources_skipped"] == 1
    (bad,) = m["skips"]
    assert bad["source_file"] == "p00/day01/9999.npz" and "unreadable recon record" in bad["reason"]
    assert not (tmp_path / "out" / "p05.h5").exists()


def test_render_size_changes_the_sampling_not_the_labels(small: tuple[Path, Path], tmp_path: Path) -> None:
    """render.render_size: the same views drawn at 320 (shipped) and 448 px, reduced to 224.

    Every label and appearance column is identical; the patches differ only by
    sampling (inside the face by well under one grey level on average), and the
    face masks agree.
    """
    raw, obj = small
    a, b = tmp_path / "a", tmp_path / "b"
    assert from_dict({}).render.render_size == 320
    assert run(_cfg(raw, obj, render_size=448, appearance="plain"), a) == 0
    assert run(_cfg(raw, obj, appearance="plain"), b) == 0
    da, _ = _read(a / "p00.h5")
    db, _ = _read(b / "p00.h5")
    for k in da:
        if k not in ("face_patch", "face_mask"):
            np.testing.assert_array_equal(da[k], db[k], err_msg=k)
    ma, mb = da["face_mask"] > 0, db["face_mask"] > 0
    assert (ma & mb).sum() / (ma | mb).sum() > 0.99
    inside = ma & mb
    diff = np.abs(da["face_patch"].astype(int) - db["face_patch"]).mean(axis=-1)
    assert inside.sum() > 0.1 * inside.size and diff[inside].mean() < 1.0
    assert np.count_nonzero(diff) > 0, "the two sizes really were drawn"


def test_render_size_is_bounded() -> None:
    with pytest.raises(ConfigError, match="render_size"):
        from_dict({"render": {"render_size": 100}})
