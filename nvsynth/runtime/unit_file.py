"""The file format of one durable unit (:mod:`nvsynth.runtime.units`): rows as the writer takes them.

A unit is written once and read at most once (by a resume), so the format is
the cheapest that holds the rows exactly, with no pickling and no second copy
of the image bytes::

    b"NVSUNIT1"                  magic
    uint64 little-endian         length of the header
    header (UTF-8 JSON)          meta (subject, config hash, sources), rows, the size of the parts,
                                 the string columns, and per binary part its offset, size, dtype, shape
    parts                        numeric columns as raw little-endian arrays; per image column the
                                 concatenated lzf chunks, their offsets (int64) and filter masks (uint32)

The file is complete by construction (written to a temporary name, ``fsync``,
renamed); reading checks the magic, the header, the recorded size of the parts and
that every part lies inside the file and fits the rows, and reports anything
else as damage (:data:`DAMAGED`). There is no checksum of the image bytes:
like the HDF5 output, the format trusts the disk with data that was ``fsync``ed.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nvsynth.core.h5io import EncodedRows
from nvsynth.core.schema import Field

MAGIC = b"NVSUNIT1"
_LEN = struct.Struct("<Q")
#: What reading a damaged unit file raises.
DAMAGED = (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error)


def write_unit_file(path: Path, meta: dict[str, Any], fields: Sequence[Field], batch: dict[str, Any]) -> None:
    """Write ``batch`` (rows of every field; image fields as :class:`EncodedRows`) and ``meta`` to ``path``."""
    parts: dict[str, dict[str, Any]] = {}
    blobs: list[list[bytes | memoryview]] = []
    strings: dict[str, list[str]] = {}
    offset = 0
    n = len(batch[fields[0].name]) if fields else 0

    def add(name: str, pieces: list[bytes | memoryview], nbytes: int, dtype: str, shape: list[int]) -> None:
        nonlocal offset
        parts[name] = {"offset": offset, "nbytes": nbytes, "dtype": dtype, "shape": shape}
        blobs.append(pieces)
        offset += nbytes

    for f in fields:
        col = batch[f.name]
        if isinstance(col, EncodedRows):
            chunks = [b for _, b in col.chunks]
            sizes = np.array([len(b) for b in chunks], dtype=np.int64)
            offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(sizes)]).astype("<i8")
            masks = np.array([m for m, _ in col.chunks], dtype="<u4")
            add(f"{f.name}.data", chunks, int(sizes.sum()), "|u1", [int(sizes.sum())])
            add(f"{f.name}.offsets", [memoryview(offsets).cast("B")], offsets.nbytes, "<i8", [len(offsets)])
            add(f"{f.name}.masks", [memoryview(masks).cast("B")], masks.nbytes, "<u4", [len(masks)])
        elif f.dtype == "str":
            strings[f.name] = [str(v) for v in col]
        else:
            arr = np.ascontiguousarray(col, dtype=np.dtype(f.dtype).newbyteorder("<"))
            add(f.name, [memoryview(arr).cast("B")], arr.nbytes, arr.dtype.str, list(arr.shape))
    header = {"meta": meta, "rows": n, "strings": strings, "parts": parts, "data_bytes": offset}
    text = json.dumps(header).encode("utf-8")
    with open(path, "wb") as fh:
        fh.write(MAGIC)
        fh.write(_LEN.pack(len(text)))
        fh.write(text)
        for pieces in blobs:
            fh.writelines(pieces)


def _header(fh: Any) -> dict[str, Any]:
    """The header; also checks that the file is as long as the header says."""
    if fh.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a unit file")
    (length,) = _LEN.unpack(fh.read(_LEN.size))
    if length > 1 << 30:
        raise ValueError("header too long")
    text = fh.read(length)
    if len(text) != length:
        raise ValueError("header cut short")
    header = json.loads(text.decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(header.get("meta"), dict):
        raise ValueError("malformed header")
    size = os.fstat(fh.fileno()).st_size
    want = len(MAGIC) + _LEN.size + length + int(header["data_bytes"])
    if size != want:
        raise ValueError(f"{size} bytes, the header says {want}")
    return header


def read_unit_meta(path: Path) -> dict[str, Any]:
    """The ``meta`` of a unit file (its header only)."""
    with open(path, "rb") as fh:
        return _header(fh)["meta"]


def read_unit_file(path: Path, fields: Sequence[Field]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, batch)`` of a unit file; raises one of :data:`DAMAGED` if it does not hold what it says."""
    with open(path, "rb") as fh:
        header = _header(fh)
        data = fh.read()
    if len(data) != int(header["data_bytes"]):
        raise ValueError(f"{len(data)} bytes of data, the header says {header['data_bytes']}")
    n = int(header["rows"])
    view = memoryview(data)

    def part(name: str) -> tuple[memoryview, dict[str, Any]]:
        p = header["parts"][name]
        lo, size = int(p["offset"]), int(p["nbytes"])
        if lo < 0 or size < 0 or lo + size > len(data):
            raise ValueError(f"part {name} lies outside the file")
        return view[lo : lo + size], p

    batch: dict[str, Any] = {}
    for f in fields:
        if f.image:
            blob, _ = part(f"{f.name}.data")
            offs = np.frombuffer(part(f"{f.name}.offsets")[0], dtype="<i8")
            masks = np.frombuffer(part(f"{f.name}.masks")[0], dtype="<u4")
            fits = len(offs) == n + 1 and len(masks) == n and offs[0] == 0 and offs[-1] == len(blob)
            if not fits or np.any(np.diff(offs) < 0):
                raise ValueError(f"{f.name}: chunk index does not fit {n} rows")
            chunks = tuple((int(masks[i]), bytes(blob[offs[i] : offs[i + 1]])) for i in range(n))
            batch[f.name] = EncodedRows(f.shape, f.dtype, chunks)
        elif f.dtype == "str":
            col = header["strings"][f.name]
            if len(col) != n or not all(isinstance(v, str) for v in col):
                raise ValueError(f"{f.name}: not {n} strings")
            batch[f.name] = list(col)
        else:
            raw, p = part(f.name)
            arr = np.frombuffer(raw, dtype=np.dtype(p["dtype"])).reshape(p["shape"])
            if arr.shape != (n, *f.shape):
                raise ValueError(f"{f.name}: shape {arr.shape}, expected {(n, *f.shape)}")
            batch[f.name] = arr.astype(f.dtype, copy=False)
    return header["meta"], batch


__all__ = ["DAMAGED", "MAGIC", "read_unit_file", "read_unit_meta", "write_unit_file"]
