"""HDF5 output in the ETH-XGaze layout: one file per subject, ``OUTDIR/<subject>.h5``.

See docs/design.md ("Output schema"). The writer and the validator here read
the one schema, :mod:`nvsynth.core.schema` (datasets, dtypes, shapes,
attributes); nothing here defines a dataset. Files are written to
``<subject>.h5.partial`` in the same folder and renamed when complete, so a
final file is never half-written and never appended to.
ETH-XGaze's ``data_loader.py`` opens them unchanged:
``h5py.File(path, 'r', swmr=True)``, ``face_patch[idx]`` (BGR), ``face_gaze[idx]``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nvsynth.core.atomic import fsync_dir
from nvsynth.core.errors import OutputError
from nvsynth.core.schema import (
    CORE_FIELDS,
    DATASET_ATTR_SPECS,
    FILE_ATTR_BY_NAME,
    REQUIRED_FIELDS,
    ROWS_ATTR,
    Field,
    attr_problem,
    dataset_attrs_of,
)

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class EncodedRows:
    """Rows of an image field, each already compressed as its one-row chunk (``(filter_mask, bytes)``)."""

    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[tuple[int, bytes], ...]

    def __len__(self) -> int:
        return len(self.chunks)


_ENCODE_COUNTER = itertools.count()

try:  # liblzf's own compressor (optional, ``pip install pylzf``): ~2.5x faster than h5py's lzf build here
    import pylzf as _pylzf
except ImportError:  # pragma: no cover - depends on the environment
    _pylzf = None

#: Filter mask of a chunk stored without its (optional) lzf filter: lzf is filter 0 of the pipeline.
_LZF_SKIPPED = 1


def lzf_backend() -> str:
    """Which compressor makes the lzf chunks: ``"pylzf"`` (liblzf) or ``"h5py"`` (HDF5's filter pipeline)."""
    return "h5py" if _pylzf is None else "pylzf"


def _lzf_chunk(row: np.ndarray) -> tuple[int, bytes]:
    """One row as the chunk HDF5's optional lzf filter stores: compressed, or as it is when lzf cannot shrink it."""
    flat = row.reshape(-1).view(np.uint8)
    assert _pylzf is not None
    try:
        # the output may be at most as long as the input, as in h5py's filter
        return 0, _pylzf.compress(flat, flat.nbytes)
    except ValueError:  # does not fit: HDF5 skips an optional filter that fails
        return _LZF_SKIPPED, flat.tobytes()


def encode_rows(fld: Field, rows: np.ndarray) -> EncodedRows:
    """Compress the rows of image field ``fld`` as one-row lzf chunks, ready for a direct chunk write.

    With ``pylzf`` installed, liblzf compresses each row directly (a valid lzf
    stream that h5py's filter, and any HDF5 reader with the lzf plugin,
    decodes); otherwise HDF5's own lzf filter runs on an in-memory file. Either
    way the work can be done in another process (e.g. a render worker) and
    the writer only copies bytes. :meth:`H5Writer.append` stores plain image
    rows through this function too, so both routes give the same file.
    """
    if not fld.image:
        raise ValueError(f"{fld.name} is not an image field")
    arr = np.ascontiguousarray(rows, dtype=fld.dtype)
    if arr.shape[1:] != fld.shape:
        raise ValueError(f"{fld.name}: shape {arr.shape[1:]} per row, expected {fld.shape}")
    if len(arr) == 0:
        return EncodedRows(fld.shape, fld.dtype, ())
    if _pylzf is not None:
        return EncodedRows(fld.shape, fld.dtype, tuple(_lzf_chunk(r) for r in arr))
    name = f"nvsynth-encode-{os.getpid()}-{next(_ENCODE_COUNTER)}"
    zeros = (0,) * len(fld.shape)
    with h5py.File(name, "w", driver="core", backing_store=False) as f:
        ds = f.create_dataset("rows", data=arr, chunks=(1, *fld.shape), compression="lzf")
        chunks = tuple(ds.id.read_direct_chunk((i, *zeros)) for i in range(len(arr)))
    return EncodedRows(fld.shape, fld.dtype, tuple((int(m), bytes(b)) for m, b in chunks))


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL_SUFFIX)


class H5Writer:
    """Streams rows into ``<final>.partial``; :meth:`commit` renames it to ``final``.

    With ``resume=True`` an existing readable partial file is reopened and the
    rows committed so far are kept (rows past the last commit are dropped).
    ``attrs`` are written as file attributes (nvsynth version, config hash,
    seed, pattern, ...); ``dataset_attrs`` maps a field name to attributes of
    its dataset (e.g. ``{"variant": {"names": [...]}}``), written on creation;
    by default those the schema gives the fields (:data:`~nvsynth.core.schema.DATASET_ATTRS`).
    """

    def __init__(
        self,
        final: Path,
        fields: Sequence[Field] = CORE_FIELDS,
        attrs: Mapping[str, Any] | None = None,
        resume: bool = False,
        dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.final = Path(final)
        self.partial = partial_path(self.final)
        self.fields = tuple(fields)
        self._names = {f.name for f in self.fields}
        unknown = set(dataset_attrs or {}) - self._names
        if unknown:
            raise ValueError(f"dataset_attrs for unknown fields {sorted(unknown)}")
        self._dataset_attrs = dict(dataset_attrs_of(self.fields) if dataset_attrs is None else dataset_attrs)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._f: h5py.File | None = None
        if resume and self.partial.exists():
            self._f = self._reopen()
        if self._f is None:
            self._f = self._create(attrs or {})

    # -- setup ----------------------------------------------------------------
    def _create(self, attrs: Mapping[str, Any]) -> h5py.File:
        f = h5py.File(self.partial, "w", libver="latest")
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs[ROWS_ATTR] = 0
        for fld in self.fields:
            if fld.image:
                kw: dict[str, Any] = {"chunks": (1, *fld.shape), "compression": "lzf"}
            else:
                kw = {"chunks": (256, *fld.shape)}
            f.create_dataset(fld.name, shape=(0, *fld.shape), maxshape=(None, *fld.shape), dtype=fld.h5_dtype(), **kw)
            for k, v in self._dataset_attrs.get(fld.name, {}).items():
                f[fld.name].attrs[k] = v
        return f

    def _reopen(self) -> h5py.File | None:
        try:
            f = h5py.File(self.partial, "a")
            rows = int(f.attrs[ROWS_ATTR])
            if set(f.keys()) != self._names:
                f.close()
                return None
            for name in self._names:
                if f[name].shape[0] < rows:
                    f.close()
                    return None
                f[name].resize(rows, axis=0)
            return f
        except (OSError, KeyError):
            return None

    # -- writing ----------------------------------------------------------------
    @property
    def rows(self) -> int:
        assert self._f is not None
        return int(self._f.attrs[ROWS_ATTR])

    def read_column(self, name: str) -> np.ndarray:
        """The committed rows of one dataset (used by resume to skip done work)."""
        assert self._f is not None
        return self._f[name][: self.rows]

    def append(self, batch: Mapping[str, np.ndarray | Sequence[str] | EncodedRows]) -> None:
        """Append rows; every field must be present with the schema's shape.

        An image field may come as :class:`EncodedRows` (chunks compressed
        elsewhere by :func:`encode_rows`); they are stored as they are. Plain
        image rows are compressed here by :func:`encode_rows`.
        """
        assert self._f is not None, "writer is closed"
        if set(batch) != self._names:
            missing = self._names - set(batch)
            extra = set(batch) - self._names
            raise ValueError(f"batch keys mismatch: missing {sorted(missing)}, extra {sorted(extra)}")
        n = len(batch[self.fields[0].name])
        start = self.rows
        for fld in self.fields:
            data = batch[fld.name]
            ds = self._f[fld.name]
            if fld.image and not isinstance(data, EncodedRows):
                arr = np.asarray(data, dtype=fld.dtype)
                if arr.shape != (n, *fld.shape):
                    raise ValueError(f"{fld.name}: shape {arr.shape}, expected {(n, *fld.shape)}")
                data = encode_rows(fld, arr)  # the same chunks as rows encoded elsewhere
            if isinstance(data, EncodedRows):
                if not fld.image or data.shape != fld.shape or data.dtype != fld.dtype or len(data) != n:
                    raise ValueError(f"{fld.name}: encoded rows {len(data)} x {data.shape} {data.dtype} do not fit")
                ds.resize(start + n, axis=0)
                zeros = (0,) * len(fld.shape)
                for i, (mask, chunk) in enumerate(data.chunks):
                    ds.id.write_direct_chunk((start + i, *zeros), chunk, mask)
                continue
            arr = np.asarray(list(data), dtype=object) if fld.dtype == "str" else np.asarray(data, dtype=fld.dtype)
            if arr.shape != (n, *fld.shape):
                raise ValueError(f"{fld.name}: shape {arr.shape}, expected {(n, *fld.shape)}")
            ds.resize(start + n, axis=0)
            ds[start : start + n] = arr
        self._f.attrs[ROWS_ATTR] = start + n
        self._f.flush()

    def attrs(self) -> dict[str, Any]:
        """The file attributes as they are now (a reopened partial keeps those of the run that made it)."""
        assert self._f is not None
        return {k: self._f.attrs[k] for k in self._f.attrs}

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        assert self._f is not None
        for k, v in attrs.items():
            self._f.attrs[k] = v

    def close(self) -> None:
        """Close without publishing (the partial file stays for ``--resume``)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def commit(self) -> Path:
        """Close and atomically rename the partial file to its final name."""
        self.close()
        with open(self.partial, "rb+") as fh:  # durable before it is published
            os.fsync(fh.fileno())
        os.replace(self.partial, self.final)
        fsync_dir(self.final.parent)
        return self.final

    def __enter__(self) -> H5Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()


# -- reading -------------------------------------------------------------------


def open_h5(path: Path) -> h5py.File:
    """Open an output file read-only; a corrupt or truncated file is an :class:`OutputError`.

    Not in SWMR mode (ETH-XGaze's loader uses ``swmr=True``, which reads these
    files just as well): a SWMR reader tolerates a file shorter than its
    superblock says, as if a writer were still extending it, and HDF5 then
    retries for minutes instead of reporting the truncation.
    """
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise OutputError(f"{path}: not a readable HDF5 file ({str(err).splitlines()[0]})") from None


def validate_schema(
    f: h5py.File, fields: Sequence[Field] = REQUIRED_FIELDS, optional: Sequence[Field] = ()
) -> list[str]:
    """Problems with keys, shapes, dtypes, attributes and row counts; empty when the file conforms.

    ``fields`` must be present; ``optional`` ones (e.g. every field of the
    schema) are checked where present.
    File attributes and dataset attributes the schema names are checked where
    present (a foreign ETH-XGaze file has none); a dataset the schema gives
    attributes must carry them.
    """
    problems: list[str] = []
    rows: dict[str, int] = {}
    required = {fld.name for fld in fields}
    present = [fld for fld in optional if fld.name in f and fld.name not in required]
    for fld in (*fields, *present):
        if fld.name not in f:
            problems.append(f"missing key '{fld.name}'")
            continue
        ds = f[fld.name]
        if ds.shape[1:] != fld.shape:
            problems.append(f"'{fld.name}': shape {ds.shape[1:]} per row, expected {fld.shape}")
        if fld.dtype == "str":
            if h5py.check_string_dtype(ds.dtype) is None:
                problems.append(f"'{fld.name}': dtype {ds.dtype}, expected UTF-8 string")
        elif ds.dtype != np.dtype(fld.dtype):
            problems.append(f"'{fld.name}': dtype {ds.dtype}, expected {fld.dtype}")
        for spec in DATASET_ATTR_SPECS.get(fld.name, ()):
            if spec.name not in ds.attrs:
                problems.append(f"'{fld.name}': missing attribute '{spec.name}'")
            elif (why := attr_problem(spec, ds.attrs[spec.name])) is not None:
                problems.append(f"'{fld.name}': {why}")
        rows[fld.name] = ds.shape[0] if ds.ndim else 0
    for key in f.attrs:
        spec = FILE_ATTR_BY_NAME.get(key)
        if spec is not None and (why := attr_problem(spec, f.attrs[key])) is not None:
            problems.append(why)
    for name in f:
        if isinstance(f[name], h5py.Dataset) and f[name].ndim and name not in rows:
            rows[name] = f[name].shape[0]
    if len(set(rows.values())) > 1:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(rows.items()))
        problems.append(f"mismatched row counts: {counts}")
    return problems


def concat_rows(fields: Sequence[Field], parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several batches of rows (e.g. one per source) as one batch for :meth:`H5Writer.append`.

    Encoded image rows stay encoded; with no parts the batch has zero rows.
    """
    out: dict[str, Any] = {}
    for f in fields:
        cols = [p[f.name] for p in parts]
        if cols and all(isinstance(c, EncodedRows) for c in cols):
            out[f.name] = EncodedRows(f.shape, f.dtype, tuple(chunk for c in cols for chunk in c.chunks))
        elif f.dtype == "str":
            out[f.name] = [v for c in cols for v in c]
        elif cols:
            out[f.name] = np.concatenate([np.asarray(c, dtype=f.dtype) for c in cols])
        else:
            out[f.name] = np.zeros((0, *f.shape), dtype=f.dtype)
    return out
