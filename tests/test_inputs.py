"""Other inputs end to end: nvsynth's own h5 back in, an ETH-XGaze-layout file, a folder with labels.csv.

Every run goes through the command line (recon, render, inspect) on the
bundled sample or on files made from its known geometry (``inputs_data``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from inputs_data import SAMPLE, export_folder, write_eth_xgaze_h5

from nvsynth.app.cli import main
from nvsynth.recon.record import ReconRecord

#: Same appearance in both passes of a round trip: no background image, darkening or relighting.
PLAIN = "render:\n  appearance: plain\n  light: {enabled: false}\n"


def config(folder: Path, name: str, data: dict[str, Path | str], extra: str = PLAIN) -> Path:
    lines = "".join(f"  {k}: {v}\n" for k, v in data.items())
    path = folder / f"{name}.yaml"
    path.write_text(f"data:\n{lines}{extra}")
    return path


def labels_deg(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {k: np.degrees(f[k][:].astype(np.float64)) for k in ("face_gaze", "face_head_pose", "target_pose")}


@pytest.fixture(scope="module")
def mpii_records(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample reconstructed once through the MPIIFaceGaze reader; returns the folder of the run."""
    work = tmp_path_factory.mktemp("mpii")
    cfg = config(work, "mpii", {"input": SAMPLE, "records": work / "records"})
    assert main(["recon", "--config", str(cfg)]) == 0
    return work


def test_round_trip_through_nvsynth_h5(mpii_records: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """sample -> render (source) -> h5 -> recon --input h5 -> render (source): the same labels and faces."""
    first = config(mpii_records, "mpii", {"input": SAMPLE, "records": mpii_records / "records"})
    args = ["-save", str(tmp_path / "A"), "--pattern", "source", "--views", "1"]
    assert main(["render", "--config", str(first), *args]) == 0
    a_file = tmp_path / "A" / "p00.h5"
    second = config(tmp_path, "again", {"records": tmp_path / "records2"})
    assert main(["recon", "--config", str(second), "--input", str(a_file)]) == 0
    assert "6 frames ok" in capsys.readouterr().out
    rec = ReconRecord.load(tmp_path / "records2" / "p00" / "000002.npz")
    assert rec.source_file == "p00.h5#2" and rec.image_root == str(a_file.parent) and rec.head_origin == "dataset"
    assert rec.detector == "dlib/label"  # face box from the labels' six model points, landmarks from dlib
    args = ["-save", str(tmp_path / "B"), "--pattern", "source", "--views", "1"]
    assert main(["render", "--config", str(second), *args]) == 0

    la, lb = labels_deg(a_file), labels_deg(tmp_path / "B" / "p00.h5")
    for key in ("face_gaze", "face_head_pose"):
        assert np.abs(la[key] - lb[key]).max() < 0.01, key
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    with h5py.File(a_file) as fa, h5py.File(tmp_path / "B" / "p00.h5") as fb:
        assert fb.attrs["normalization"] == "mpii-nv" and fb.attrs["norm_distance"] == 300.0
        for i in range(len(fa["face_patch"])):
            face = (fa["face_mask"][i] > 0) & (fb["face_mask"][i] > 0)
            assert face.mean() > 0.5
            gray = [cv2.cvtColor(f["face_patch"][i], cv2.COLOR_BGR2GRAY) for f in (fa, fb)]
            flow = np.linalg.norm(dis.calc(gray[0], gray[1], None), axis=2)
            assert np.median(flow[face]) < 1.0, i  # measured: 0.04 px


def test_eth_xgaze_file_exact_labels_eyediap_cs_and_inspect(shared: Path, tmp_path: Path) -> None:
    """A file written in ETH-XGaze's constants: labels read exactly, rendered under eyediap-cs, valid output."""
    src = tmp_path / "subject0007.h5"
    write_eth_xgaze_h5(src)
    cfg = config(tmp_path, "x", {"input": src, "records": tmp_path / "records"})
    assert main(["recon", "--config", str(cfg)]) == 0
    manifest = (tmp_path / "records" / "subject0007" / "manifest.csv").read_text()
    assert "subject0007.h5#6,skipped,no gaze label (face_gaze is not finite)" in manifest
    # the source pose in ETH-XGaze's own normalization: the input's labels, exactly
    args = ["--pattern", "source", "--views", "1", "--normalization", "eth-xgaze"]
    assert main(["render", "--config", str(cfg), "-save", str(tmp_path / "src"), *args]) == 0
    with h5py.File(src) as f:
        want = {k: np.degrees(f[k][:6].astype(np.float64)) for k in ("face_gaze", "face_head_pose")}
    got = labels_deg(tmp_path / "src" / "subject0007.h5")
    for key, value in want.items():
        assert np.abs(got[key] - value).max() < 0.01, key
    # novel views under eyediap-cs, checked by inspect
    args = ["--pattern", "eyediap-cs", "--views", "3", "--normalization", "eth-xgaze"]
    assert main(["render", "--config", str(cfg), "-save", str(tmp_path / "cs"), *args]) == 0
    assert main(["inspect", str(tmp_path / "cs")]) == 0
    with h5py.File(tmp_path / "cs" / "subject0007.h5") as f:
        assert f["face_patch"].shape == (18, 224, 224, 3)
        assert (f.attrs["normalization"], f.attrs["norm_distance"], f.attrs["norm_size"]) == ("eth-xgaze", 600.0, 224)
    np.testing.assert_allclose(got["face_head_pose"], got["target_pose"], atol=1e-4)


def test_folder_gives_the_labels_of_the_mpii_path(mpii_records: Path, tmp_path: Path) -> None:
    """The sample exported as images + labels.csv renders the MPIIFaceGaze path's labels (and, with its six
    points, the same patches); without head-pose columns the head pose comes from the detected landmarks by
    MPIIFaceGaze's own procedure, which is how the sample was annotated: the same labels again."""
    first = config(mpii_records, "mpii", {"input": SAMPLE, "records": mpii_records / "records"})
    render = ["--pattern", "eyediap-cs", "--views", "2"]
    assert main(["render", "--config", str(first), "-save", str(tmp_path / "mpii"), *render]) == 0
    want = labels_deg(tmp_path / "mpii" / "p00.h5")

    export_folder(tmp_path / "full" / "p00", head=True, six=True)
    cfg = config(tmp_path, "full", {"input": tmp_path / "full" / "p00", "records": tmp_path / "rec_full"})
    assert main(["recon", "--config", str(cfg)]) == 0
    assert main(["render", "--config", str(cfg), "-save", str(tmp_path / "h5_full"), *render]) == 0
    got = labels_deg(tmp_path / "h5_full" / "p00.h5")
    for key in want:
        assert np.abs(got[key] - want[key]).max() < 0.01, key
    with h5py.File(tmp_path / "mpii" / "p00.h5") as a, h5py.File(tmp_path / "h5_full" / "p00.h5") as b:
        assert np.array_equal(a["face_patch"][:], b["face_patch"][:])

    export_folder(tmp_path / "fit" / "p00", head=False, six=False)
    cfg = config(tmp_path, "fit", {"input": tmp_path / "fit" / "p00", "records": tmp_path / "rec_fit"})
    assert main(["recon", "--config", str(cfg)]) == 0
    assert ReconRecord.load(tmp_path / "rec_fit" / "p00" / "day01" / "0001.npz").head_origin == "landmarks"
    assert main(["render", "--config", str(cfg), "-save", str(tmp_path / "h5_fit"), *render]) == 0
    got = labels_deg(tmp_path / "h5_fit" / "p00.h5")
    for key in want:
        assert np.abs(got[key] - want[key]).max() < 0.01, key
