"""Progress bars of a run, in the main process only (tqdm, with rate and ETA). See docs/design.md ("Runtime").

Workers never draw: the main process advances a bar as each result of
:meth:`nvsynth.runtime.executor.Executor.map` arrives, so one bar per subject
shows the whole run's rate whatever the number of workers.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str, initial: int = 0) -> tqdm[Any]:
    """A bar on stderr with count, rate and ETA; close it (or use it as a context manager) when done."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5, leave=True)
