"""The Ray executor (nvsynth/runtime/ray_executor.py): same output as the process pool, through an actor's death.

One local Ray instance (2 CPUs) serves the module. The renders use the real
renderer on recon records of known geometry (tests/render_records.py, as
tests/test_render_run.py does); the recon run uses the bundled sample subject.
"""

from __future__ import annotations

import logging
import operator
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from render_records import write_dataset

from nvsynth.app.cli import EXECUTORS, main
from nvsynth.core.config import Config, RuntimeConfig, from_dict
from nvsynth.core.errors import WorkerError
from nvsynth.recon.record import ReconRecord
from nvsynth.runtime.executor import executor_factory, runs_remotely
from nvsynth.runtime.render_run import run

ray = pytest.importorskip("ray")
from nvsynth.runtime.ray_executor import RayExecutor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "supplementary" / "sample"


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    """One local Ray instance for the module; executors use it and leave it running."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, template_path: Path, shared: Path) -> tuple[Path, Path]:
    """Six sources of subject p00 (raw images and recon records)."""
    raw, obj, _ = write_dataset(tmp_path_factory.mktemp("ray"), template_path, shared, "p00", 6, seed=3)
    return raw, obj


def _cfg(raw: Path, obj: Path, executor: str) -> Config:
    return from_dict({
        "data": {"input": str(raw), "records": str(obj)},
        "render": {"views": 4, "seed": 7, "workers": 2},
        "runtime": {"executor": executor},
    })  # fmt: skip


def _assert_same_file(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa) == sorted(fb)
        for k in fa:
            va, vb = fa[k][...], fb[k][...]
            assert va.dtype == vb.dtype and va.shape == vb.shape, k
            same = va.tolist() == vb.tolist() if va.dtype.kind == "O" else va.tobytes() == vb.tobytes()
            assert same, k
    assert a.read_bytes() == b.read_bytes()


@pytest.fixture(scope="module")
def process_render(sources: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The process pool's output, the reference."""
    out = tmp_path_factory.mktemp("process")
    assert run(_cfg(*sources, "process"), out) == 0
    return out / "p00.h5"


def test_ray_render_is_byte_identical_to_the_process_pool(
    sources: tuple[Path, Path], process_render: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run(_cfg(*sources, "ray"), tmp_path / "ray") == 0
    assert "2 worker(s)" in capsys.readouterr().err
    with h5py.File(process_render, "r") as f:
        assert f["face_patch"].shape == (24, 224, 224, 3)
    _assert_same_file(process_render, tmp_path / "ray" / "p00.h5")
    assert ray.is_initialized()  # the executor left the session it did not start running


class KillsAnActor(RayExecutor):
    """The Ray executor, with one of its actors SIGKILLed when the first result arrives (a real kill)."""

    def __init__(self, seen: dict[str, int], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen

    def start(self) -> None:
        super().start()
        self.pids = ray.get([a.pid.remote() for a in self.actors])  # each actor has run setup()

    def map(self, work: Callable[[Any, Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        for i, result in enumerate(super().map(work, items)):
            if i == 0:  # the other actor holds the next items in flight
                self.seen["killed"] = self.pids[1]
                os.kill(self.pids[1], signal.SIGKILL)
            yield result
        self.seen["restarted"] = ray.get(self.actors[1].pid.remote())


def test_a_killed_actor_is_restarted_and_the_output_is_unchanged(
    sources: tuple[Path, Path], process_render: Path, tmp_path: Path
) -> None:
    seen: dict[str, int] = {}
    assert run(_cfg(*sources, "ray"), tmp_path / "k", executor_factory=partial(KillsAnActor, seen)) == 0
    assert seen["restarted"] != seen["killed"]  # a new process, which ran setup() again
    _assert_same_file(process_render, tmp_path / "k" / "p00.h5")


def test_an_actor_that_keeps_dying_is_a_worker_error(sources: tuple[Path, Path], tmp_path: Path) -> None:
    seen: dict[str, int] = {}
    factory = partial(KillsAnActor, seen, restarts=0)
    with pytest.raises(WorkerError, match="Ray actor ended abruptly"):
        run(_cfg(*sources, "ray"), tmp_path / "w", executor_factory=factory)
    assert not (tmp_path / "w" / "p00.h5").exists()


def test_order_window_env_and_errors() -> None:
    # builtins only: every Ray worker imports them
    with RayExecutor(partial(list, range(100)), 2) as ex:
        assert ex.slots == 2
        assert list(ex.map(operator.getitem, range(40))) == list(range(40))
        pulled: list[int] = []

        def items() -> Iterator[int]:
            for i in range(100):
                pulled.append(i)
                yield i

        results = ex.map(operator.getitem, items())
        assert next(results) == 0 and len(pulled) == 4  # 2 actors x 2 in flight
        results.close()
        with pytest.raises(IndexError):  # the work's exception, as itself
            list(ex.map(operator.getitem, [1, 2, 500]))
    with RayExecutor(partial(os.getenv, "NVSYNTH_TEST_VAR"), 1, env={"NVSYNTH_TEST_VAR": "in-actor"}) as ex:
        assert list(ex.map(operator.add, ["-0", "-1"])) == ["in-actor-0", "in-actor-1"]
    assert "NVSYNTH_TEST_VAR" not in os.environ
    with RayExecutor(partial(int, "no number"), 1) as ex, pytest.raises(ValueError, match="no number"):
        list(ex.map(operator.add, [1]))  # setup()'s error, raised by the slot's first item


def _records(root: Path) -> dict[str, ReconRecord]:
    return {str(p.relative_to(root)): ReconRecord.load(p) for p in sorted(root.rglob("*.npz"))}


def test_ray_recon_gives_the_process_pool_records(shared: Path, tmp_path: Path) -> None:
    from nvsynth.runtime.recon_run import run as recon

    shutil.copytree(SAMPLE / "p00", tmp_path / "raw" / "p00")
    outs = {}
    for executor in ("process", "ray"):
        outs[executor] = tmp_path / executor
        cfg = from_dict({
            "data": {"input": str(tmp_path / "raw"), "records": str(outs[executor])},
            "recon": {"workers": 2},
            "runtime": {"executor": executor},
        })  # fmt: skip
        assert recon(cfg, limit=3) == 0
    a, b = _records(outs["process"]), _records(outs["ray"])
    assert len(a) == 3 and sorted(a) == sorted(b)
    for name, rec in a.items():
        for field, value in vars(rec).items():
            other = getattr(b[name], field)
            if isinstance(value, np.ndarray):
                assert value.dtype == other.dtype and value.tobytes() == other.tobytes(), (name, field)
            else:
                assert value == other, (name, field)


def test_executor_choices_agree_and_runtime_is_not_in_the_output_hash() -> None:
    import typing

    from nvsynth.runtime.render_plan import run_hash

    assert list(typing.get_args(RuntimeConfig.model_fields["executor"].annotation)) == list(EXECUTORS)
    assert Config().runtime.executor == "process"
    ray_cfg = from_dict({"runtime": {"executor": "ray", "ray_address": "10.0.0.1:6379"}})
    assert run_hash(ray_cfg) == run_hash(Config())
    assert runs_remotely(ray_cfg.runtime) and not runs_remotely(Config().runtime)
    assert executor_factory("local")(partial(list, range(3)), 4).slots == 1


def test_without_ray_installed_the_error_is_one_line(
    sources: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    raw, obj = sources
    cfg = tmp_path / "config_path.yaml"
    cfg.write_text(f"data:\n  input: {raw}\n  records: {obj}\nrender:\n  views: 1\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    code = main(["render", "--config", str(cfg), "-save", str(tmp_path / "o"), "--executor", "ray", "--workers", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        "nvsynth render: error: runtime.executor: ray needs Ray, which is not installed: pip install 'nvsynth[ray]'"
    )
