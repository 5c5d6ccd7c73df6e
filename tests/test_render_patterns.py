"""Head-pose patterns (render/patterns.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nvsynth.core import geometry
from nvsynth.core.config import from_dict
from nvsynth.core.errors import AssetError, ConfigError
from nvsynth.render.patterns import load_pattern, load_pose_file
from nvsynth.render.views import normalize_source


def _source():
    # a frontal-ish head 600 mm in front of the camera, looking slightly down-left
    return normalize_source([0.1, -0.2, 0.05], [20.0, 10.0, 600.0], np.diag([1000.0, 1000.0, 1.0]), [-50, 80, 0])


@pytest.mark.parametrize(("name", "filename"), [("eyediap-cs", "CS"), ("eyediap-ft", "FT")])
def test_eyediap_patterns_draw_rows_of_the_shared_file(shared: Path, name: str, filename: str) -> None:
    path = shared / "targets" / f"EYEDIAP_{filename}_head_distribution.txt"
    rows = np.loadtxt(path)
    pat = load_pattern(from_dict({"render": {"pattern": name}}))  # found through $NVSYNTH_TARGETS_DIR
    assert pat.origin == str(path)
    np.testing.assert_array_equal(pat.poses, rows)
    rng = np.random.default_rng(0)
    draws = np.array([pat(rng, _source()) for _ in range(500)])
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    assert np.all(draws >= lo) and np.all(draws <= hi)
    # every draw is a row of the file
    assert all(np.any(np.all(rows == d, axis=1)) for d in draws[:50])
    # and the draws spread over the file's range (uniform over its rows)
    assert np.all(draws.std(axis=0) > 0.5 * rows.std(axis=0))


def test_targets_dir_from_config_wins_over_environment(shared: Path, tmp_path: Path) -> None:
    rows = np.array([[0.1, -0.2], [0.05, 0.3]])
    np.savetxt(tmp_path / "EYEDIAP_CS_head_distribution.txt", rows)
    pat = load_pattern(from_dict({"render": {"pattern": "eyediap-cs"}, "assets": {"targets_dir": str(tmp_path)}}))
    np.testing.assert_allclose(pat.poses, rows)


def test_missing_eyediap_file_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVSYNTH_TARGETS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(AssetError, match=r"EYEDIAP_FT_head_distribution\.txt") as err:
        load_pattern(from_dict({"render": {"pattern": "eyediap-ft"}}))
    assert "\n" not in str(err.value)


def test_gaussian_pattern_sigma_on_head_and_on_gaze() -> None:
    src = _source()
    rng = np.random.default_rng(1)
    head = load_pattern(from_dict({"render": {"pattern": "gaussian", "gaussian_sigma_deg": 10.0}}))
    draws = np.degrees(np.array([head(rng, src) for _ in range(4000)]))
    np.testing.assert_allclose(draws.std(axis=0), [10.0, 10.0], rtol=0.05)
    np.testing.assert_allclose(draws.mean(axis=0), [0.0, 0.0], atol=0.5)

    gaze = load_pattern(from_dict({"render": {"pattern": "gaussian", "gaussian_on": "gaze"}}))
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    worst = 0.0
    for _ in range(200):
        target_head = gaze(rng_a, src)
        target_gaze = rng_b.normal(0.0, np.radians(20.0), size=2)
        assert target_head is not None
        g = geometry.head_rotation_from_pitchyaw(*target_head) @ src.gaze_in_head
        worst = max(worst, float(geometry.angular_error_deg(g, geometry.vector_from_pitchyaw(target_gaze))))
    assert worst < 1e-4


def test_source_pattern_returns_the_source_pose() -> None:
    src = _source()
    pat = load_pattern(from_dict({"render": {"pattern": "source"}}))
    np.testing.assert_array_equal(pat(np.random.default_rng(0), src), src.pose)


def test_file_pattern_npy_and_txt(tmp_path: Path) -> None:
    rows = np.array([[0.1, 0.2], [-0.3, 0.4], [0.0, -0.5]])
    np.save(tmp_path / "p.npy", rows)
    np.savetxt(tmp_path / "p.txt", rows)
    for name in ("p.npy", "p.txt"):
        pat = load_pattern(from_dict({"render": {"pattern": "file", "pattern_file": str(tmp_path / name)}}))
        np.testing.assert_allclose(pat.poses, rows)
    with pytest.raises(ConfigError, match="pattern_file"):
        load_pattern(from_dict({"render": {"pattern": "file"}}))
    np.save(tmp_path / "bad.npy", np.zeros((4, 3)))
    with pytest.raises(AssetError, match=r"\(N, 2\)"):
        load_pose_file(tmp_path / "bad.npy")
    np.savetxt(tmp_path / "deg.txt", np.degrees(rows))
    with pytest.raises(AssetError, match="radians"):
        load_pose_file(tmp_path / "deg.txt")
