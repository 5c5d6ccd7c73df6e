"""Durable units of a render run: what survives SIGKILL, power loss and a full disk. See docs/reliability.md.

A subject's rows are committed in *units* of whole sources, at least
``render.unit_rows`` rows each (256 by default), as they come back from the
workers in frame order:

    OUTDIR/<subject>.h5.parts/unit-000000.unit, unit-000001.unit, ...

Each unit is one file (:mod:`nvsynth.runtime.unit_file`) written through
:func:`nvsynth.core.atomic.atomic_path` (temporary file, ``fsync``, rename,
``fsync`` of the folder): a unit file either exists complete or not at all.
It holds the rows of every dataset of the schema (the image rows as the
lzf chunks the workers made: bytes, offsets and filter masks) and a ``meta``
JSON: format, subject, the run's config hash, and per source its frame index,
row count and skips.

Resume (:meth:`UnitStore.committed`) keeps the longest run of units numbered
0, 1, 2, ... whose sources are exactly the start of this run's source list
and whose config hash is this run's; it redoes the rest. The subject's HDF5
file is never what a resume relies on: it is rebuilt from the kept units,
in the same batches as an uninterrupted run writes it (so its bytes are the
same), then rendering continues. When the subject's file is complete and
renamed into place, the parts folder is removed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvsynth.core.atomic import atomic_path, fsync_dir
from nvsynth.core.errors import OutputError, io_guard
from nvsynth.core.h5io import EncodedRows, concat_rows
from nvsynth.core.schema import FIELDS, Field
from nvsynth.render.stage import Skip
from nvsynth.runtime.unit_file import DAMAGED, read_unit_file, read_unit_meta, write_unit_file

UNIT_FORMAT = 1
PARTS_SUFFIX = ".parts"
UNIT_SUFFIX = ".unit"
_UNIT_RE = re.compile(r"^unit-(\d{6})\.unit$")


class DamagedUnitError(OutputError):
    """A kept unit whose rows cannot be read after all (its header was sound); it is redone."""


def parts_path(final: Path) -> Path:
    """``OUTDIR/<subject>.h5.parts``: the folder of a subject's committed units."""
    return final.with_name(final.name + PARTS_SUFFIX)


@dataclass(frozen=True)
class SourceRows:
    """One source inside a unit: its frame index, its row count, what was skipped."""

    frame: int
    rows: int
    skips: tuple[Skip, ...]

    def as_json(self) -> dict[str, Any]:
        return {"frame": self.frame, "rows": self.rows, "skips": [s.as_json() for s in self.skips]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SourceRows:
        return cls(int(d["frame"]), int(d["rows"]), tuple(Skip.from_json(s) for s in d["skips"]))


@dataclass(frozen=True)
class Unit:
    """A committed unit: its file, number and sources."""

    path: Path
    number: int
    sources: tuple[SourceRows, ...]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.sources)


def split_rows(batch: dict[str, Any], sizes: Sequence[int]) -> Iterator[dict[str, Any] | None]:
    """A batch cut into consecutive pieces of ``sizes`` rows (``None`` for an empty piece)."""
    start = 0
    for n in sizes:
        if n == 0:
            yield None
            continue
        piece: dict[str, Any] = {}
        for k, col in batch.items():
            if isinstance(col, EncodedRows):
                piece[k] = EncodedRows(col.shape, col.dtype, col.chunks[start : start + n])
            else:
                piece[k] = col[start : start + n]
        yield piece
        start += n


class UnitStore:
    """The committed units of one subject of one run (see the module docstring)."""

    def __init__(self, folder: Path, subject: str, config_hash: str, fields: Sequence[Field] = FIELDS) -> None:
        self.folder = Path(folder)
        self.subject = subject
        self.config_hash = config_hash
        self.fields = tuple(fields)

    def exists(self) -> bool:
        return self.folder.is_dir()

    def unit_path(self, number: int) -> Path:
        return self.folder / f"unit-{number:06d}{UNIT_SUFFIX}"

    def committed(self, frames: Sequence[int]) -> tuple[list[Unit], list[str]]:
        """The units a resume keeps, and notes on those it drops.

        Kept: units 0, 1, 2, ... in turn, each readable, of this subject and
        configuration, and holding exactly the next sources of ``frames`` (this
        run's source list). The first unit that fails ends the list.
        """
        if not self.exists():
            return [], []
        with io_guard(self.folder, "list the committed units"):
            names = {int(m.group(1)): p for p in self.folder.iterdir() if (m := _UNIT_RE.match(p.name))}
        kept: list[Unit] = []
        notes: list[str] = []
        at = 0
        for number in range(len(names) + 1):
            path = names.get(number)
            if path is None:
                break
            try:
                meta = read_unit_meta(path)
                sources = tuple(SourceRows.from_json(d) for d in meta["sources"])
            except DAMAGED as err:
                notes.append(f"{path.name} is damaged ({_first_line(err)}): redone")
                break
            if meta.get("format") != UNIT_FORMAT or meta.get("subject") != self.subject:
                notes.append(f"{path.name} is not a unit of this subject: redone")
                break
            if meta.get("config_hash") != self.config_hash:
                raise OutputError(
                    f"{path}: made with another configuration (config_hash {meta.get('config_hash')}, this run "
                    f"{self.config_hash}); rerun with the same configuration, or remove {self.folder}"
                )
            want = list(frames[at : at + len(sources)])
            if [s.frame for s in sources] != want:
                notes.append(f"{path.name} holds other sources than this run's: redone from there")
                break
            kept.append(Unit(path, number, sources))
            at += len(sources)
        self.drop_from(len(kept))
        return kept, notes

    def drop_from(self, number: int) -> None:
        """Remove the units numbered ``number`` and above (they are redone)."""
        if not self.exists():
            return
        with io_guard(self.folder, "remove units that are redone"):
            for p in self.folder.iterdir():
                m = _UNIT_RE.match(p.name)
                if m and int(m.group(1)) >= number:
                    p.unlink(missing_ok=True)

    def read(self, unit: Unit) -> Iterator[tuple[SourceRows, dict[str, Any] | None]]:
        """Each source of a committed unit with its rows (``None`` when it has none)."""
        try:
            _, batch = read_unit_file(unit.path, self.fields)
            if len(batch[self.fields[0].name]) != unit.rows:
                raise ValueError(f"{len(batch[self.fields[0].name])} rows, its sources say {unit.rows}")
        except DAMAGED as err:
            raise DamagedUnitError(f"{unit.path.name} is damaged ({_first_line(err)}): redone") from None
        yield from zip(unit.sources, split_rows(batch, [s.rows for s in unit.sources]), strict=True)

    def write(self, number: int, sources: Sequence[tuple[SourceRows, dict[str, Any] | None]]) -> Unit:
        """Commit one unit durably (temporary file, fsync, rename, fsync of the folder)."""
        with io_guard(self.folder, "create the folder of committed units"):
            created = not self.folder.is_dir()
            self.folder.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self.folder.parent)
        meta = {
            "format": UNIT_FORMAT,
            "subject": self.subject,
            "config_hash": self.config_hash,
            "sources": [s.as_json() for s, _ in sources],
        }
        batch = concat_rows(self.fields, [cols for _, cols in sources if cols is not None])
        path = self.unit_path(number)
        with io_guard(path, "commit a unit of rows"), atomic_path(path) as tmp:
            write_unit_file(tmp, meta, self.fields, batch)
        return Unit(path, number, tuple(s for s, _ in sources))

    def clean_temporary(self) -> None:
        """Remove the temporary files of units a kill interrupted (they were never committed)."""
        if not self.exists():
            return
        with io_guard(self.folder, "clean the folder of committed units"):
            for p in self.folder.iterdir():
                if p.name.startswith(".") and p.name.endswith(".tmp" + UNIT_SUFFIX):
                    p.unlink(missing_ok=True)

    def remove(self) -> None:
        """Remove the folder (after the subject's file is in place)."""
        if self.exists():
            with io_guard(self.folder, "remove the folder of committed units"):
                shutil.rmtree(self.folder)
            fsync_dir(self.folder.parent)


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


__all__ = [
    "PARTS_SUFFIX",
    "UNIT_FORMAT",
    "UNIT_SUFFIX",
    "DamagedUnitError",
    "SourceRows",
    "Unit",
    "UnitStore",
    "parts_path",
    "split_rows",
]
