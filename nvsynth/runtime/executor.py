"""One executor for every stage: run work items on worker slots, results in item order.

See docs/design.md ("Runtime"). A stage gives two picklable callables:

* ``setup() -> state`` -- builds one slot's state *inside* the slot (a
  renderer with its GL context, a landmark model). It is never inherited:
  pool workers are started with 'spawn' or 'forkserver', never 'fork'.
* ``work(state, item) -> result`` -- a module-level function of the stage.

:meth:`Executor.map` streams the items (an iterable, consumed lazily), keeps
at most ``slots * in_flight`` of them in flight, and yields the results in
item order, so the output never depends on the number of slots or on which
slot ran an item. An exception raised by ``work`` (or by ``setup``, reported
by the slot's first item) comes back from :meth:`~Executor.map`; a worker that
dies (SIGKILL, the out-of-memory killer) is a :class:`~nvsynth.core.errors.WorkerError`.

Implementations:

* :class:`InProcessExecutor` -- one slot, this process; ``setup`` runs at the
  first :meth:`~Executor.map`.
* :class:`ProcessExecutor` -- ``workers`` processes of a
  :class:`concurrent.futures.ProcessPoolExecutor`. Each worker ignores SIGINT
  (Ctrl-C reaches the whole process group; the main process decides what a stop
  means, :mod:`nvsynth.runtime.interrupt`), ends on SIGTERM (the pool itself
  ends the workers of a broken pool with it; a scheduler's SIGTERM to the whole
  group ends them too, and the main process then stops as for its own SIGTERM),
  dies with the main process (Linux:
  ``PR_SET_PDEATHSIG``; elsewhere a thread that watches the parent), sets
  ``env`` (e.g. ``LP_NUM_THREADS``, BLAS threads) *before* it unpickles
  ``setup`` -- that is, before numpy or Mesa load -- then builds its state.
  A worker never outlives the process that started it, even a SIGKILLed one.

* :class:`~nvsynth.runtime.ray_executor.RayExecutor` -- one Ray actor per
  slot whose constructor calls ``setup()`` (GL context and assets live in the
  actor), on a local Ray instance or a cluster; optional (``nvsynth[ray]``).

:func:`executor_factory` picks one by ``runtime.executor`` (``local``,
``process``, ``ray``; ``--executor``).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from nvsynth.core.config import RuntimeConfig
from nvsynth.core.errors import ConfigError, WorkerError

T = TypeVar("T")
R = TypeVar("R")

#: Items in flight per slot: 2 keeps every worker busy while bounding memory.
IN_FLIGHT_PER_SLOT = 2
START_METHODS = ("spawn", "forkserver")
#: ``runtime.executor`` / ``--executor``: this process, a local process pool, Ray actors.
EXECUTOR_KINDS = ("local", "process", "ray")


class Executor(Protocol):
    """Runs ``work(state, item)`` for a stream of items on ``slots`` slots, each with its own state."""

    @property
    def slots(self) -> int: ...

    def start(self) -> None:
        """Start the slots now (optional; :meth:`map` starts them when needed)."""

    def map(self, work: Callable[[Any, T], R], items: Iterable[T]) -> Iterator[R]:
        """Results of ``work(state, item)`` in item order."""

    def close(self) -> None:
        """Stop the slots: items not started are dropped, running ones finish."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


class _Closing:
    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class InProcessExecutor(_Closing):
    """One slot in this process: ``setup()`` at the first :meth:`map`, ``state.close()`` (if any) at :meth:`close`."""

    def __init__(self, setup: Callable[[], Any]) -> None:
        self._setup = setup
        self._state: Any = None
        self._started = False

    @property
    def slots(self) -> int:
        return 1

    def start(self) -> None:
        """Nothing to start ahead: the state is built at the first :meth:`map`, where it is used."""

    def map(self, work: Callable[[Any, T], R], items: Iterable[T]) -> Iterator[R]:
        if not self._started:
            self._state = self._setup()
            self._started = True
        for item in items:
            yield work(self._state, item)

    def close(self) -> None:
        state, self._state, self._started = self._state, None, False
        closer = getattr(state, "close", None)
        if callable(closer):
            closer()


class ProcessExecutor(_Closing):
    """``workers`` local processes ('spawn' or 'forkserver'), each with the state ``setup()`` builds in it."""

    def __init__(
        self,
        setup: Callable[[], Any],
        workers: int,
        *,
        env: Mapping[str, str] | None = None,
        start_method: str = "spawn",
        in_flight: int = IN_FLIGHT_PER_SLOT,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS} (a forked GL context is unusable)")
        self._workers = int(workers)
        self._depth = max(1, self._workers * int(in_flight))
        # setup travels pickled and is unpickled by the worker after env is set, so that env reaches
        # libraries read at import (OpenBLAS, Mesa) whatever setup's pickle imports
        # a 'spawn' worker's parent is this process; a 'forkserver' worker's is the fork server (0: its parent)
        parent = os.getpid() if start_method == "spawn" else 0
        initargs = (dict(env or {}), pickle.dumps(setup), parent)
        self._pool = ProcessPoolExecutor(
            self._workers, mp_context=mp.get_context(start_method), initializer=_start_slot, initargs=initargs
        )
        self._closed = False

    @property
    def slots(self) -> int:
        return self._workers

    def start(self) -> None:
        """Start every worker now (its imports then overlap with the caller's planning)."""
        for _ in range(self._workers):
            self._pool.submit(os.getpid)

    def map(self, work: Callable[[Any, T], R], items: Iterable[T]) -> Iterator[R]:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(self._pool.submit(_run_item, work, item))
                if len(pending) >= self._depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise WorkerError(
                "a worker process ended abruptly (killed, e.g. by the out-of-memory killer, or crashed)"
            ) from None
        finally:
            for fut in pending:  # the caller stopped early: drop what has not started
                fut.cancel()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)  # at most one item per worker is finishing


class ExecutorFactory(Protocol):
    """Makes a stage's executor: ``factory(setup, workers, env=...)`` (:func:`make_executor` is one)."""

    def __call__(self, setup: Callable[[], Any], workers: int, *, env: Mapping[str, str] | None = None) -> Executor: ...


def make_executor(
    setup: Callable[[], Any], workers: int, *, env: Mapping[str, str] | None = None, isolate: bool = False
) -> InProcessExecutor | ProcessExecutor:
    """In-process for one worker, else a process pool; ``isolate`` asks for a worker process even for one
    (for a stage whose ``env`` must be set before its libraries load)."""
    if workers <= 1 and not isolate:
        return InProcessExecutor(setup)
    return ProcessExecutor(setup, max(1, workers), env=env)


def local_executor(
    setup: Callable[[], Any], workers: int, *, env: Mapping[str, str] | None = None
) -> InProcessExecutor:
    """``runtime.executor: local``: one slot in this process, whatever ``workers`` says (``env`` is not applied)."""
    return InProcessExecutor(setup)


def executor_factory(
    kind: str, *, ray_address: str | None = None, isolate: bool = False, fill_cluster: bool = False
) -> ExecutorFactory:
    """The factory for ``runtime.executor`` ``kind``: ``local``, ``process`` (:func:`make_executor`, with
    ``isolate``) or ``ray`` (:class:`~nvsynth.runtime.ray_executor.RayExecutor` on ``ray_address``, else
    ``RAY_ADDRESS``, else a local Ray; ``fill_cluster``: one slot per cluster CPU). Ray is imported when
    the executor is made, not here."""
    if kind == "local":
        return local_executor
    if kind == "process":
        return partial(make_executor, isolate=isolate)
    if kind == "ray":
        from nvsynth.runtime.ray_executor import RayExecutor

        return partial(RayExecutor, address=ray_address, fill_cluster=fill_cluster)
    raise ConfigError(f"runtime.executor: expected one of {', '.join(EXECUTOR_KINDS)}, got {kind!r}")


def runs_remotely(runtime: RuntimeConfig) -> bool:
    """Whether ``runtime`` sends the work to a Ray cluster (``runtime.ray_address`` or ``RAY_ADDRESS``), whose
    slots are not this machine's cores."""
    return runtime.executor == "ray" and bool(runtime.ray_address or os.environ.get("RAY_ADDRESS"))


def configured_factory(runtime: RuntimeConfig, workers: int | str, *, isolate: bool = False) -> ExecutorFactory:
    """The factory ``runtime.executor`` names; ``workers`` is the stage's setting (``auto`` on a Ray cluster:
    one slot per cluster CPU)."""
    return executor_factory(
        runtime.executor, ray_address=runtime.ray_address, isolate=isolate, fill_cluster=workers == "auto"
    )


# -- inside a worker process ------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    state: Any
    error: BaseException | None


#: This worker process's slot (set once by the pool's initializer; never set in the main process).
_SLOT: _Slot | None = None


#: ``prctl`` option: the signal this process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: How often a worker without ``PR_SET_PDEATHSIG`` checks that its parent is alive, seconds.
PARENT_POLL_S = 0.5


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` (the process that started it) ends, however it ends.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, then a check that the parent
    did not die before that call. Elsewhere: a daemon thread polls the parent
    pid and exits the process when it changes.
    """
    parent = parent or os.getppid()
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent is already gone
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="nvsynth-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _start_slot(env: dict[str, str], setup_pickle: bytes, parent: int) -> None:
    """Pool initializer: ignore SIGINT, die with ``parent``, set ``env``, then build the state.

    A failure is kept and raised by every item of this slot (an initializer
    that raises only breaks the pool, without its message).
    """
    global _SLOT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the main process's own handler is not inherited ('spawn')
    die_with_parent(parent)
    os.environ.update(env)
    try:
        _SLOT = _Slot(pickle.loads(setup_pickle)(), None)
    except Exception as err:
        _SLOT = _Slot(None, err)


def _run_item(work: Callable[[Any, T], R], item: T) -> R:
    if _SLOT is None:
        raise RuntimeError("executor slot not started")
    if _SLOT.error is not None:
        raise _SLOT.error
    return work(_SLOT.state, item)


__all__ = [
    "EXECUTOR_KINDS",
    "IN_FLIGHT_PER_SLOT",
    "Executor",
    "ExecutorFactory",
    "InProcessExecutor",
    "ProcessExecutor",
    "configured_factory",
    "die_with_parent",
    "executor_factory",
    "local_executor",
    "make_executor",
    "runs_remotely",
]
