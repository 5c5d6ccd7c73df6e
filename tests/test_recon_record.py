"""The recon record file: save / load round trip and unreadable files (recon/record.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from render_records import make_record

from recon.record import ReconRecord


@pytest.fixture(scope="module")
def record(template_path: Path, shared: Path) -> ReconRecord:
    return make_record(template_path, shared, np.eye(3), np.array([10.0, -5.0, 620.0]), np.array([0.0, 200.0, 0.0]))


def arrays(record: ReconRecord) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(record, f.name)) for f in dataclasses.fields(ReconRecord)}


def test_load_returns_what_save_wrote_as_np_load_reads_it(record: ReconRecord, tmp_path: Path) -> None:
    path = record.save(tmp_path / "p00" / "day01" / "0001.npz")
    smaller = dataclasses.replace(record, vertices=record.vertices[:100], frame_index=7, subject="p14")
    for rec, p in ((record, path), (smaller, smaller.save(tmp_path / "small.npz"))):
        loaded = ReconRecord.load(p)
        with np.load(p, allow_pickle=False) as z:
            for name, want in arrays(rec).items():
                got = getattr(loaded, name)
                ref = z[name]
                if name in ("reprojection_error_px", "frame_index", "detector", "subject", "source_file"):
                    assert type(got) is type(getattr(rec, name)) and got == getattr(rec, name) == ref.item()
                    continue
                assert got.dtype == want.dtype == ref.dtype and got.shape == want.shape, name
                assert np.array_equal(got, want) and got.flags.writeable, name
                assert got.flags.c_contiguous == ref.flags.c_contiguous, name
    assert ReconRecord.load(tmp_path / "small.npz").vertices.shape == (100, 3)


def test_fortran_order_and_large_headers_load_like_np_load(record: ReconRecord, tmp_path: Path) -> None:
    data = arrays(record)
    data["camera_matrix"] = np.asfortranarray(np.arange(9.0).reshape(3, 3))
    path = tmp_path / "fortran.npz"
    np.savez(path, **data)
    got = ReconRecord.load(path).camera_matrix
    assert np.array_equal(got, np.arange(9.0).reshape(3, 3)) and got.flags.f_contiguous
    # A member whose header needs format version 2.0 (over 64 kB) is refused like np.load refuses it (header size).
    data["dist_coeffs"] = np.zeros(2, dtype=[(f"f{i:05d}", "<f4") for i in range(3000)])
    np.savez(path, **data)
    with np.load(path) as z, pytest.raises(ValueError, match="max_header_size"):
        z["dist_coeffs"]
    with pytest.raises(ValueError, match="max_header_size"):
        ReconRecord.load(path)


def test_unreadable_records_raise_value_errors(record: ReconRecord, tmp_path: Path) -> None:
    good = record.save(tmp_path / "good.npz").read_bytes()
    cases = {"garbage": b"not a zip file", "empty": b"", "truncated": good[: len(good) // 2]}
    for name, raw in cases.items():
        (tmp_path / f"{name}.npz").write_bytes(raw)
        with pytest.raises(ValueError):
            ReconRecord.load(tmp_path / f"{name}.npz")
    data = arrays(record)
    del data["gaze_target"]
    np.savez(tmp_path / "missing.npz", **data)
    with pytest.raises(ValueError, match=r"missing keys.*gaze_target"):
        ReconRecord.load(tmp_path / "missing.npz")
    data = arrays(record)
    data["detector"] = np.array([{"pickled": True}], dtype=object)
    np.savez(tmp_path / "pickle.npz", **data)
    with pytest.raises(ValueError):
        ReconRecord.load(tmp_path / "pickle.npz")
    with pytest.raises(OSError):
        ReconRecord.load(tmp_path / "absent.npz")
