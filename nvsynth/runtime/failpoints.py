"""Kill points for the fault tests: ``NVSYNTH_KILL_AT=NAME:COUNT`` SIGKILLs this process there.

The fault tests (``tests/test_faults.py``) must kill a run at exact places --
after the k-th committed unit, in the middle of rebuilding a subject's file,
just before its rename, after the k-th recon frame -- which timing from
outside cannot hit reliably. With ``NVSYNTH_KILL_AT`` set, the run sends
itself SIGKILL (a real, uncatchable signal from the kernel: no handler, no
cleanup, workers left to die with their parent) when point ``NAME`` is
reached for the ``COUNT``-th time. Unset, :func:`reached` costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "NVSYNTH_KILL_AT"
_counts: dict[str, int] = {}


def reached(name: str) -> None:
    """Count a pass through point ``name``; SIGKILL this process on the pass ``NVSYNTH_KILL_AT`` names."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    want, _, count = spec.partition(":")
    if want != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV", "reached"]
