"""`workers: auto` (nvsynth/runtime/slots.py): the CPUs this process may use; too many workers warn once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nvsynth.app import cli
from nvsynth.core.config import from_dict, with_overrides
from nvsynth.runtime import slots

REPO = Path(__file__).resolve().parents[1]


def test_auto_is_the_affinity_mask() -> None:
    assert slots.usable_cpus() == len(os.sched_getaffinity(0))
    assert slots.worker_count("auto", "render") == len(os.sched_getaffinity(0))
    assert slots.worker_count(1, "render") == 1


def test_auto_follows_taskset() -> None:
    """A process pinned to one CPU (as taskset, cpusets or Slurm leave it) gets one worker."""
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
    code += "from nvsynth.runtime.slots import worker_count; print(worker_count('auto', 'render'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1" and out.stderr == ""


def test_more_workers_than_cpus_warn_once(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots, "_WARNED", set())
    many = slots.usable_cpus() + 3
    assert slots.worker_count(many, "render") == many  # kept as asked
    assert slots.worker_count(many, "render") == many
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"nvsynth render: warning: {many} workers for the ")
    assert slots.worker_count(slots.usable_cpus(), "recon") == slots.usable_cpus()
    assert capsys.readouterr().err == ""


def test_cli_takes_auto_and_numbers_and_refuses_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["render", "-save", "o", "--workers", "auto", "--device", "cpu"])
    assert (args.workers, args.device) == ("auto", "cpu")
    args = parser.parse_args(["recon", "--workers", "3"])
    assert args.workers == 3
    assert parser.parse_args(["render", "-save", "o", "--device", "1"]).device == 1
    cfg = with_overrides(from_dict({}), {"render.workers": 3, "render.device": 1, "recon.workers": "auto"})
    assert (cfg.render.workers, cfg.render.device, cfg.recon.workers) == (3, 1, "auto")
    for argv in (["recon", "--workers", "0"], ["render", "-save", "o", "--workers", "all"],
                 ["render", "-save", "o", "--device", "gpu"], ["render", "-save", "o", "--device", "-1"]):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2, argv
    assert "expected" in capsys.readouterr().err


def test_shipped_config_uses_every_core() -> None:
    from nvsynth.core.config import load_config

    cfg = load_config(REPO / "config_path.yaml")
    assert cfg.recon.workers == cfg.render.workers == "auto" and cfg.render.device == "auto"
