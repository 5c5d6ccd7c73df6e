"""Faults injected for real: SIGKILL, SIGTERM, a full disk, a second run, on real `nvsynth` processes.

Every render here is of one dataset (24 sources x 4 views, 6 durable units of 16 rows) and is compared
byte for byte with one uninterrupted run. Kills at exact places use ``NVSYNTH_KILL_AT``
(``nvsynth.runtime.failpoints``: the process SIGKILLs itself there); the others come from outside.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from render_records import write_dataset

from nvsynth.core.config import from_dict
from nvsynth.recon.record import ReconRecord
from nvsynth.runtime.render_run import run

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "supplementary" / "sample"
SUBJECT = "p02"
SOURCES, VIEWS, UNIT_ROWS = 24, 4, 16
TOTAL = SOURCES * VIEWS
UNITS = TOTAL // UNIT_ROWS


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, template_path: Path, shared: Path) -> dict[str, Path]:
    """The dataset, its config file, and the uninterrupted run's output file."""
    root = tmp_path_factory.mktemp("faults")
    raw, obj, _ = write_dataset(root, template_path, shared, SUBJECT, SOURCES, seed=7)
    settings = {"views": VIEWS, "seed": 3, "unit_rows": UNIT_ROWS}
    config = {"data": {"input": str(raw), "records": str(obj)}, "render": settings}
    cfg_path = root / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    assert run(from_dict(config), root / "straight") == 0
    return {"raw": raw, "obj": obj, "config": cfg_path, "straight": root / "straight" / f"{SUBJECT}.h5"}


def _env(token: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NVSYNTH_KILL_AT"}
    return {**env, "PYTHONPATH": str(REPO), "NVSYNTH_FAULT_TOKEN": token, **extra}


def _render(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nvsynth.app.cli", "render", "-save", str(out), "--config", str(data["config"]),
            *extra]  # fmt: skip


def _run(cmd: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, **kw)  # type: ignore[call-overload]


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The run's last stderr line; asserts that there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.rstrip().splitlines()[-1]


def _live_processes(token: str) -> list[int]:
    """Pids of live (not zombie) processes started with ``NVSYNTH_FAULT_TOKEN=token``: a run and its workers."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if f"NVSYNTH_FAULT_TOKEN={token}".encode() not in (d / "environ").read_bytes().split(b"\0"):
                continue
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(d.name))
    return found


def _assert_none_left(token: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := _live_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes outlived the killed run: {left}"


def _units(out: Path) -> int:
    return len(list((out / f"{SUBJECT}.h5.parts").glob("unit-*.unit")))


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["subjects"][SUBJECT]


def _assert_identical(out: Path, data: dict[str, Path]) -> None:
    final = out / f"{SUBJECT}.h5"
    assert final.read_bytes() == data["straight"].read_bytes()
    assert not (out / f"{SUBJECT}.h5.parts").exists() and not (out / f"{SUBJECT}.h5.partial").exists()


def _wait_for_units(proc: subprocess.Popen[str], out: Path, n: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _units(out) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None and _units(out) >= n, "the run ended before committing a unit"


def test_sigkill_while_rendering_merging_and_committing(data: dict[str, Path], tmp_path: Path) -> None:
    """Killed after unit 2, again while rebuilding from the units, again just before the rename: identical."""
    out, token = tmp_path / "out", uuid.uuid4().hex
    # 1. SIGKILL while rendering (2 workers), right after the second unit is committed
    p = _run(_render(data, out, "--workers", "2"), _env(token, NVSYNTH_KILL_AT="unit:2"))
    assert p.returncode == -signal.SIGKILL
    _assert_none_left(token)  # the workers died with their parent
    assert _units(out) == 2 and not (out / f"{SUBJECT}.h5").exists()
    # 2. SIGKILL in the resume, while the subject's file is being rebuilt from the kept units
    p = _run(_render(data, out, "--resume"), _env(token, NVSYNTH_KILL_AT="merge:1"))
    assert p.returncode == -signal.SIGKILL
    assert "resuming" not in p.stderr and _units(out) == 2  # killed before it rendered anything
    # 3. SIGKILL in the next resume, after the last unit, just before the file is renamed into place
    p = _run(_render(data, out, "--resume"), _env(token, NVSYNTH_KILL_AT="commit:1"))
    assert p.returncode == -signal.SIGKILL
    assert f"{SUBJECT}: resuming: kept 2 committed unit(s), {2 * UNIT_ROWS} rows" in p.stderr
    assert _units(out) == UNITS and not (out / f"{SUBJECT}.h5").exists()
    # 4. the last resume renders nothing: every unit was committed
    p = _run(_render(data, out, "--resume"), _env(token))
    assert p.returncode == 0, p.stderr
    m = _manifest(out)
    assert (m["status"], m["units_kept"], m["rows_kept"], m["rows_this_run"]) == ("resumed", UNITS, TOTAL, 0)
    _assert_identical(out, data)
    _assert_none_left(token)


def test_external_sigkill_leaves_no_worker_and_resume_redoes_only_the_unit_in_flight(
    data: dict[str, Path], tmp_path: Path
) -> None:
    out, token = tmp_path / "out", uuid.uuid4().hex
    proc = subprocess.Popen(_render(data, out, "--workers", "2"), cwd=REPO, env=_env(token), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for_units(proc, out, 1)
    assert len(_live_processes(token)) >= 3  # the run and its two workers
    proc.kill()  # SIGKILL, as the OOM killer or a preempting scheduler sends it
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    _assert_none_left(token)
    committed = _units(out)
    p = _run(_render(data, out, "--resume"), _env(token))
    assert p.returncode == 0, p.stderr
    m = _manifest(out)
    assert m["units_kept"] == committed and m["rows_kept"] >= committed * UNIT_ROWS
    assert m["rows_this_run"] == TOTAL - m["rows_kept"]  # nothing committed was rendered again
    _assert_identical(out, data)


@pytest.mark.parametrize("group", [False, True], ids=["to-the-run", "to-its-process-group"])
def test_sigterm_stops_like_sigint_and_names_the_resume_command(
    data: dict[str, Path], tmp_path: Path, group: bool
) -> None:
    """SIGTERM to the run (kill PID), or to its whole process group (a scheduler): workers included."""
    out, token = tmp_path / "out", uuid.uuid4().hex
    proc = subprocess.Popen(_render(data, out, "--workers", "2"), cwd=REPO, env=_env(token), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    _wait_for_units(proc, out, 1)
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err
    line = err.rstrip().splitlines()[-1]
    assert line.startswith("nvsynth render: interrupted by SIGTERM; the committed units are kept: resume with `")
    _assert_none_left(token)
    m = _manifest(out)
    assert m["status"] == "interrupted"
    kept = m["rows"]  # what was rendered before the signal, committed as a unit on the way out
    assert 0 < kept < TOTAL and not (out / f"{SUBJECT}.h5").exists()
    words = shlex.split(line.split("`")[1])
    assert words[0] == "nvsynth" and words[-1] == "--resume"
    p = _run([sys.executable, "-m", "nvsynth.app.cli", *words[1:]], _env(token))  # the command it named
    assert p.returncode == 0, p.stderr
    m = _manifest(out)
    assert m["rows_kept"] == kept and m["rows_this_run"] == TOTAL - kept
    _assert_identical(out, data)


def test_file_size_limit_is_one_line_and_resume_completes(data: dict[str, Path], tmp_path: Path) -> None:
    """RLIMIT_FSIZE on the child: writes fail with EFBIG, as on a disk that is full for this file."""
    out, token = tmp_path / "out", uuid.uuid4().hex
    limit = data["straight"].stat().st_size // 2

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = _run(_render(data, out), _env(token), preexec_fn=small_files)
    assert p.returncode == 1, p.stderr
    line = _one_line_error(p)
    assert line.startswith("nvsynth render: error: ") and "File too large" in line and "--resume" in line
    assert f"{SUBJECT}.h5" in line
    assert not (out / f"{SUBJECT}.h5").exists() and not (out / f"{SUBJECT}.h5.partial").exists()
    committed = _units(out)
    assert committed >= 1
    p = _run(_render(data, out, "--resume"), _env(token))  # the limit is gone: space has returned
    assert p.returncode == 0, p.stderr
    assert _manifest(out)["units_kept"] == committed
    _assert_identical(out, data)


def _can_mount_tmpfs() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=1m nvsynth $d && umount $d && rmdir $d"],
                           capture_output=True, text=True)  # fmt: skip
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


def test_disk_full_is_one_line_and_resume_completes_once_space_returns(data: dict[str, Path], tmp_path: Path) -> None:
    """A real ENOSPC: a size-limited tmpfs (in a user namespace), grown after the failure, then --resume."""
    why = _can_mount_tmpfs()
    if why:
        pytest.skip(why)
    disk, out, keep = tmp_path / "disk", tmp_path / "disk" / "out", tmp_path / "kept"
    disk.mkdir()
    keep.mkdir()
    size = data["straight"].stat().st_size
    py = shlex.join(_render(data, out))
    script = f"""
        mount -t tmpfs -o size={int(size * 1.2)} nvsynth {shlex.quote(str(disk))} || exit 90
        {py} 2> {shlex.quote(str(keep / "full.err"))}; echo $? > {shlex.quote(str(keep / "full.rc"))}
        ls {shlex.quote(str(out))}/{SUBJECT}.h5.parts | grep -c unit- > {shlex.quote(str(keep / "units"))}
        mount -o remount,size={size * 4} {shlex.quote(str(disk))} || exit 91
        {py} --resume 2> {shlex.quote(str(keep / "resume.err"))} || exit 92
        cp {shlex.quote(str(out))}/{SUBJECT}.h5 {shlex.quote(str(out))}/manifest.json {shlex.quote(str(keep))}/
    """
    env = _env(uuid.uuid4().hex)
    p = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    resume_err = keep / "resume.err"
    assert p.returncode == 0, (p.returncode, p.stderr, resume_err.read_text() if resume_err.exists() else "")
    assert (keep / "full.rc").read_text().strip() == "1"
    err = (keep / "full.err").read_text()
    assert "Traceback" not in err
    line = err.rstrip().splitlines()[-1]
    assert line.startswith("nvsynth render: error: ") and "No space left on device" in line and "--resume" in line
    committed = int((keep / "units").read_text())
    m = json.loads((keep / "manifest.json").read_text())["subjects"][SUBJECT]
    assert m["units_kept"] == committed and m["rows_this_run"] == TOTAL - m["rows_kept"]
    assert (keep / f"{SUBJECT}.h5").read_bytes() == data["straight"].read_bytes()


def test_second_run_into_the_same_folder_is_refused_without_hdf5_locking(data: dict[str, Path], tmp_path: Path) -> None:
    out, token = tmp_path / "out", uuid.uuid4().hex
    env = _env(token, HDF5_USE_FILE_LOCKING="FALSE")
    first = subprocess.Popen(_render(data, out), cwd=REPO, env=env, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for_units(first, out, 1)
    first.send_signal(signal.SIGSTOP)  # hold it mid-run
    try:
        second = _run(_render(data, out, "--resume"), env)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1
    line = _one_line_error(second)
    assert f"another nvsynth run is writing here (pid {first.pid} on " in line and str(out) in line
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    _assert_identical(out, data)  # the refused run changed nothing


def _records(obj: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for p in sorted(r for r in obj.rglob("*.npz") if not r.name.startswith(".")):
        rec = ReconRecord.load(p)
        out[str(p.relative_to(obj))] = {k: np.asarray(v) for k, v in vars(rec).items()}
    return out


def test_sigkill_during_recon_then_rerun_gives_the_same_records(tmp_path: Path, shared: Path) -> None:
    shutil.copytree(SAMPLE / "p00", tmp_path / "raw" / "p00")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  input: raw\n  records: obj\n")
    straight_cfg = tmp_path / "s.yaml"
    straight_cfg.write_text("data:\n  input: raw\n  records: obj_straight\n")
    token = uuid.uuid4().hex
    recon = [sys.executable, "-m", "nvsynth.app.cli", "recon", "--workers", "2", "--config"]
    p = _run([*recon, str(cfg)], _env(token, NVSYNTH_KILL_AT="recon-frame:2"))
    assert p.returncode == -signal.SIGKILL
    _assert_none_left(token)
    done = len([r for r in (tmp_path / "obj").rglob("*.npz") if not r.name.startswith(".")])  # not temporary files
    assert 2 <= done < 6
    p = _run([*recon, str(cfg)], _env(token))
    assert p.returncode == 0, p.stderr
    assert f"({6 - done} computed, {done} existing)" in p.stdout  # only the frames not yet written were redone
    assert not list((tmp_path / "obj").rglob(".*.tmp.*"))  # no temporary file of a killed write is left
    assert _run([*recon, str(straight_cfg)], _env(token)).returncode == 0
    a, b = _records(tmp_path / "obj"), _records(tmp_path / "obj_straight")
    assert sorted(a) == sorted(b) and len(a) == 6
    for name in a:
        for k in a[name]:
            np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=f"{name}:{k}")


def test_a_killed_worker_is_one_line_and_resume_completes(data: dict[str, Path], tmp_path: Path) -> None:
    """The out-of-memory killer picks a worker, not the main process: one line, committed units kept."""
    out, token = tmp_path / "out", uuid.uuid4().hex
    proc = subprocess.Popen(_render(data, out, "--workers", "2"), cwd=REPO, env=_env(token), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for_units(proc, out, 1)
    workers = [pid for pid in _live_processes(token) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2  # not the multiprocessing resource tracker
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    line = err.rstrip().splitlines()[-1]
    assert line.startswith("nvsynth render: error: a worker process ended abruptly") and line.endswith("--resume`")
    _assert_none_left(token)
    committed = _units(out)
    p = _run(_render(data, out, "--resume"), _env(token))
    assert p.returncode == 0, p.stderr
    assert _manifest(out)["units_kept"] == committed
    _assert_identical(out, data)


def test_a_damaged_unit_is_redone_with_the_units_after_it(data: dict[str, Path], tmp_path: Path) -> None:
    out, token = tmp_path / "out", uuid.uuid4().hex
    p = _run(_render(data, out), _env(token, NVSYNTH_KILL_AT="unit:3"))
    assert p.returncode == -signal.SIGKILL and _units(out) == 3
    second = out / f"{SUBJECT}.h5.parts" / "unit-000001.unit"
    second.write_bytes(second.read_bytes()[:-100])  # damage that the rename cannot have caused: a bad disk
    p = _run(_render(data, out, "--resume"), _env(token))
    assert p.returncode == 0, p.stderr
    assert f"{SUBJECT}: unit-000001.unit is damaged" in p.stderr and "redone" in p.stderr
    m = _manifest(out)
    assert m["units_kept"] == 1 and m["rows_this_run"] == TOTAL - m["rows_kept"]
    _assert_identical(out, data)
