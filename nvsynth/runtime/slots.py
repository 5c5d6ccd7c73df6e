"""How many worker slots a run gets: ``workers: auto`` is every CPU this process may use.

See docs/design.md ("Runtime"). ``auto`` counts the CPUs in this process's
affinity mask (:func:`os.sched_getaffinity`: what ``taskset``, cgroup cpusets
and cluster schedulers such as Slurm leave it), not the machine's CPU count.
An explicit number is kept as asked; asking for more workers than usable CPUs
prints one warning line on stderr (once per process and stage), since the
workers then share cores and each runs slower. The output never depends on the
count (docs/design.md, "Conventions").
"""

from __future__ import annotations

import os
import sys

_WARNED: set[str] = set()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def worker_count(setting: int | str, stage: str, local: bool = True) -> int:
    """The number of workers for ``setting`` (an integer >= 1 or ``"auto"``) of ``stage`` ("recon", "render").

    ``local=False`` (the workers run on a Ray cluster): no warning about this machine's CPUs (``auto`` is
    then this machine's count, which the Ray executor replaces by the cluster's).
    """
    cpus = usable_cpus()
    if setting == "auto":
        return cpus
    workers = int(setting)
    if local and workers > cpus and stage not in _WARNED:
        _WARNED.add(stage)
        print(
            f"nvsynth {stage}: warning: {workers} workers for the {cpus} CPU(s) this process may use; "
            "they will share cores (workers: auto uses each once)",
            file=sys.stderr,
        )
    return workers


__all__ = ["usable_cpus", "worker_count"]
