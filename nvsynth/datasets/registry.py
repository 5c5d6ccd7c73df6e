"""Readers by name: ``data.kind`` (or ``--input-kind``) picks one, ``auto`` detects it from the path.

See docs/design.md ("Datasets"). A :class:`Reader` is a name, a test of
whether a path holds its layout, and a constructor of a
:class:`~nvsynth.datasets.base.Dataset`. ``auto`` tries the readers in
registration order and takes the first whose test passes. To add a reader,
write its module (a ``Dataset`` and a ``looks_like`` test) and
:func:`register` it below; add its name to ``data.kind`` in
``nvsynth/core/config.py`` and to the README's table of inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nvsynth.core.errors import ConfigError, DatasetError
from nvsynth.datasets.base import Dataset
from nvsynth.datasets.folder import FolderDataset, looks_like_folder
from nvsynth.datasets.mpii import MpiiDataset, looks_like_mpii
from nvsynth.datasets.xgaze_h5 import XGazeH5Dataset, looks_like_xgaze_h5

AUTO = "auto"


@dataclass(frozen=True)
class Reader:
    """A registered dataset reader."""

    name: str
    looks_like: Callable[[Path], bool]  # whether ``path`` holds this layout (cheap: no full read)
    open: Callable[[Path], Dataset]
    layout: str  # one line for messages and the README


READERS: dict[str, Reader] = {}


def register(reader: Reader) -> None:
    """Add a reader (names are unique)."""
    if reader.name in READERS or reader.name == AUTO:
        raise ValueError(f"a dataset reader named {reader.name!r} exists")
    READERS[reader.name] = reader


register(Reader("folder", looks_like_folder, FolderDataset, "a folder of images with labels.csv"))
register(Reader("mpiifacegaze", looks_like_mpii, MpiiDataset, "MPIIFaceGaze: pXX/pXX.txt, pXX/Calibration"))
register(Reader("xgaze-h5", looks_like_xgaze_h5, XGazeH5Dataset, "ETH-XGaze-layout .h5 (a file or a folder)"))


def detect_kind(path: Path) -> str:
    """The first reader whose layout ``path`` holds; ``DatasetError`` when none does."""
    for reader in READERS.values():
        if reader.looks_like(path):
            return reader.name
    known = "; ".join(f"{r.name}: {r.layout}" for r in READERS.values())
    raise DatasetError(f"cannot tell which dataset this is ({known}); set data.kind or --input-kind", path)


def open_dataset(path: Path | None, kind: str = AUTO) -> Dataset:
    """The dataset at ``path`` read by reader ``kind`` (``auto``: detected)."""
    if path is None:
        raise ConfigError("data.input is not set: point it (or --input) at the dataset to read")
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"input not found: {path} (data.input / --input)")
    if kind != AUTO and kind not in READERS:
        raise ConfigError(f"unknown dataset kind '{kind}' (known: {', '.join([AUTO, *READERS])})")
    name = detect_kind(path) if kind == AUTO else kind
    return READERS[name].open(path)
