"""The one output schema (nvsynth/core/schema.py): the writer creates it, the validator and inspect check it."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from nvsynth.app import inspect
from nvsynth.core import h5io, schema


def _rows(n: int) -> dict[str, object]:
    """n rows of every dataset of the schema, with the schema's shapes."""
    out: dict[str, object] = {}
    for f in schema.FIELDS:
        if f.dtype == "str":
            out[f.name] = [f"p00/day01/{i:04d}.jpg" for i in range(n)]
        elif f.name == "face_mask":
            out[f.name] = np.full((n, *f.shape), 255, np.uint8)
        else:
            out[f.name] = np.zeros((n, *f.shape), dtype=f.dtype)
    return out


@pytest.fixture
def full(tmp_path: Path) -> Path:
    attrs = {"nvsynth_version": "0.1.0", "seed": 3, "pattern": "gaussian", "subject": "p00", "views_per_source": 2,
             "config_hash": "abc", "config_json": "{}", schema.PROGRESS_ATTR: 1, schema.SKIPS_ATTR: "[]"}  # fmt: skip
    w = h5io.H5Writer(tmp_path / "p00.h5", schema.FIELDS, attrs=attrs)
    w.append(_rows(4))
    return w.commit()


def test_fields_are_unique_and_ordered() -> None:
    names = [f.name for f in schema.FIELDS]
    assert len(names) == len(set(names)) == 20
    assert schema.FIELDS == schema.CORE_FIELDS + schema.POSE_FIELDS + schema.APPEARANCE_FIELDS
    assert schema.REQUIRED_FIELDS == schema.CORE_FIELDS and schema.CORE_NAMES[:2] == ("face_patch", "face_mask")
    assert all(f.meaning for f in schema.FIELDS) and all(a.meaning for a in schema.FILE_ATTRS)
    assert set(schema.DATASET_ATTRS) <= set(names) and set(schema.DATASET_ATTR_SPECS) == set(schema.DATASET_ATTRS)


def test_writer_sets_the_schemas_dataset_attributes_and_the_file_conforms(full: Path) -> None:
    with h5py.File(full, "r") as f:
        assert [n.decode() if isinstance(n, bytes) else n for n in f["variant"].attrs["names"]] == list(
            schema.VARIANT_NAMES
        )
        for fld in schema.FIELDS:
            assert f[fld.name].shape == (4, *fld.shape)
        assert h5io.validate_schema(f, schema.FIELDS) == []
        assert f.attrs[schema.ROWS_ATTR] == 4


def test_render_parameters_are_checked_where_present(full: Path) -> None:
    with h5py.File(full, "r+") as f:
        del f["view_index"]
        f["view_index"] = np.zeros(4, np.float64)
        del f["variant"].attrs["names"]
        f.attrs["seed"] = "three"
        f.attrs[schema.SKIPS_ATTR] = "[not json"
        del f["pose_attempts"]  # a render parameter may be absent (a foreign file)
    with h5py.File(full, "r") as f:
        problems = h5io.validate_schema(f, schema.REQUIRED_FIELDS, optional=schema.FIELDS)
    assert sorted(problems) == sorted(
        [
            "'view_index': dtype float64, expected int32",
            "'variant': missing attribute 'names'",
            "attribute 'seed': 'three' is not an integer",
            f"attribute '{schema.SKIPS_ATTR}': not valid JSON",
        ]
    )


def test_inspect_validates_from_the_schema(full: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect.run(full) == 0
    with h5py.File(full, "r+") as f:
        del f["light_direction"]
        f["light_direction"] = np.zeros((4, 2), np.float32)
    assert inspect.run(full) == 1
    assert capsys.readouterr().err.splitlines() == [f"{full}: 'light_direction': shape (2,) per row, expected (3,)"]
