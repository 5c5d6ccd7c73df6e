"""MPIIFaceGaze reader (issue 2) on a tiny subject built in the exact dataset layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from nvsynth.app.cli import exit_code
from nvsynth.core import geometry
from nvsynth.core.errors import ConfigError, DatasetError
from nvsynth.datasets import mpii

K = np.array([[994.73, 0.0, 624.63], [0.0, 996.97, 360.36], [0.0, 0.0, 1.0]])
DIST = np.array([[-0.1619, 0.9053, 0.0011, -0.0015, -1.8627]])  # (1, 5) as in the dataset's Camera.mat
POSES = [  # (pitch, yaw) of the head, radians, and translation mm
    ((0.1, -0.2), (-40.0, 10.0, 520.0)),
    ((-0.15, 0.3), (30.0, -5.0, 600.0)),
    ((0.0, 0.0), (0.0, 0.0, 480.0)),
]


def _annotation_line(i: int, day: str = "day01") -> str:
    (p, y), t = POSES[i]
    hR = geometry.head_rotation_from_pitchyaw(p, y)  # identity = frontal (model axes = camera axes)
    head = geometry.HeadPose(hR, np.array(t))
    lm = mpii.Camera(K, DIST.ravel()).project(head.transform(geometry.FACE_MODEL_6))
    center = head.face_center()
    target = np.array([100.0 * i - 50.0, -120.0, -20.0])
    cols = [f"{day}/{i + 1:04d}.jpg", f"{800 + i}", f"{400 - i}"]
    cols += [f"{v:.6f}" for v in lm.ravel()]
    cols += [f"{v:.9f}" for v in head.rvec] + [f"{v:.6f}" for v in t]
    cols += [f"{v:.6f}" for v in center] + [f"{v:.6f}" for v in target] + ["left" if i % 2 else "right"]
    assert len(cols) == 28
    return " ".join(cols)


def _write_subject(root: Path, name: str = "p07", n: int = 3, images: bool = True) -> Path:
    sdir = root / name
    (sdir / "Calibration").mkdir(parents=True)
    (sdir / "day01").mkdir()
    scipy.io.savemat(
        sdir / "Calibration" / "Camera.mat",
        {"cameraMatrix": K, "distCoeffs": DIST, "retval": 0.5, "rvecs": np.zeros((3, 1)), "tvecs": np.zeros((3, 1))},
    )
    scipy.io.savemat(
        sdir / "Calibration" / "monitorPose.mat",
        {"rvects": np.array([[0.01], [3.1], [0.02]]), "tvecs": np.array([[160.0], [10.0], [-5.0]])},
    )
    scipy.io.savemat(
        sdir / "Calibration" / "screenSize.mat",
        {"height_mm": 179.0, "height_pixel": 800, "width_mm": 286.0, "width_pixel": 1280},
    )
    lines = [_annotation_line(i) for i in range(n)]
    (sdir / f"{name}.txt").write_text("\n".join(lines) + "\n")
    if images:
        for i in range(n):
            img = np.full((72, 128, 3), 40 * i, np.uint8)
            cv2.putText(img, str(i), (50, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 255, 0), 2)
            assert cv2.imwrite(str(sdir / "day01" / f"{i + 1:04d}.jpg"), img)
    return sdir


def test_reads_calibration_and_typed_frozen_frames(tmp_path: Path) -> None:
    _write_subject(tmp_path)
    subj = mpii.open_subject(tmp_path, "p07")
    cal = subj.calibration
    np.testing.assert_array_equal(cal.camera.matrix, K)
    np.testing.assert_array_equal(cal.camera.dist_coeffs, DIST.ravel())
    assert cal.monitor_rvec is not None and cal.monitor_rvec.shape == (3,)
    assert cal.monitor_tvec is not None and cal.monitor_tvec[0] == 160.0
    assert cal.screen_size_px == (1280, 800) and cal.screen_size_mm == (286.0, 179.0)

    frames = subj.frame_list()
    assert [f.index for f in frames] == [0, 1, 2]
    f = frames[1]
    assert f.subject == "p07" and f.relative_path == "day01/0002.jpg" and f.eye == "left"
    assert f.image_path == tmp_path / "p07" / "day01" / "0002.jpg"
    for name, shape in [
        ("gaze_screen", (2,)),
        ("landmarks_6", (6, 2)),
        ("head_rvec", (3,)),
        ("head_tvec", (3,)),
        ("face_center", (3,)),
        ("gaze_target", (3,)),
    ]:
        arr = getattr(f, name)
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.shape == shape, name
    np.testing.assert_array_equal(f.gaze_screen, [801.0, 399.0])
    np.testing.assert_allclose(f.head_tvec, POSES[1][1])
    np.testing.assert_allclose(f.gaze_target, [50.0, -120.0, -20.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.eye = "right"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        subj.name = "p08"  # type: ignore[misc]
    assert len(subj.frame_list(limit=2)) == 2


def test_columns_are_consistent_with_geometry(tmp_path: Path) -> None:
    """The 6 landmarks, rvec/tvec and face centre columns land in the right fields (PnP agrees)."""
    _write_subject(tmp_path)
    subj = mpii.open_subject(tmp_path, "p07")
    cam = subj.calibration.camera
    for f in subj.frames():
        est = geometry.estimate_head_pose(f.landmarks_6, cam.matrix, cam.dist_coeffs)
        np.testing.assert_allclose(est.rotation, f.head_pose.rotation, atol=1e-5)
        np.testing.assert_allclose(est.translation, f.head_tvec, atol=1e-3)
        np.testing.assert_allclose(f.head_pose.face_center(), f.face_center, atol=1e-5)


def test_camera_distortion_round_trip() -> None:
    cam = mpii.Camera(K, DIST.ravel())
    pts = np.array([[10.0, -20.0, 500.0], [-80.0, 40.0, 600.0], [120.0, 60.0, 450.0]])
    distorted = cam.project(pts)
    ideal = cam.project(pts, distort=False)
    np.testing.assert_allclose(ideal, geometry.project(pts, K), atol=1e-9)
    assert np.abs(distorted - ideal).max() > 0.5  # the distortion is real
    np.testing.assert_allclose(cam.undistort_points(distorted), ideal, atol=1e-3)


def test_images_load_lazily(tmp_path: Path) -> None:
    sdir = _write_subject(tmp_path, images=False)
    frames = mpii.open_subject(tmp_path, "p07").frame_list()  # no image exists: listing still works
    assert len(frames) == 3
    with pytest.raises(DatasetError, match=r"0001\.jpg"):
        frames[0].load_image()
    # an image written after listing is the one that loads
    img = np.zeros((72, 128, 3), np.uint8)
    img[:, :, 2] = 255
    cv2.imwrite(str(sdir / "day01" / "0001.jpg"), img)
    got = frames[0].load_image()
    assert got.shape == (72, 128, 3) and got.dtype == np.uint8
    assert got[..., 2].mean() > 240 and got[..., 0].mean() < 15  # BGR order: red is channel 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda cols: cols[:-1], "expected 28 columns, found 27"),
        (lambda cols: [*cols, "extra"], "expected 28 columns, found 29"),
        (lambda cols: [*cols[:5], "abc", *cols[6:]], "non-numeric"),
        (lambda cols: [*cols[:20], "nan", *cols[21:]], "non-finite"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, mutate, message: str) -> None:
    sdir = _write_subject(tmp_path)
    ann = sdir / "p07.txt"
    lines = ann.read_text().splitlines()
    lines[2] = " ".join(mutate(lines[2].split()))
    ann.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")  # a blank line 2: the bad one is line 4
    subj = mpii.open_subject(tmp_path, "p07")
    with pytest.raises(DatasetError) as info:
        subj.frame_list()
    msg = str(info.value)
    assert msg.startswith(f"{ann}:4: ") and message in msg and "\n" not in msg
    assert info.value.path == ann and info.value.line == 4
    assert len(subj.frame_list(limit=2)) == 2  # the good lines before it still read


def test_missing_subject_folder_camera_and_annotation(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"subject p03: folder not found: .*p03"):
        mpii.open_subject(tmp_path, "p03")
    sdir = _write_subject(tmp_path)
    (sdir / "Calibration" / "Camera.mat").unlink()
    with pytest.raises(DatasetError, match=r"missing .*Calibration/Camera\.mat"):
        mpii.open_subject(tmp_path, "p07")
    sdir2 = _write_subject(tmp_path, "p08")
    (sdir2 / "p08.txt").unlink()
    with pytest.raises(DatasetError, match=r"annotation file not found: .*p08\.txt"):
        mpii.open_subject(tmp_path, "p08")
    sdir3 = _write_subject(tmp_path, "p09")
    scipy.io.savemat(sdir3 / "Calibration" / "Camera.mat", {"distCoeffs": DIST})
    with pytest.raises(DatasetError, match="lacks cameraMatrix"):
        mpii.open_subject(tmp_path, "p09")
    (sdir3 / "Calibration" / "Camera.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="cannot read"):
        mpii.open_subject(tmp_path, "p09")


def test_optional_calibration_files(tmp_path: Path) -> None:
    sdir = _write_subject(tmp_path)
    (sdir / "Calibration" / "monitorPose.mat").unlink()
    (sdir / "Calibration" / "screenSize.mat").unlink()
    cal = mpii.open_subject(tmp_path, "p07").calibration
    assert cal.monitor_rvec is None and cal.screen_size_px is None and cal.screen_size_mm is None


def test_list_and_select_subjects(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MPIIFaceGaze root not found") as missing:
        mpii.list_subjects(tmp_path / "absent")
    assert exit_code(missing.value) == 2  # names data.input: a configuration mistake
    with pytest.raises(DatasetError, match="no subject folders"):
        mpii.select_subjects(tmp_path, None)
    for name in ("p03", "p00", "p14"):
        (tmp_path / name).mkdir()
    (tmp_path / "p1").mkdir()  # not a subject name
    (tmp_path / "notes").mkdir()
    (tmp_path / "p05").write_text("a file, not a folder")
    assert mpii.list_subjects(tmp_path) == ["p00", "p03", "p14"]
    assert mpii.select_subjects(tmp_path, None) == ["p00", "p03", "p14"]
    assert mpii.select_subjects(tmp_path, "") == ["p00", "p03", "p14"]
    assert mpii.select_subjects(tmp_path, " p14, p00 ,") == ["p14", "p00"]
    with pytest.raises(ConfigError, match="'x1' is not a subject name") as info:
        mpii.select_subjects(tmp_path, "p00,x1")
    assert exit_code(info.value) == 2
