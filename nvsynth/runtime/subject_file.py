"""A subject's final HDF5 file, written from a stream of sources in frame order. See docs/reliability.md.

The rows of each source are appended in batches of whole sources (at least
:data:`WRITE_ROWS` rows, ~10-20 ms of overhead per append for the 20
datasets), each with the file attributes ``progress_frame`` (the batch's last
source) and ``skipped_views`` (every skip so far). The batches depend only on
the sequence of sources and their row counts, never on how the run was split
by kills and resumes or on the durable units (:mod:`nvsynth.runtime.units`),
so the file's bytes are those of an uninterrupted run.

The file is ``<subject>.h5.partial`` until :meth:`SubjectFile.commit` fsyncs
and renames it. A run that stops or fails removes it (:meth:`SubjectFile.discard`);
one left by a kill is never read again (a resume rebuilds the file from the
committed units and truncates it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nvsynth.core.errors import io_guard
from nvsynth.core.h5io import H5Writer, concat_rows
from nvsynth.core.schema import FIELDS, PROGRESS_ATTR, SKIPS_ATTR, Field
from nvsynth.render.stage import Skip
from nvsynth.runtime import failpoints

#: Rows buffered before one h5 append.
WRITE_ROWS = 128
NO_SPACE_HINT = "free some space (or raise the limit), then run the same command with --resume"


class SubjectFile:
    """Writes ``final`` (via ``final.partial``) from sources added in frame order."""

    def __init__(
        self, final: Path, attrs: Mapping[str, Any], skips: Iterable[Skip] = (), fields: Sequence[Field] = FIELDS
    ) -> None:
        self.final = Path(final)
        self.fields = tuple(fields)  # the schema's datasets of this file (schema.output_fields)
        with io_guard(self.final.with_name(self.final.name + ".partial"), "create the output file", NO_SPACE_HINT):
            self._writer = H5Writer(self.final, self.fields, attrs=attrs)
        self.skips: dict[tuple[int, int, str], Skip] = {s.key: s for s in skips}
        self._pending: list[tuple[int, dict[str, Any] | None]] = []
        self._pending_rows = 0

    @property
    def rows(self) -> int:
        return self._writer.rows + self._pending_rows

    def add(self, frame: int, columns: dict[str, Any] | None, skips: Iterable[Skip], rows: int) -> None:
        """One source's rows (``None`` when it has none) and skips."""
        for s in skips:
            self.skips[s.key] = s
        self._pending.append((frame, columns))
        self._pending_rows += rows
        if self._pending_rows >= WRITE_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        with io_guard(self._writer.partial, "write the output file", NO_SPACE_HINT):
            skipped = json.dumps([s.as_json() for s in self.skips.values()])
            self._writer.set_attrs({PROGRESS_ATTR: int(self._pending[-1][0]), SKIPS_ATTR: skipped})
            self._writer.append(concat_rows(self.fields, [c for _, c in self._pending if c is not None]))
        self._pending.clear()
        self._pending_rows = 0

    def commit(self) -> Path:
        """Write what is pending, fsync, rename to the final name (atomic)."""
        self._flush()
        failpoints.reached("commit")
        with io_guard(self._writer.partial, "finish the output file", NO_SPACE_HINT):
            return self._writer.commit()

    def discard(self) -> None:
        """Close and remove the partial file (a resume rebuilds it from the committed units; it frees the space)."""
        with contextlib.suppress(OSError, RuntimeError):
            self._writer.close()  # a file that cannot even be closed (disk full) is rebuilt anyway
        with contextlib.suppress(OSError):
            self._writer.partial.unlink(missing_ok=True)


__all__ = ["NO_SPACE_HINT", "WRITE_ROWS", "SubjectFile"]
