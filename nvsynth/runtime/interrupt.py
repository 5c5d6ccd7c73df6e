"""Ctrl-C and SIGTERM during a run: finish cleanly on the first, stop at once on the second. See docs/design.md.

Worker processes ignore SIGINT and SIGTERM (:mod:`nvsynth.runtime.executor`);
the main process decides. Inside :class:`Interrupt` the first SIGINT or
SIGTERM (what a scheduler sends before it kills a job) only sets
:attr:`Interrupt.requested`, which a run checks between work items: it then
commits what it has (the durable unit in flight, the manifest) and raises
:class:`Stopped` itself. A second signal raises :class:`Stopped` at once.
Outside it, :func:`install_sigterm` makes SIGTERM raise :class:`Stopped` like
Ctrl-C raises :class:`KeyboardInterrupt`, so that the command still ends with
its one line (``nvsynth.app.cli``) and its workers are shut down.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

#: The signals a run treats as "stop, keep what is done".
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal; ``signum`` says which (the exit code is 128 + signum)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    def __reduce__(self) -> tuple[type[Stopped], tuple[int]]:
        return type(self), (self.signum,)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def install_sigterm() -> None:
    """SIGTERM raises :class:`Stopped` in the main thread (as SIGINT raises KeyboardInterrupt)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)


class Interrupt:
    """SIGINT or SIGTERM sets a flag checked between work items; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int = signal.SIGINT
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise Stopped(signum)
        self.requested = True
        self.signum = signum

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was requested."""
        if self.requested:
            raise Stopped(self.signum)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


__all__ = ["STOP_SIGNALS", "Interrupt", "Stopped", "install_sigterm"]
