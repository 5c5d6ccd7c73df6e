"""The one executor (nvsynth/runtime/executor.py): order, per-worker state, env, failures, SIGINT, bounded window."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import pytest

from nvsynth.core.errors import RenderError
from nvsynth.runtime.executor import InProcessExecutor, ProcessExecutor, make_executor


@dataclass
class Slot:
    """A worker slot's state: where and when it was built, what the environment said then."""

    pid: int
    env: str | None
    closed: bool = False

    def close(self) -> None:
        self.closed = True


def make_slot(var: str) -> Slot:
    return Slot(os.getpid(), os.environ.get(var))


def broken_slot() -> Slot:
    raise RenderError("render worker could not start (no GL today)")


def work(slot: Slot, item: int) -> tuple[int, int, str | None]:
    time.sleep(0.02 * (item % 3))  # uneven durations: completion order differs from item order
    return item * item, slot.pid, slot.env


def fail_on_three(slot: Slot, item: int) -> int:
    if item == 3:
        raise ValueError(f"item {item} is bad")
    return item


def test_process_pool_keeps_item_order_and_builds_state_in_each_worker() -> None:
    with ProcessExecutor(partial(make_slot, "NVSYNTH_TEST_VAR"), 2, env={"NVSYNTH_TEST_VAR": "set-in-worker"}) as ex:
        ex.start()
        out = list(ex.map(work, range(12)))
    assert [o[0] for o in out] == [i * i for i in range(12)]
    pids = {o[1] for o in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {o[2] for o in out} == {"set-in-worker"}  # env reached the worker before setup ran
    assert "NVSYNTH_TEST_VAR" not in os.environ  # ... and not this process


def test_in_process_builds_state_lazily_and_closes_it() -> None:
    ex = InProcessExecutor(partial(make_slot, "NVSYNTH_TEST_VAR"))
    results = ex.map(work, range(4))
    assert ex._state is None  # nothing built before the first item is asked for
    assert [r[0] for r in results] == [0, 1, 4, 9]
    state = ex._state
    assert state.pid == os.getpid()
    ex.close()
    assert state.closed


def test_one_and_two_workers_give_the_same_results() -> None:
    one = [r[0] for r in make_executor(partial(make_slot, "X"), 1).map(work, range(9))]
    with make_executor(partial(make_slot, "X"), 2) as ex:
        two = [r[0] for r in ex.map(work, range(9))]
    assert one == two == [i * i for i in range(9)]
    with make_executor(partial(make_slot, "X"), 1, isolate=True) as isolated:
        assert isinstance(isolated, ProcessExecutor) and isolated.slots == 1


def test_setup_failure_is_raised_by_the_first_item() -> None:
    with ProcessExecutor(broken_slot, 1) as ex, pytest.raises(RenderError, match="no GL today"):
        list(ex.map(work, range(3)))
    with pytest.raises(RenderError, match="no GL today"):
        list(InProcessExecutor(broken_slot).map(work, range(3)))


def test_work_errors_come_back_in_order() -> None:
    got: list[int] = []
    with ProcessExecutor(partial(make_slot, "X"), 2) as ex, pytest.raises(ValueError, match="item 3 is bad"):
        for r in ex.map(fail_on_three, range(8)):
            got.append(r)
    assert got == [0, 1, 2]


def test_items_are_pulled_lazily_with_a_bounded_window() -> None:
    pulled: list[int] = []

    def items() -> Iterator[int]:
        for i in range(100):
            pulled.append(i)
            yield i

    with ProcessExecutor(partial(make_slot, "X"), 2, in_flight=2) as ex:
        results = ex.map(work, items())
        first = next(results)
        assert first[0] == 0 and len(pulled) == 4  # 2 workers x 2 in flight
        results.close()  # the caller stops early: queued items are dropped
    assert len(pulled) < 100


def test_workers_ignore_sigint() -> None:
    with ProcessExecutor(partial(make_slot, "X"), 1) as ex:
        (_, pid, _), *_ = ex.map(work, [1])
        os.kill(pid, signal.SIGINT)
        time.sleep(0.2)
        assert [r[1] for r in ex.map(work, [2, 4])] == [pid, pid]  # the same worker, still alive


def test_fork_is_refused() -> None:
    with pytest.raises(ValueError, match="forked GL context"):
        ProcessExecutor(partial(make_slot, "X"), 2, start_method="fork")
