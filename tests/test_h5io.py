"""HDF5 schema (issue 2): writer/reader round trip, ETH-XGaze compatibility, chunking, atomic commit, resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from nvsynth.core import h5io, schema
from nvsynth.core.errors import OutputError

EXTRA = (
    schema.Field("variant", (), "int8", "appearance variant"),
    schema.Field("target_pose", (2,), "float32", "sampled target (pitch, yaw)"),
)
FIELDS = schema.CORE_FIELDS + EXTRA
NAMES = ["black", "black-dark", "color", "color-dark", "image", "image-dark"]


def _batch(n: int, start: int, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed + start)
    patch = rng.integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
    patch[:, :, :, 0] = 10  # B
    patch[:, :, :, 2] = 250  # R: channel order is visible
    return {
        "face_patch": patch,
        "face_mask": (rng.random((n, 224, 224)) > 0.5).astype(np.uint8) * 255,
        "face_gaze": rng.uniform(-0.5, 0.5, (n, 2)),
        "face_head_pose": rng.uniform(-0.5, 0.5, (n, 2)),
        "rotation_matrix": np.repeat(np.eye(3)[None], n, axis=0),
        "face_mat_norm": np.repeat(np.eye(3)[None], n, axis=0),
        "landmarks_norm": rng.uniform(0, 224, (n, 68, 2)),
        "frame_index": np.arange(start, start + n),
        "source_file": [f"p00/day01/{i:04d}.jpg" for i in range(start, start + n)],
        "variant": rng.integers(0, 6, n),
        "target_pose": rng.uniform(-1, 1, (n, 2)),
    }


def _concat(*batches: dict[str, object]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def _write(path: Path, *batches: dict[str, object]) -> Path:
    w = h5io.H5Writer(
        path, FIELDS, attrs={"seed": 3, "pattern": "gaussian"}, dataset_attrs={"variant": {"names": NAMES}}
    )
    for b in batches:
        w.append(b)
    return w.commit()


def test_round_trip(tmp_path: Path) -> None:
    b1, b2 = _batch(3, 0), _batch(2, 3)
    path = _write(tmp_path / "p00.h5", b1, b2)
    want = _concat(b1, b2)
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {fld.name for fld in FIELDS}
        assert f.attrs["seed"] == 3 and f.attrs["pattern"] == "gaussian" and f.attrs[h5io.ROWS_ATTR] == 5
        assert list(f["variant"].attrs["names"]) == NAMES
        for fld in FIELDS:
            ds = f[fld.name]
            assert ds.shape == (5, *fld.shape), fld.name
            if fld.dtype == "str":
                assert h5py.check_string_dtype(ds.dtype).encoding == "utf-8"
                assert [s.decode() for s in ds[:]] == list(want[fld.name])
                assert list(ds.asstr()[:]) == list(want[fld.name])
            else:
                assert ds.dtype == np.dtype(fld.dtype), fld.name
                np.testing.assert_array_equal(ds[:], want[fld.name].astype(fld.dtype))
        assert h5io.validate_schema(f, FIELDS) == []


def test_opens_as_eth_xgaze_data_loader_does(tmp_path: Path) -> None:
    """The calls of ETH-XGaze's data_loader.py (GazeDataset.__init__ / __getitem__), verbatim."""
    b = _batch(4, 0)
    path = _write(tmp_path / "p00.h5", b)
    hdf = h5py.File(path, "r", swmr=True)
    try:
        n = hdf["face_patch"].shape[0]
        assert n == 4
        for idx in range(n):
            image = hdf["face_patch"][idx, :]
            image = image[:, :, [2, 1, 0]]  # from BGR to RGB
            gaze_label = hdf["face_gaze"][idx, :]
            gaze_label = gaze_label.astype("float")
            assert image.dtype == np.uint8 and image.shape == (224, 224, 3)
            np.testing.assert_array_equal(image, np.asarray(b["face_patch"])[idx][:, :, ::-1])
            assert (image[:, :, 0] == 250).all() and (image[:, :, 2] == 10).all()  # red first after the swap
            assert gaze_label.dtype == np.float64 and gaze_label.shape == (2,)
            np.testing.assert_array_equal(gaze_label, np.asarray(b["face_gaze"])[idx].astype(np.float32))
        head = hdf["face_head_pose"][1, :].astype("float")
        np.testing.assert_array_equal(head, np.asarray(b["face_head_pose"])[1].astype(np.float32))
    finally:
        hdf.close()
    # the same through the project's reader
    with h5io.open_h5(path) as f:
        assert f["face_gaze"].shape == (4, 2)


def test_image_datasets_one_sample_per_chunk_lzf(tmp_path: Path) -> None:
    path = _write(tmp_path / "p00.h5", _batch(3, 0))
    with h5py.File(path, "r") as f:
        assert f["face_patch"].chunks == (1, 224, 224, 3) and f["face_patch"].compression == "lzf"
        assert f["face_mask"].chunks == (1, 224, 224) and f["face_mask"].compression == "lzf"
        assert f["face_gaze"].compression is None
        assert all(f[n].maxshape[0] is None for n in f)


def test_partial_until_commit(tmp_path: Path) -> None:
    final = tmp_path / "out" / "p00.h5"
    partial = tmp_path / "out" / "p00.h5.partial"
    w = h5io.H5Writer(final, FIELDS)
    w.append(_batch(2, 0))
    assert partial.is_file() and not final.exists()
    w.append(_batch(1, 2))
    assert w.rows == 3
    np.testing.assert_array_equal(w.read_column("frame_index"), [0, 1, 2])
    assert w.commit() == final
    assert final.is_file() and not partial.exists()
    assert sorted(p.name for p in final.parent.iterdir()) == ["p00.h5"]
    # an interrupted writer leaves only the partial file
    with h5io.H5Writer(tmp_path / "out" / "p01.h5", FIELDS) as w2:
        w2.append(_batch(1, 0))
    assert (tmp_path / "out" / "p01.h5.partial").is_file() and not (tmp_path / "out" / "p01.h5").exists()


def test_resume_keeps_committed_rows_and_drops_the_rest(tmp_path: Path) -> None:
    final = tmp_path / "p00.h5"
    b1, b2, b3 = _batch(3, 0), _batch(2, 3), _batch(4, 3, seed=9)
    w = h5io.H5Writer(final, FIELDS, attrs={"seed": 5})
    w.append(b1)
    w.append(b2)
    w.close()
    # a crash in the middle of the next append: some datasets grew, the row count was not committed
    with h5py.File(h5io.partial_path(final), "a") as f:
        for name in ("face_patch", "face_gaze", "frame_index"):
            f[name].resize(9, axis=0)
        f["face_gaze"][5:9] = 99.0
    w = h5io.H5Writer(final, FIELDS, resume=True)
    assert w.rows == 5
    np.testing.assert_array_equal(w.read_column("frame_index"), [0, 1, 2, 3, 4])
    w.append(b3)
    path = w.commit()
    with h5py.File(path, "r") as f:
        assert f.attrs["seed"] == 5  # the file's attributes survive the resume
        assert all(f[fld.name].shape[0] == 9 for fld in FIELDS)
        want = _concat(b1, b2, b3)
        np.testing.assert_array_equal(f["face_gaze"][:], want["face_gaze"].astype(np.float32))
        np.testing.assert_array_equal(f["face_patch"][:], want["face_patch"])
        assert not (f["face_gaze"][:] == 99.0).any()


def test_resume_starts_fresh_when_partial_is_unusable(tmp_path: Path) -> None:
    final = tmp_path / "p00.h5"
    partial = h5io.partial_path(final)
    partial.write_bytes(b"garbage, not hdf5")
    w = h5io.H5Writer(final, FIELDS, resume=True)
    assert w.rows == 0
    w.append(_batch(1, 0))
    w.close()
    # another schema in the partial file: not reused
    w = h5io.H5Writer(final, schema.CORE_FIELDS, resume=True)
    assert w.rows == 0
    w.close()
    # without resume an existing partial file is replaced
    w = h5io.H5Writer(final, schema.CORE_FIELDS)
    w.append({k: v for k, v in _batch(2, 0).items() if k in schema.CORE_NAMES})
    w.close()
    w = h5io.H5Writer(final, schema.CORE_FIELDS, resume=False)
    assert w.rows == 0
    w.close()


def test_append_rejects_bad_batches(tmp_path: Path) -> None:
    w = h5io.H5Writer(tmp_path / "p00.h5", FIELDS)
    b = _batch(2, 0)
    with pytest.raises(ValueError, match=r"missing \['variant'\]"):
        w.append({k: v for k, v in b.items() if k != "variant"})
    with pytest.raises(ValueError, match="face_gaze: shape"):
        w.append({**b, "face_gaze": np.zeros((2, 3))})
    w.close()
    with pytest.raises(ValueError, match="unknown fields"):
        h5io.H5Writer(tmp_path / "p01.h5", FIELDS, dataset_attrs={"nope": {"a": 1}})


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def test_validate_schema_finds_problems(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.h5", _batch(3, 0))

    bad = _copy(good, tmp_path / "missing.h5")
    with h5py.File(bad, "a") as f:
        del f["face_mask"]
    with h5py.File(bad, "r") as f:
        assert h5io.validate_schema(f, FIELDS) == ["missing key 'face_mask'"]

    bad = _copy(good, tmp_path / "dtype.h5")
    with h5py.File(bad, "a") as f:
        data = f["face_gaze"][:]
        del f["face_gaze"]
        f.create_dataset("face_gaze", data=data.astype(np.float64))
        del f["source_file"]
        f.create_dataset("source_file", data=np.arange(3))
    with h5py.File(bad, "r") as f:
        problems = h5io.validate_schema(f, FIELDS)
    assert "'face_gaze': dtype float64, expected float32" in problems
    assert any(p.startswith("'source_file': dtype int64, expected UTF-8 string") for p in problems)

    bad = _copy(good, tmp_path / "shape.h5")
    with h5py.File(bad, "a") as f:
        del f["face_patch"]
        f.create_dataset("face_patch", data=np.zeros((3, 112, 112, 3), np.uint8))
    with h5py.File(bad, "r") as f:
        assert h5io.validate_schema(f, FIELDS) == ["'face_patch': shape (112, 112, 3) per row, expected (224, 224, 3)"]

    bad = _copy(good, tmp_path / "rows.h5")
    with h5py.File(bad, "a") as f:
        f["face_head_pose"].resize(2, axis=0)
        f.create_dataset("darkening", data=np.ones(4, np.float32))  # an extra per-row dataset counts too
    with h5py.File(bad, "r") as f:
        (problem,) = h5io.validate_schema(f, FIELDS)
    assert problem.startswith("mismatched row counts:")
    assert "face_head_pose=2" in problem and "darkening=4" in problem and "face_gaze=3" in problem


def test_open_h5_rejects_non_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    path.write_bytes(b"\x89HDF\r\n" + b"\0" * 100)
    with pytest.raises(OutputError, match="not a readable HDF5 file") as info:
        h5io.open_h5(path)
    assert "\n" not in str(info.value)


def test_open_h5_rejects_a_truncated_file(tmp_path: Path) -> None:
    """A half-copied file is reported at once (a SWMR reader would keep retrying instead)."""
    good = _write(tmp_path / "good.h5", _batch(3, 0))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(OutputError, match=r"bad\.h5: not a readable HDF5 file .*truncated file") as info:
        h5io.open_h5(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", ["pylzf", "h5py"])
def test_lzf_chunks_of_either_compressor_read_back_through_hdf5s_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    if backend == "pylzf":
        pytest.importorskip("pylzf")
    else:
        monkeypatch.setattr(h5io, "_pylzf", None)  # HDF5's own lzf filter on an in-memory file
    assert h5io.lzf_backend() == backend
    b = _batch(3, 0)
    patch = np.asarray(b["face_patch"])
    patch[1] = 0  # very compressible
    patch[2] = np.random.default_rng(1).integers(0, 256, size=patch[2].shape, dtype=np.uint8)  # not compressible
    fields = {f.name: f for f in FIELDS}
    enc = h5io.encode_rows(fields["face_patch"], patch)
    flat = patch.reshape(3, -1)
    assert enc.chunks[2] == (1, flat[2].tobytes())  # lzf cannot shrink it: stored as it is, filter skipped
    assert enc.chunks[1][0] == 0 and len(enc.chunks[1][1]) < flat[1].nbytes // 50
    path = _write(tmp_path / "p00.h5", {**b, "face_patch": enc}, _batch(2, 3))  # encoded rows, then plain rows
    with h5py.File(path, "r") as f:
        assert f["face_patch"].compression == "lzf"
        np.testing.assert_array_equal(f["face_patch"][:3], patch)
        np.testing.assert_array_equal(f["face_patch"][3:], _batch(2, 3)["face_patch"])
        np.testing.assert_array_equal(f["face_mask"][...], _concat(b, _batch(2, 3))["face_mask"])
        # plain appends store what encode_rows makes
        again = h5io.encode_rows(fields["face_mask"], np.asarray(b["face_mask"]))
        for i, (mask, chunk) in enumerate(again.chunks):
            got_mask, got = f["face_mask"].id.read_direct_chunk((i, 0, 0))
            assert (int(got_mask), bytes(got)) == (mask, chunk)
