"""``nvsynth inspect`` (issue 5): summary, validation, figures, --index, corrupt files.

The test file is written by the real H5Writer. Its faces are drawn with cv2 from
a small 3D head (face outline, eyes, nose) posed by the row's head labels and
projected with the normalized patch camera; the pupils sit on the row's gaze.
So the pictures show what the labels say, independently of inspect's drawing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from nvsynth.app import inspect, inspect_plots
from nvsynth.core import geometry, h5io, schema
from nvsynth.core.errors import ConfigError, OutputError

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["black", "black-dark", "color", "color-dark", "image", "image-dark"]
EXTRA = (
    schema.Field("variant", (), "int8", "appearance variant"),
    schema.Field("relit", (), "uint8", "1 if relit"),
    schema.Field("target_pose", (2,), "float32", "sampled target (pitch, yaw)"),
)
# (gaze pitch, gaze yaw, head pitch, head yaw), degrees: the first rows are easy to read by eye
KNOWN = [
    (0, 0, 0, 0),
    (30, 0, 0, 0),  # looking up
    (-30, 0, 0, 0),  # looking down
    (0, 40, 0, 0),  # looking toward image-left
    (0, -40, 0, 0),  # looking toward image-right
    (20, 30, 10, 25),
    (-10, -30, -15, -30),
    (25, -20, 20, -10),
]
N_ROWS = 48
C = np.array([0.0, 0.0, geometry.NORM_DISTANCE])  # the face centre in the normalized camera


def _labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    head = np.column_stack([rng.normal(0, 12, N_ROWS), rng.normal(0, 30, N_ROWS)])  # yaw spreads wider
    gaze = head + rng.normal(0, 8, (N_ROWS, 2))
    known = np.array(KNOWN, float)
    gaze[: len(KNOWN)], head[: len(KNOWN)] = known[:, :2], known[:, 2:]
    return np.radians(np.clip(gaze, -80, 80)), np.radians(np.clip(head, -80, 80))


def _draw(gaze: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A BGR face, its mask and 68 'landmarks' (outline points) for one row."""
    K = geometry.normalized_camera_matrix(geometry.NORM_PATCH_SIZE)
    H = geometry.head_rotation_from_pitchyaw(*head)

    def px(points_head: np.ndarray) -> np.ndarray:  # head-frame mm -> patch pixels
        return geometry.project(np.asarray(points_head) @ H.T + C, K)

    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    outline = px(np.column_stack([60 * np.sin(t), 10 + 80 * np.cos(t), np.zeros_like(t)]))
    img = np.full((224, 224, 3), (90, 60, 40), np.uint8)  # dark blue-grey background (BGR)
    mask = np.zeros((224, 224), np.uint8)
    poly = np.round(outline * 16).astype(np.int32)
    cv2.fillPoly(img, [poly], (120, 160, 215), lineType=cv2.LINE_AA, shift=4)
    cv2.fillPoly(mask, [poly], 255, shift=4)
    g = geometry.vector_from_pitchyaw(gaze)
    for side in (-1, 1):
        eye = np.array([side * 30.0, -5.0, -8.0])
        (ex, ey), (qx, qy) = px([eye, eye + 12.0 * (H.T @ g)])  # pupil: 12 mm along the gaze
        cv2.ellipse(img, (round(ex), round(ey)), (16, 9), 0, 0, 360, (250, 250, 250), -1, cv2.LINE_AA)
        cv2.circle(img, (round(qx), round(qy)), 5, (40, 20, 20), -1, cv2.LINE_AA)
    (nx, ny), (tx, ty) = px([[0.0, 20.0, 0.0], [0.0, 25.0, -30.0]])  # nose from its root out along -z
    cv2.line(img, (round(nx), round(ny)), (round(tx), round(ty)), (60, 90, 170), 5, cv2.LINE_AA)
    return img, mask, outline


def _write(path: Path) -> dict[str, np.ndarray]:
    gaze, head = _labels()
    rows = [_draw(gz, hd) for gz, hd in zip(gaze, head, strict=True)]
    rng = np.random.default_rng(1)
    batch = {
        "face_patch": np.stack([r[0] for r in rows]),
        "face_mask": np.stack([r[1] for r in rows]),
        "face_gaze": gaze,
        "face_head_pose": head,
        "rotation_matrix": np.stack([geometry.head_rotation_from_pitchyaw(*h) for h in head]),
        "face_mat_norm": np.repeat(np.eye(3)[None], N_ROWS, axis=0),
        "landmarks_norm": np.stack([r[2] for r in rows]),
        "frame_index": np.arange(N_ROWS) // 4,
        "source_file": [f"p00/day01/{i // 4 + 1:04d}.jpg" for i in range(N_ROWS)],
        "variant": rng.choice(6, N_ROWS, p=[0.1, 0.1, 0.1, 0.1, 0.3, 0.3]),
        "relit": rng.integers(0, 2, N_ROWS),
        "target_pose": head,
    }
    attrs = {"nvsynth_version": "0.1.0", "config_hash": "0123abcd", "seed": 7, "pattern": "gaussian"}
    w = h5io.H5Writer(
        path,
        schema.CORE_FIELDS + EXTRA,
        attrs={**attrs, "subject": "p00", "views_per_source": 4},
        dataset_attrs={"variant": {"names": VARIANTS}},
    )
    w.append({k: v[:20] for k, v in batch.items()})
    w.append({k: v[20:] for k, v in batch.items()})
    w.commit()
    return {k: np.asarray(v) for k, v in batch.items()}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("h5") / "p00.h5"
    return path, _write(path)


def _copy(src: Path, folder: Path, name: str = "p00.h5") -> Path:
    dst = folder / name
    shutil.copyfile(src, dst)
    return dst


def _err_lines(capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str]]:
    cap = capsys.readouterr()
    return cap.out, cap.err.splitlines()


# --- the drawing convention ---------------------------------------------------------------------


def test_gaze_arrow_is_the_issue_formula() -> None:
    L = 50.0
    for p, y in ((0.3, 0.0), (0.0, 0.5), (-0.4, -0.7), (0.2, 1.1)):
        dx, dy = inspect_plots.gaze_arrow([p, y], L)
        np.testing.assert_allclose([dx, dy], [-L * np.sin(y) * np.cos(p), -L * np.sin(p)], atol=1e-12)
    assert inspect_plots.gaze_arrow([0.3, 0.0])[1] < 0  # positive pitch: arrow up
    assert inspect_plots.gaze_arrow([0.0, 0.3])[0] < 0  # positive yaw: arrow to image-left


def test_arrow_points_where_the_perspective_image_moves() -> None:
    """From the face centre (on the optical axis), the projected gaze moves the way the arrow points."""
    K = geometry.normalized_camera_matrix(224)
    center_px = geometry.project(C, K)
    np.testing.assert_allclose(center_px, [inspect_plots.CENTER, inspect_plots.CENTER])
    for p, y in ((0.3, 0.2), (-0.5, 0.9), (0.1, -1.0)):
        g = geometry.vector_from_pitchyaw([p, y])
        moved = geometry.project(C + 1e-3 * g, K) - center_px
        arrow = inspect_plots.gaze_arrow([p, y])
        cos = moved @ arrow / np.linalg.norm(moved) / np.linalg.norm(arrow)
        assert cos > 1 - 1e-9


def test_head_axes() -> None:
    x, y, facing = inspect_plots.head_axes([0.0, 0.0], 10.0)
    np.testing.assert_allclose([x, y, facing], [[10, 0], [0, 10], [0, 0]], atol=1e-12)
    # the facing axis of a head uses the gaze convention: same labels, same direction
    for py in ([0.3, 0.0], [0.0, 0.5], [-0.2, -0.6]):
        np.testing.assert_allclose(inspect_plots.head_axes(py, 10.0)[2], inspect_plots.gaze_arrow(py, 10.0), atol=1e-12)


# --- a good file ----------------------------------------------------------------------------------


def test_good_file_summary_figures_and_exit_0(
    good: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = good
    rc = inspect.run(path, out=tmp_path / "png", num=16)
    out, err = _err_lines(capsys)
    assert rc == 0 and err == []
    assert f"{path}: {N_ROWS} rows" in out
    assert "pattern gaussian" in out and "seed 7" in out and "subject p00" in out
    assert "face_patch         (48, 224, 224, 3)      uint8" in out
    assert "source_file" in out and "str (utf-8)" in out
    for key, label in (("face_gaze", "gaze"), ("face_head_pose", "head")):
        deg = np.degrees(data[key].astype(np.float32).astype(np.float64))
        for col, part in enumerate(("pitch", "yaw")):
            v = deg[:, col]
            want = f"{label} {part:<6}      {v.min():8.1f} {np.median(v):8.1f} {v.max():8.1f}"
            assert want in out, want
    shares = ", ".join(f"{n} {np.mean(data['variant'] == i):.0%}" for i, n in enumerate(VARIANTS))
    assert f"variants: {shares}" in out
    assert f"relit: {np.mean(data['relit'] > 0):.0%}" in out
    assert "render parameters: relit, target_pose, variant" in out
    for name in inspect.PNG_NAMES:
        img = cv2.imread(str(tmp_path / "png" / name))
        assert img is not None and img.shape[0] > 300 and img.std() > 10, name
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(inspect.PNG_NAMES)  # no temp files


def test_folder_of_files(
    good: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _copy(good[0], tmp_path, "p00.h5")
    _copy(good[0], tmp_path, "p01.h5")
    (tmp_path / "p02.h5.partial").write_bytes(b"unfinished")
    assert inspect.run(tmp_path) == 0
    out, err = _err_lines(capsys)
    assert err == [] and out.count(f"{N_ROWS} rows") == 2
    assert "1 unfinished .partial file(s) ignored" in out and "2 file(s), 0 with problems" in out


def test_index_prints_row_and_saves_patch(
    good: tuple[Path, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, data = good
    monkeypatch.chdir(tmp_path)  # without -o the patch goes to the working folder
    assert inspect.run(path, index=3) == 0
    out, _ = _err_lines(capsys)
    assert "row 3:" in out and "p00/day01/0001.jpg" in out and "[0.0, 40.0] deg" in out
    assert f"variant            {data['variant'][3]} ({VARIANTS[data['variant'][3]]})" in out
    saved = cv2.imread(str(tmp_path / "p00_row3.png"))
    np.testing.assert_array_equal(saved, data["face_patch"][3])  # the exact stored pixels (BGR)
    assert inspect.run(path, index=N_ROWS) == 1
    _, err = _err_lines(capsys)
    assert err == [f"{path}: --index {N_ROWS}: out of range ({N_ROWS} rows)"]


# --- rejections ----------------------------------------------------------------------------------


def test_truncated_copy_is_one_line_exit_1(good: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    bad = tmp_path / "p00.h5"
    bad.write_bytes(good[0].read_bytes()[: good[0].stat().st_size // 2])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "nvsynth.app.cli", "inspect", str(bad), "-o", str(tmp_path / "png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{bad}: not a readable HDF5 file") and "truncated" in lines[0]


@pytest.mark.parametrize(
    ("damage", "line"),
    [
        (lambda f: f["face_gaze"].__setitem__((3, 0), np.nan), "'face_gaze': NaN/inf in 1 row(s) (first: 3)"),
        (lambda f: f["face_head_pose"].__setitem__((5, 1), np.inf), "'face_head_pose': NaN/inf in 1 row(s) (first: 5)"),
        (lambda f: f.__delitem__("face_mask"), "missing key 'face_mask'"),
        (lambda f: f["face_mask"].__setitem__(2, 0), "'face_mask': empty mask in 1 row(s) (first: 2)"),
        (
            lambda f: f["face_head_pose"].__setitem__((1, 1), 2.0),
            "'face_head_pose': label outside +-90 degrees in 1 row(s) (first: 1)",
        ),
    ],
    ids=["nan-gaze", "inf-head", "missing-key", "empty-mask", "beyond-90"],
)
def test_damaged_copies_are_rejected_with_a_clear_line(
    good: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, line: str
) -> None:
    bad = _copy(good[0], tmp_path)
    with h5py.File(bad, "r+") as f:
        damage(f)
    out = tmp_path / "png" if "mask" in line else None  # figures (made even for a bad file) once
    assert inspect.run(bad, out=out, num=4) == 1
    _, err = _err_lines(capsys)
    assert err == [f"{bad}: {line}"]
    if out is not None:
        assert all((out / name).is_file() for name in inspect.PNG_NAMES)


def test_mismatched_rows_and_wrong_dtype(
    good: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _copy(good[0], tmp_path)
    with h5py.File(bad, "r+") as f:
        f["variant"].resize(40, axis=0)
        gaze = f["face_gaze"][()]
        del f["face_gaze"]
        f["face_gaze"] = gaze.astype(np.float64)
    assert inspect.run(bad) == 1
    _, err = _err_lines(capsys)
    assert err[0] == f"{bad}: 'face_gaze': dtype float64, expected float32"
    assert err[1].startswith(f"{bad}: mismatched row counts:") and "variant=40" in err[1]
    assert len(err) == 2


def test_foreign_eth_xgaze_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ETH-XGaze training file: no masks, no render parameters, no attributes. Summarized, then rejected."""
    path = tmp_path / "subject0000.h5"
    with h5py.File(path, "w") as f:
        f["face_patch"] = np.zeros((3, 224, 224, 3), np.uint8)
        f["face_gaze"] = np.zeros((3, 2), np.float32)
        f["face_head_pose"] = np.zeros((3, 2), np.float32)
        f["face_mat_norm"] = np.repeat(np.eye(3, dtype=np.float32)[None], 3, axis=0)
        f["frame_index"] = np.zeros((3, 1), np.int32)
        f["cam_index"] = np.zeros((3, 1), np.int32)
    assert inspect.run(path, out=tmp_path / "png", num=2) == 1
    out, err = _err_lines(capsys)
    assert "3 rows (no nvsynth attributes)" in out and "render parameters: cam_index" in out
    assert (
        f"{path}: missing key 'face_mask'" in err and f"{path}: 'frame_index': shape (1,) per row, expected ()" in err
    )
    assert (tmp_path / "png" / "contact_sheet.png").is_file()


def test_missing_path_and_bad_num(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no such file or folder"):
        inspect.run(tmp_path / "absent.h5")
    with pytest.raises(OutputError, match=r"no \.h5 files"):
        inspect.run(tmp_path)
    with pytest.raises(ConfigError, match="--num"):
        inspect.run(tmp_path, num=0)


def test_empty_file_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = h5io.H5Writer(tmp_path / "p09.h5", schema.CORE_FIELDS).commit()
    assert inspect.run(path, out=tmp_path / "png") == 1
    out, err = _err_lines(capsys)
    assert err == [f"{path}: no rows"] and f"{path}: 0 rows" in out
    assert (tmp_path / "png" / "pose_hist.png").is_file() and not (tmp_path / "png" / "contact_sheet.png").exists()
