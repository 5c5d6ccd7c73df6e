"""Ctrl-C during a run: finish cleanly on the first, stop at once on the second. See docs/design.md ("Runtime").

Worker processes ignore SIGINT (:mod:`nvsynth.runtime.executor`); the main
process decides. Inside :class:`Interrupt` the first SIGINT only sets
:attr:`Interrupt.requested`, which a run checks between work items: it then
writes what it has (rows, manifest) and raises :class:`KeyboardInterrupt`
itself. A second SIGINT raises :class:`KeyboardInterrupt` at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class Interrupt:
    """SIGINT sets a flag checked between work items; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise :class:`KeyboardInterrupt` if a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
