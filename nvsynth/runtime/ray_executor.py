"""The Ray executor: the :class:`~nvsynth.runtime.executor.Executor` interface on Ray actors.

See docs/design.md ("Runtime"). Ray is optional (``pip install 'nvsynth[ray]'``)
and imported only when this executor is made; without it, one
:class:`~nvsynth.core.errors.ConfigError` line names the pip command.

* The Ray instance: the one this process is already connected to, if any;
  else ``ray.init(address=...)`` with ``runtime.ray_address`` or
  ``RAY_ADDRESS`` (a cluster); else a local ``ray.init(num_cpus=workers)``.
  :meth:`RayExecutor.close` shuts down only a connection it opened.
* One actor per slot (``num_cpus=1`` each). Its constructor sets ``env`` (also
  passed as the actor's ``runtime_env``, so that it is in the process from its
  start, before numpy or Mesa load), ignores SIGINT, then runs ``setup()`` once:
  the GL context and the loaded assets live in the actor.
* :meth:`RayExecutor.map` streams the items, sends each to the actor with the
  fewest items in flight, keeps at most ``slots * in_flight`` in flight (memory
  stays flat) and yields the results in item order.
* Faults: actors are created with ``max_restarts`` and their calls with
  ``max_task_retries``, so an actor that dies (SIGKILL, the out-of-memory
  killer, a lost node) is restarted -- ``setup()`` runs again -- and the items
  it held are run again. Work items are pure or write their own file atomically,
  and every random draw is seeded per (subject, frame, view), so the output is
  byte-identical. An actor that dies more often than that is a
  :class:`~nvsynth.core.errors.WorkerError`; an exception raised by ``work``
  comes back as itself, as from the process pool.

The main process stays the single writer of each subject's h5 file (actors only
return rows), so each file is written by exactly one task, atomically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from nvsynth.core.errors import ConfigError, WorkerError
from nvsynth.runtime.executor import IN_FLIGHT_PER_SLOT, _Closing

T = TypeVar("T")
R = TypeVar("R")

#: How to install the optional dependency (the error line names it).
RAY_PIP = "pip install 'nvsynth[ray]'"
#: Restarts of a dying actor, and retries of each of its calls, before the run fails.
RAY_RESTARTS = 3


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"runtime.executor: ray needs Ray, which is not installed: {RAY_PIP}") from None
    return ray


def ray_target(address: str | None) -> str | None:
    """The Ray cluster to connect to: ``address`` (``runtime.ray_address``), else ``RAY_ADDRESS``, else None (local)."""
    return address or os.environ.get("RAY_ADDRESS") or None


class _SlotActor:
    """One slot: ``setup()`` once in the actor's own process, then ``work(state, item)`` per call."""

    def __init__(self, env: dict[str, str], setup_pickle: bytes) -> None:
        os.environ.update(env)
        with contextlib.suppress(ValueError):  # Ctrl-C is the main process's to handle (interrupt.py)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._error: BaseException | None = None
        self._state: Any = None
        try:
            self._state = pickle.loads(setup_pickle)()
        except Exception as err:  # raised by every item of this slot, as the process pool does
            self._error = err

    def pid(self) -> int:
        return os.getpid()

    def run(self, work: Callable[[Any, T], R], item: T) -> R:
        if self._error is not None:
            raise self._error
        return work(self._state, item)


class RayExecutor(_Closing):
    """``workers`` Ray actors (one per slot), each with the state ``setup()`` builds in it.

    ``address``: a Ray cluster (else ``RAY_ADDRESS``, else a local instance with ``num_cpus=workers``).
    ``fill_cluster``: on a cluster, one slot per CPU the cluster has (``workers: auto``) instead of ``workers``.
    """

    def __init__(
        self,
        setup: Callable[[], Any],
        workers: int,
        *,
        env: Mapping[str, str] | None = None,
        address: str | None = None,
        fill_cluster: bool = False,
        in_flight: int = IN_FLIGHT_PER_SLOT,
        restarts: int = RAY_RESTARTS,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        ray = import_ray()
        self._ray = ray
        self._owns = False
        target = ray_target(address)
        if not ray.is_initialized():
            quiet = {"include_dashboard": False, "logging_level": logging.WARNING}
            try:
                if target is not None:
                    ray.init(address=target, **quiet)
                else:
                    ray.init(num_cpus=int(workers), **quiet)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = f"at {target}" if target is not None else "locally"
                raise ConfigError(f"runtime.ray_address: cannot start or reach Ray {where}: {err}") from None
            self._owns = True
        if fill_cluster and target is not None:
            workers = max(1, int(ray.cluster_resources().get("CPU", workers)))
        self._workers = int(workers)
        self._in_flight = max(1, int(in_flight))
        self._env = dict(env or {})
        self._setup_pickle = pickle.dumps(setup)  # unpickled in the actor after env is set
        self._restarts = int(restarts)
        self._actors: list[Any] = []
        self._closed = False

    @property
    def slots(self) -> int:
        return self._workers

    @property
    def actors(self) -> list[Any]:
        """The slots' actor handles (started by :meth:`start`), e.g. to ask an actor its pid."""
        return list(self._actors)

    def start(self) -> None:
        """Create the actors now (their start-up and ``setup()`` then overlap with the caller's planning)."""
        if self._actors:
            return
        ray = self._ray
        actor_class = ray.remote(_SlotActor).options(
            num_cpus=1,
            max_restarts=self._restarts,
            max_task_retries=self._restarts,
            runtime_env={"env_vars": self._env} if self._env else None,
        )
        self._actors = [actor_class.remote(self._env, self._setup_pickle) for _ in range(self._workers)]

    def map(self, work: Callable[[Any, T], R], items: Iterable[T]) -> Iterator[R]:
        self.start()
        ray = self._ray
        depth = self._workers * self._in_flight
        pending: deque[Any] = deque()  # object refs, in item order
        running: dict[Any, int] = {}  # refs not yet seen finished -> their actor
        load = [0] * self._workers

        def finished(refs: Iterable[Any]) -> None:
            for ref in refs:
                slot = running.pop(ref, None)
                if slot is not None:
                    load[slot] -= 1

        def head() -> R:
            ref = pending.popleft()
            try:
                return ray.get(ref)
            finally:
                finished([ref])

        try:
            for item in items:
                if running:  # which items are done, without waiting: the least-loaded actor gets the next one
                    done, _ = ray.wait(list(running), num_returns=len(running), timeout=0, fetch_local=False)
                    finished(done)
                slot = min(range(self._workers), key=load.__getitem__)
                ref = self._actors[slot].run.remote(work, item)
                pending.append(ref)
                running[ref] = slot
                load[slot] += 1
                if len(pending) >= depth:
                    yield head()
            while pending:
                yield head()
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError) as err:
            said = " ".join(str(err).split())[:200]  # Ray's own reason, e.g. an error in the actor's creation
            raise WorkerError(
                f"a Ray actor ended abruptly more than {self._restarts} time(s) (killed, e.g. by the out-of-memory "
                f"killer, crashed, or its node was lost; Ray: {said})"
            ) from None
        finally:
            for ref in pending:  # the caller stopped early: drop what has not started
                with contextlib.suppress(Exception):
                    ray.cancel(ref)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        actors, self._actors = self._actors, []
        for actor in actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)
        if self._owns:  # only a connection this executor opened
            self._ray.shutdown()


__all__ = ["RAY_PIP", "RAY_RESTARTS", "RayExecutor", "import_ray", "ray_target"]
