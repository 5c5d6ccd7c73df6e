"""`nvsynth targets --from-h5` (nvsynth/app/targets.py), and the pattern file it makes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from nvsynth.app.cli import exit_code, main
from nvsynth.app.targets import targets_from_h5
from nvsynth.core.config import from_dict
from nvsynth.core.errors import ConfigError, DatasetError
from nvsynth.render.patterns import load_pattern


def _xgaze_like(path: Path, poses: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("face_head_pose", data=poses.astype(np.float32))
        f.create_dataset("face_gaze", data=np.zeros_like(poses, dtype=np.float32))
    return path


def test_targets_from_h5_then_xgaze_train_pattern(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 0.3, (40, 2)), rng.normal(0, 0.3, (25, 2))
    files = [_xgaze_like(tmp_path / "subject0000.h5", a), _xgaze_like(tmp_path / "subject0003.h5", b)]
    out = tmp_path / "targets" / "xgaze_train.npy"
    rc = main(["targets", "--from-h5", *map(str, files), "-o", str(out)])
    assert rc == 0
    assert "wrote 65 head poses from 2 file(s)" in capsys.readouterr().out
    got = np.load(out)
    np.testing.assert_array_equal(got, np.concatenate([a, b]).astype(np.float32).astype(np.float64))
    assert [p.name for p in out.parent.iterdir()] == ["xgaze_train.npy"]  # no temporary left
    pat = load_pattern(from_dict({"render": {"pattern": "xgaze-train"}, "assets": {"targets_dir": str(out.parent)}}))
    np.testing.assert_array_equal(pat.poses, got)


def test_targets_from_h5_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "poses.npy"
    (tmp_path / "notes.h5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        targets_from_h5([tmp_path / "notes.h5"], out)
    with h5py.File(tmp_path / "nohead.h5", "w") as f:
        f.create_dataset("face_gaze", data=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match="no 'face_head_pose'"):
        targets_from_h5([tmp_path / "nohead.h5"], out)
    with h5py.File(tmp_path / "shape.h5", "w") as f:
        f.create_dataset("face_head_pose", data=np.zeros((3, 3)))
    with pytest.raises(DatasetError, match=r"must be \(N, 2\)"):
        targets_from_h5([tmp_path / "shape.h5"], out)
    _xgaze_like(tmp_path / "deg.h5", np.array([[10.0, 45.0]]))
    with pytest.raises(DatasetError, match="radians"):
        targets_from_h5([tmp_path / "deg.h5"], out)
    with pytest.raises(DatasetError, match="not found"):
        targets_from_h5([tmp_path / "missing.h5"], out)
    assert not out.exists()
    # through the CLI: one line on stderr, non-zero exit, no traceback
    rc = main(["targets", "--from-h5", str(tmp_path / "nohead.h5"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "face_head_pose" in err


def test_targets_usage_errors_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="no input files") as info:
        targets_from_h5([], tmp_path / "poses.npy")
    assert exit_code(info.value) == 2
    good = _xgaze_like(tmp_path / "a.h5", np.zeros((2, 2)))
    with pytest.raises(ConfigError, match=r"must be a \.npy file"):
        targets_from_h5([good], tmp_path / "poses.txt")
    assert main(["targets", "--from-h5", str(good), "-o", str(tmp_path / "poses.txt")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "poses.txt").exists()
