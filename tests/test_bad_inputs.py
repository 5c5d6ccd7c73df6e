"""Bad paths and bad data, as a new user meets them: one line and the right exit code, or skipped and recorded.

One test per row of the table in docs/reliability.md (the fault rows are in tests/test_faults.py).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import yaml
from render_records import write_dataset

from nvsynth.app import inspect
from nvsynth.app.cli import main
from nvsynth.core import geometry, ibug68
from nvsynth.core.config import from_dict
from nvsynth.core.limits import LabelLimits
from nvsynth.datasets import mpii
from nvsynth.recon.landmarks import DlibLandmarker, box_from_six, read_pts
from nvsynth.recon.quality import FaceGate
from nvsynth.render.backgrounds import PROCEDURAL_COUNT
from nvsynth.render.patterns import Pattern
from nvsynth.render.views import normalize_source, sample_view
from nvsynth.runtime.preflight import check_space, check_workers, usable_cores
from nvsynth.runtime.render_run import run

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "supplementary" / "sample"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, template_path: Path, shared: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bad_small")
    raw, obj, _ = write_dataset(root, template_path, shared, "p00", 3, seed=11)
    return raw, obj


def _cfg(raw: Path, obj: Path, **render: object) -> dict:
    return {"data": {"input": str(raw), "records": str(obj)}, "render": {"views": 4, "seed": 1, **render}}


def _config_file(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


# --- output paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "cause"),
    [
        ("/proc/nvsynth-out", "No such file or directory"),
        ("{file}/out", "Not a directory"),
        ("{file}", "it is a file, not a folder"),
    ],
    ids=["under-proc", "under-a-file", "a-file"],
)
def test_bad_save_path_is_one_line_exit_2(
    small: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, cause: str
) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("a file")
    save = where.format(file=file)
    rc = main(["render", "-save", save, "--config", _config_file(tmp_path, _cfg(*small))])
    line = _one_line(capsys)
    assert rc == 2 and line.startswith(f"nvsynth render: error: {save}: ") and cause in line


def test_read_only_save_folder_is_one_line_exit_2(small: tuple[Path, Path], tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cmd = [sys.executable, "-m", "nvsynth.app.cli", "render", "-save", str(ro), "--config",
           _config_file(tmp_path, _cfg(*small))]  # fmt: skip
    if os.geteuid() == 0:  # root ignores permissions: drop every capability in a user namespace
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare(1): a read-only folder cannot be made")
        cmd = ["unshare", "--user", *cmd]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    ro.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(ro / ".nvsynth.lock") in proc.stderr and "Permission denied" in proc.stderr
    assert not list(ro.iterdir())


def test_output_files_follow_the_umask(small: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nvsynth.app.cli", "render", "-save", str(out), "--config",
           _config_file(tmp_path, _cfg(*small, unit_rows=4))]  # fmt: skip
    kill = {**_env(), "NVSYNTH_KILL_AT": "unit:2"}  # stop with committed units on disk, to see theirs too
    proc = subprocess.run(cmd, cwd=REPO, env=kill, capture_output=True, timeout=120, preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode < 0
    units = sorted((out / "p00.h5.parts").glob("unit-*.unit"))
    assert units and all(stat.S_IMODE(u.stat().st_mode) == 0o640 for u in units)
    proc = subprocess.run([*cmd, "--resume"], cwd=REPO, env=_env(), capture_output=True, timeout=120,
                          preexec_fn=lambda: os.umask(0o027))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out / "p00.h5", out / "manifest.json",
             out / ".nvsynth.lock"]}  # fmt: skip
    assert modes == dict.fromkeys(modes, 0o640)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


def test_free_space_is_checked_up_front(tmp_path: Path) -> None:
    assert check_space(tmp_path, 1) is None
    warning = check_space(tmp_path, 10**12)  # 120 PB of images: never fits
    assert warning and warning.startswith(f"warning: {tmp_path}: this run needs about ") and "--resume" in warning


def test_recon_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    """RLIMIT_FSIZE below one record's size: the worker's write fails with EFBIG; one line, exit 1."""
    cfg = _sample_copy(tmp_path)
    cmd = [sys.executable, "-m", "nvsynth.app.cli", "recon", "--config", str(cfg)]
    limit = 8000  # a record is ~29 kB

    def small_files() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
                          preexec_fn=small_files)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.rstrip().splitlines()[-1]
    assert line.startswith("nvsynth recon: error: ") and "cannot write the recon record: File too large" in line
    assert not [p for p in (tmp_path / "obj").rglob("*.npz")]  # nothing half-written, not even a temporary file


# --- bad data: skipped and recorded ------------------------------------------------------------


def test_corrupt_background_images_are_skipped_and_recorded(
    small: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bg = tmp_path / "bg"
    bg.mkdir()
    for i in range(3):
        cv2.imwrite(str(bg / f"good{i}.jpg"), np.full((64, 64, 3), 60 * i, np.uint8))
    (bg / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (bg / "empty.png").write_bytes(b"")
    cfg = _cfg(*small, views=16)
    cfg["data"]["background_path"] = str(bg)
    assert run(from_dict(cfg), tmp_path / "out") == 0
    assert "backgrounds: 3 of 5 images in" in capsys.readouterr().err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["backgrounds"]["usable"] == 3
    assert {s["file"]: s["reason"] for s in m["backgrounds"]["skipped"]} == {
        "bad.jpg": "not a decodable image", "empty.png": "empty file"}  # fmt: skip
    with h5py.File(tmp_path / "out" / "p00.h5", "r") as f:
        ids, variant = f["background_id"][...], f["variant"][...]
    image = np.isin(variant, [4, 5])  # the image variants
    assert image.any() and np.all((ids[image] >= 0) & (ids[image] < 3)) and np.all(ids[~image] == -1)


def test_procedural_background_ids_are_their_numbers_as_the_readme_says(
    small: tuple[Path, Path], tmp_path: Path
) -> None:
    assert run(from_dict(_cfg(*small, views=16)), tmp_path / "out") == 0
    with h5py.File(tmp_path / "out" / "p00.h5", "r") as f:
        ids, variant = f["background_id"][...], f["variant"][...]
    image = np.isin(variant, [4, 5])
    assert image.any() and np.all((ids[image] >= 0) & (ids[image] < PROCEDURAL_COUNT)) and np.all(ids[~image] == -1)
    row = next(ln for ln in (REPO / "README.md").read_text().splitlines() if ln.startswith("| `background_id`"))
    assert "procedural background's number (0–999)" in row and "−1 for the black and colour variants" in row


def test_truncated_recon_record_is_skipped_by_render_and_named(
    small: tuple[Path, Path], tmp_path: Path
) -> None:
    raw, obj = small
    copy = tmp_path / "obj"
    shutil.copytree(obj, copy)
    rec = copy / "p00" / "day01" / "0002.npz"
    rec.write_bytes(rec.read_bytes()[:4000])  # a write cut short (the recon stage itself never leaves one)
    assert run(from_dict(_cfg(raw, copy)), tmp_path / "out") == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (skip,) = m["skips"]
    assert skip["source_file"] == "p00/day01/0002.npz" and "`nvsynth recon` redoes it" in skip["reason"]
    assert m["subjects"]["p00"]["rows"] == 8


def test_committed_units_are_never_dropped_unasked(small: tuple[Path, Path], tmp_path: Path) -> None:
    from nvsynth.core.errors import OutputError

    (tmp_path / "out" / "p00.h5.parts").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"p00\.h5\.parts holds the committed rows of an interrupted run: pass"):
        run(from_dict(_cfg(*small)), tmp_path / "out")


def test_duplicate_subjects_render_once(small: tuple[Path, Path], tmp_path: Path) -> None:
    assert run(from_dict(_cfg(*small)), tmp_path / "out", subjects="p00,p00") == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert list(m["subjects"]) == ["p00"] and m["subjects"]["p00"]["rows"] == 12


# --- recon: the face-quality gate, duplicates, empty and non-UTF-8 annotations ---------------------


def _sample_copy(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLE / "p00", tmp_path / "raw" / "p00")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  input: raw\n  records: obj\n")
    return cfg


def test_recon_rejects_noise_grey_and_blurred_frames_and_keeps_duplicates_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _sample_copy(tmp_path)
    sdir = tmp_path / "raw" / "p00"
    day = sdir / "day01"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(day / "0002.jpg"), rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8))  # noise
    cv2.imwrite(str(day / "0003.jpg"), np.full((720, 1280, 3), 127, np.uint8))  # grey
    lines = (sdir / "p00.txt").read_text().splitlines()
    six = np.array(lines[3].split()[3:15], float).reshape(6, 2)
    face = cv2.imread(str(day / "0004.jpg"))
    cv2.imwrite(str(day / "0004.jpg"), cv2.GaussianBlur(face, (0, 0), 0.08 * box_from_six(six).width))  # blurred
    (sdir / "p00.txt").write_text("\n".join([*lines[:3], lines[0], *lines[3:]]) + "\n")  # line 4 repeats line 1
    assert main(["recon", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    assert out.err.count("duplicate annotation line") == 1 and "line 4 repeats the image of line 1" in out.err
    assert "3 frames ok" in out.out and "4 skipped" in out.out
    with open(tmp_path / "obj" / "p00" / "manifest.csv", newline="") as fh:
        rows = {(r["frame_index"], r["image"]): r for r in csv.DictReader(fh)}
    reason = {k[1]: r["reason"] for k, r in rows.items() if r["status"] == "skipped"}
    assert "noise" in reason["day01/0002.jpg"] and reason["day01/0002.jpg"].startswith("no face")
    assert "no face" in reason["day01/0003.jpg"]
    assert "blurred beyond use" in reason["day01/0004.jpg"]
    assert rows[("3", "day01/0001.jpg")]["reason"] == "duplicate annotation line: line 4 repeats the image of line 1"
    assert rows[("0", "day01/0001.jpg")]["status"] == "ok"
    records = sorted(p.name for p in (tmp_path / "obj" / "p00" / "day01").glob("*.npz"))
    assert records == ["0001.npz", "0005.npz", "0006.npz"]


def test_face_gate_keeps_every_real_face(shared: Path) -> None:
    """The labelled faces and the sample's frames pass the gate (scripts/measure_face_gate.py measures more)."""
    gate, lm = FaceGate(), DlibLandmarker()
    cases = []
    for line in (SAMPLE / "p00" / "p00.txt").read_text().splitlines():
        cols = line.split()
        cases.append((cv2.imread(str(SAMPLE / "p00" / cols[0])), np.array(cols[3:15], float).reshape(6, 2)))
    for img in sorted(p for p in (shared / "faces").iterdir() if p.suffix != ".pts"):
        cases.append((cv2.imread(str(img)), read_pts(img.with_suffix(".pts"))[ibug68.MPII_SIX]))
    for image, six in cases:
        box = box_from_six(six)
        pts = lm.predict(image, box)
        q = gate.measure(image, ((box.left + box.right) / 2, (box.top + box.bottom) / 2), box.width,
                         pts[ibug68.RIGHT_EYE_OUTER], pts[ibug68.LEFT_EYE_OUTER])  # fmt: skip
        assert q.problem() is None, q


def test_empty_annotation_names_the_file_and_render_says_why_there_is_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _sample_copy(tmp_path)
    ann = tmp_path / "raw" / "p00" / "p00.txt"
    ann.write_text("\n  \n")
    assert main(["recon", "--config", str(cfg)]) == 1
    line = _one_line(capsys)
    assert "has no frames" in line and str(ann) in line
    # a subject whose every frame recon skipped: render says so, not "run recon first"
    (tmp_path / "obj" / "p00").mkdir(parents=True)
    (tmp_path / "obj" / "p00" / "manifest.csv").write_text("frame_index,image,status\n0,day01/0001.jpg,skipped\n")
    assert main(["render", "-save", str(tmp_path / "out"), "--config", str(cfg), "--subjects", "p00"]) == 1
    line = _one_line(capsys)
    assert "recon kept no frame" in line and "manifest.csv" in line and "run `nvsynth recon` first" not in line


def test_non_utf8_annotation_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _sample_copy(tmp_path)
    ann = tmp_path / "raw" / "p00" / "p00.txt"
    lines = ann.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"day01", b"d\xe9y01", 1)  # Latin-1, not UTF-8
    ann.write_bytes(b"".join(lines))
    assert main(["recon", "--config", str(cfg)]) == 1
    assert _one_line(capsys) == f"nvsynth recon: error: {ann}:3: not UTF-8 text (byte 0xe9 at column 2)"


def test_corrupt_optional_mat_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sample_copy(tmp_path)
    cal = tmp_path / "raw" / "p00" / "Calibration"
    (cal / "monitorPose.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    scipy.io.savemat(cal / "screenSize.mat", {"width_pixel": "wide"})
    subj = mpii.open_subject(tmp_path / "raw", "p00")
    assert subj.calibration.monitor_rvec is None and subj.calibration.screen_size_px is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(ln.startswith("warning: ") and "ignored (optional" in ln for ln in err)
    assert len(subj.frame_list()) == 6


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "text", "key"),
    [
        ([], "render:\n  seed: true\n", "render.seed"),
        (["--seed", str(2**64)], "", "render.seed"),
        (["--seed", str(2**63)], "", "render.seed"),
        ([], "render:\n  views: 16.5\n", "render.views"),
    ],
    ids=["seed-true", "seed-2^64", "seed-2^63", "views-float"],
)
def test_bad_numbers_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], text: str, key: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text or "{}\n")
    assert main(["render", "-save", str(tmp_path / "out"), "--config", str(cfg), *argv]) == 2
    line = _one_line(capsys)
    assert f"key '{key}'" in line
    assert not (tmp_path / "out").exists()


def test_more_workers_than_cores_warns(small: tuple[Path, Path], tmp_path: Path) -> None:
    assert check_workers(usable_cores()) is None
    assert "is more than the" in (check_workers(usable_cores() + 1) or "")
    cmd = [sys.executable, "-m", "nvsynth.app.cli", "render", "-save", str(tmp_path / "out"), "--workers", "2",
           "--config", _config_file(tmp_path, _cfg(*small))]  # fmt: skip
    one_core = min(os.sched_getaffinity(0))
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.sched_setaffinity(0, {one_core}))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning: --workers 2 is more than the 1 CPU core(s) this process may use" in proc.stderr


# --- one notion of a valid label ---------------------------------------------------------------


def test_sampler_and_inspect_agree_on_valid_labels(small: tuple[Path, Path], tmp_path: Path) -> None:
    # a source looking 35 degrees to the side: head turns of 60+ degrees put its gaze beyond 90
    source = normalize_source(np.zeros(3), [0.0, 0.0, 600.0], geometry.normalized_camera_matrix(),
                              [-450.0, 0.0, 0.0])  # fmt: skip
    limits = LabelLimits()
    assert np.degrees(np.abs(source.gaze_labels[1])) > 30
    lms = np.tile([0.0, 0.0, 600.0], (68, 1))
    wide = Pattern("gaussian", sigma=np.radians(45.0))
    rng = np.random.default_rng(0)
    views = [sample_view(source, wide, rng, lms, 80.0, 20) for _ in range(300)]
    kept = [s.view for s in views if s.view is not None]
    assert len(kept) > 250
    assert all(limits.problem(v.face_gaze, v.face_head_pose) is None for v in kept)
    draws = [wide(np.random.default_rng(i), source) for i in range(300)]
    from nvsynth.render.views import make_view

    raw = [make_view(source, t, lms) for t in draws]
    assert any(limits.problem(v.face_gaze, v.face_head_pose) for v in raw if v is not None)  # the limit matters
    # end to end: a wide gaussian run, then inspect finds nothing to flag
    assert run(from_dict(_cfg(*small, views=16, gaussian_sigma_deg=40.0)), tmp_path / "out") == 0
    with h5py.File(tmp_path / "out" / "p00.h5", "r") as f:
        assert inspect.validate(f) == []
