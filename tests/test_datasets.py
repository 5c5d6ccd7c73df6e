"""The dataset protocol, registry and readers (xgaze-h5, folder), and their one-line errors."""

from __future__ import annotations

import typing
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs_data import SAMPLE, export_folder, write_eth_xgaze_h5
from scipy.spatial.transform import Rotation

from nvsynth.app.cli import DATA_KINDS, main
from nvsynth.core import geometry
from nvsynth.core.config import DataKind
from nvsynth.core.errors import ConfigError, DatasetError
from nvsynth.core.images import read_image
from nvsynth.datasets.base import select_subjects
from nvsynth.datasets.registry import READERS, detect_kind, open_dataset

angles = st.floats(-1.4, 1.4)


@settings(max_examples=200, deadline=None)
@given(st.tuples(angles, angles, angles), st.tuples(st.floats(-300, 300), st.floats(-300, 300), st.floats(300, 900)))
def test_head_rotation_rebuilt_from_labels_is_the_normalized_one(euler, centre) -> None:
    """hR(face_head_pose) is exactly the normalized head rotation R . hR, for any head and face centre.

    The normalization leaves the head's x axis with no component along the
    normalized camera's y axis; hR(p, y) is the rotation with labels (p, y)
    and that property, so the rotation the xgaze-h5 reader rebuilds is the one
    the labels were made from, and re-normalizing it is the identity.
    """
    hR = Rotation.from_euler("yxz", [euler[1], euler[0], euler[2]]).as_matrix()  # yaw, pitch and roll
    H = geometry.normalizing_rotation(centre, hR) @ hR
    assert abs(H[1, 0]) < 1e-12
    labels = geometry.pitchyaw_from_head_rotation(H)
    rebuilt = geometry.normalized_head_rotation(*labels)
    np.testing.assert_allclose(rebuilt, H, atol=1e-9)
    if abs(labels[1]) <= np.pi / 2:  # a face seen from the front: the zero-roll hR(p, y) itself
        np.testing.assert_allclose(rebuilt, geometry.head_rotation_from_pitchyaw(*labels), atol=1e-12)
    np.testing.assert_allclose(geometry.pitchyaw_from_head_rotation(rebuilt), labels, atol=1e-12)
    on_axis = geometry.HeadPose.from_face_center(rebuilt, [0.0, 0.0, 600.0])
    norm = geometry.normalize(on_axis, geometry.ETH_XGAZE.camera_matrix(224), spec=geometry.ETH_XGAZE)
    np.testing.assert_allclose(norm.rotation, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(norm.head_pitchyaw(), labels, atol=1e-12)


def test_xgaze_reader_rebuilds_the_geometry_of_an_eth_xgaze_file(tmp_path: Path) -> None:
    truth = write_eth_xgaze_h5(tmp_path / "subject0003.h5")
    ds = open_dataset(tmp_path / "subject0003.h5")
    assert ds.kind == "xgaze-h5" and ds.subjects() == ["subject0003"] and ds.root == tmp_path
    samples = list(ds.samples("subject0003"))
    assert [s.frame_index for s in samples] == list(range(7))
    with h5py.File(tmp_path / "subject0003.h5") as f:
        gaze, head = f["face_gaze"][:].astype(np.float64), f["face_head_pose"][:].astype(np.float64)
    K = np.array([[960.0, 0.0, 112.0], [0.0, 960.0, 112.0], [0.0, 0.0, 1.0]])  # ETH-XGaze's cam_norm
    for s in samples[:6]:
        i = s.frame_index
        np.testing.assert_array_equal(s.camera.matrix, K)
        assert not s.camera.dist_coeffs.any() and s.landmarks_6 is None and s.gaze_target is None
        np.testing.assert_allclose(s.head.face_center(), [0.0, 0.0, 600.0], atol=1e-9)
        np.testing.assert_allclose(s.head.rotation, truth.head_rotation[i], atol=1e-6)  # float32 labels
        np.testing.assert_allclose(s.gaze_direction, truth.gaze[i], atol=1e-6)
        # normalizing the rebuilt frame gives the file's labels back exactly
        target = geometry.gaze_target_from_direction(s.head.face_center(), s.gaze_direction)
        norm = geometry.normalize(s.head, s.camera.matrix, spec=geometry.ETH_XGAZE)
        np.testing.assert_allclose(norm.head_pitchyaw(), head[i], atol=1e-12)
        np.testing.assert_allclose(norm.gaze_pitchyaw(target), gaze[i], atol=1e-12)
        assert s.image == f"subject0003.h5#{i}" and s.record_name == f"{i:06d}"
        np.testing.assert_array_equal(s.load_image(), h5py.File(tmp_path / "subject0003.h5")["face_patch"][i])
    assert samples[6].skip_reason == "no gaze label (face_gaze is not finite)"
    assert [s.frame_index for s in ds.samples("subject0003", limit=2)] == [0, 1]

    write_eth_xgaze_h5(tmp_path / "test_split.h5", nan_row=False, with_gaze=False)
    reasons = {s.skip_reason for s in open_dataset(tmp_path / "test_split.h5").samples("test_split")}
    assert reasons == {"no gaze label (the file has no face_gaze: a test split?)"}
    assert open_dataset(tmp_path).subjects() == ["subject0003", "test_split"]  # a folder of them


def test_xgaze_reader_takes_the_constants_from_the_file(tmp_path: Path) -> None:
    """nvsynth's own files carry their constants; older nvsynth files are mpii-nv; foreign ones ETH-XGaze's."""
    path = tmp_path / "p00.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("face_patch", data=np.zeros((1, 224, 224, 3), np.uint8))
        f.create_dataset("face_gaze", data=np.zeros((1, 2), np.float32))
        f.attrs.update({"normalization": "mpii-nv", "norm_focal": 960.0, "norm_distance": 300.0, "norm_size": 448})
    ds = open_dataset(path, "xgaze-h5")
    s = next(ds.samples("p00"))
    np.testing.assert_allclose(s.camera.matrix, geometry.normalized_camera_matrix(224))  # focal 480, c 111.75
    assert s.head is None and s.gaze_direction is not None  # no face_head_pose: the head pose from the fit
    with h5py.File(path, "a") as f:
        for k in ("normalization", "norm_focal", "norm_distance", "norm_size"):
            del f.attrs[k]
        f.attrs["nvsynth_version"] = "0.1.0"
    np.testing.assert_allclose(next(ds.samples("p00")).camera.matrix, geometry.normalized_camera_matrix(224))
    with h5py.File(path, "a") as f:
        del f.attrs["nvsynth_version"]
    np.testing.assert_allclose(next(ds.samples("p00")).camera.matrix, geometry.ETH_XGAZE.camera_matrix(224))


def test_xgaze_reader_streams_a_large_file(tmp_path: Path) -> None:
    """A 40 000-row file (6 GB of patches if loaded) is listed from its labels and read one row at a time."""
    path = tmp_path / "big.h5"
    n = 40_000
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("face_patch", shape=(n, 224, 224, 3), dtype=np.uint8, chunks=(1, 224, 224, 3))
        ds[n - 1] = 7
        f.create_dataset("face_gaze", data=np.zeros((n, 2), np.float32))
        f.create_dataset("face_head_pose", data=np.zeros((n, 2), np.float32))
    assert path.stat().st_size < 10_000_000
    samples = open_dataset(path).samples("big")
    assert sum(1 for _ in samples) == n
    image = read_image(tmp_path, f"big.h5#{n - 1}")
    assert image is not None and image.shape == (224, 224, 3) and (image == 7).all()
    assert read_image(tmp_path, f"big.h5#{n}") is None


def test_folder_reader(tmp_path: Path) -> None:
    root = export_folder(tmp_path / "p00", head=True, six=True)
    ds = open_dataset(root)
    assert ds.kind == "folder" and ds.subjects() == ["p00"]
    mp = open_dataset(SAMPLE)
    for a, b in zip(ds.samples("p00"), mp.samples("p00"), strict=True):
        assert a.frame_index == b.frame_index and a.name == b.name and a.record_name == b.record_name
        np.testing.assert_array_equal(a.camera.matrix, b.camera.matrix)
        np.testing.assert_array_equal(a.camera.dist_coeffs, b.camera.dist_coeffs)
        np.testing.assert_array_equal(a.landmarks_6, b.landmarks_6)
        np.testing.assert_array_equal(a.gaze_target, b.gaze_target)
        np.testing.assert_allclose(a.head.face_center(), b.head.face_center(), atol=1e-9)
        np.testing.assert_allclose(a.head.rotation, b.head.rotation, atol=1e-15)
    # gaze directions instead of targets, no distortion or head columns, a subject column
    (tmp_path / "f").mkdir()
    csv_text = "subject,file,fx,fy,cx,cy,gaze_x,gaze_y,gaze_z\ns1,a.png,900,900,320,240,0,0,-2\n"
    (tmp_path / "f" / "labels.csv").write_text(csv_text)
    s = next(open_dataset(tmp_path / "f").samples("s1"))
    assert s.gaze_target is None and s.head is None and not s.camera.dist_coeffs.any()
    np.testing.assert_array_equal(s.gaze_direction, [0.0, 0.0, -2.0])
    assert s.load_image() is None  # a.png does not exist: the recon stage skips it ("missing image")


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("file,fy,cx,cy,target_x,target_y,target_z", "a.jpg,1,2,3,4,5,6", r"labels\.csv:1: missing column 'fx'"),
        ("file,fx,fy,cx,cy,target_x,target_y,target_z", "a.jpg,1,x,3,4,5,6,7", r"labels\.csv:3: column 'fy': 'x'"),
        ("file,fx,fy,cx,cy", "a.jpg,1,2,3,4", r"labels\.csv:1: neither of target_x/y/z and gaze_x/y/z"),
        ("file,fx,fy,cx,cy,gaze_x,gaze_y,gaze_z,head_rx", "a.jpg,1,2,3,4,0,0,-1,0", r":1: missing column 'head_ry'"),
        ("file,fx,fy,cx,cy,gaze_x,gaze_y,gaze_z", "a.jpg,1,2,3,4,0,0,", r"labels\.csv:3: column 'gaze_z': ''"),
    ],
)
def test_folder_reader_errors_name_file_and_line(tmp_path: Path, header: str, row: str, message: str) -> None:
    good = ",".join(["b.jpg"] + ["1"] * (len(header.split(",")) - 1))
    (tmp_path / "labels.csv").write_text(f"{header}\n{good}\n{row}\n")
    with pytest.raises(DatasetError, match=message) as info:
        open_dataset(tmp_path, "folder").subjects()
    assert "\n" not in str(info.value)


def test_registry_detects_each_layout(tmp_path: Path) -> None:
    assert list(typing.get_args(DataKind)) == list(DATA_KINDS)
    assert set(DATA_KINDS) == {"auto", *READERS}
    assert detect_kind(SAMPLE) == "mpiifacegaze"
    export_folder(tmp_path / "fold", head=False, six=False)
    assert detect_kind(tmp_path / "fold") == "folder"
    (tmp_path / "x").mkdir()
    write_eth_xgaze_h5(tmp_path / "x" / "s.h5")
    assert detect_kind(tmp_path / "x") == detect_kind(tmp_path / "x" / "s.h5") == "xgaze-h5"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot tell which dataset this is"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(ConfigError, match="input not found"):
        open_dataset(tmp_path / "missing.h5")
    with pytest.raises(DatasetError, match="no subject 'p07'"):
        select_subjects(open_dataset(SAMPLE), "p00,p07")


def test_bad_inputs_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """recon --input missing.h5, an h5 without face_patch, a CSV without fx: one line each, no traceback."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  records: {tmp_path / 'rec'}\n")
    with h5py.File(tmp_path / "nopatch.h5", "w") as f:
        f.create_dataset("face_gaze", data=np.zeros((3, 2), np.float32))
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "labels.csv").write_text("file,fy,cx,cy,target_x,target_y,target_z\na.jpg,1,2,3,4,5,6\n")
    cases = [
        (tmp_path / "missing.h5", 2, "input not found"),
        (tmp_path / "nopatch.h5", 1, "nopatch.h5: no dataset 'face_patch'"),
        (tmp_path / "csv", 1, "labels.csv:1: missing column 'fx'"),
    ]
    for path, code, message in cases:
        assert main(["recon", "--config", str(cfg), "--input", str(path)]) == code
        err = capsys.readouterr().err
        assert err.startswith("nvsynth recon: error: ") and message in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "rec").exists()
