"""Landmarks on real faces: the hand-labelled iBUG photos in ../shared/faces.

Error = mean point error / outer-eye-corner distance of the labels (issue 3).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from labelled_faces import FACES, load_face

from nvsynth.core import ibug68
from nvsynth.core.errors import AssetError, DatasetError, ReconError
from nvsynth.recon.landmarks import (
    Box,
    DlibLandmarker,
    NoFaceError,
    box_from_six,
    make_landmarker,
    normalized_error,
    read_pts,
    trimmed_consensus,
)

#: Acceptance (issue 3): detector error per face.
DETECTOR_LIMIT = {"breakingbad": 0.06, "einstein": 0.12, "takeo": 0.06}


@pytest.fixture(scope="module")
def landmarker() -> DlibLandmarker:
    return DlibLandmarker()



def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a.right, b.right) - max(a.left, b.left))
    h = max(0.0, min(a.bottom, b.bottom) - max(a.top, b.top))
    return w * h / (a.area + b.area - w * h)


def test_read_pts_is_zero_based(tmp_path: Path) -> None:
    body = "\n".join(f"{i + 1}.5 {2 * i + 1}" for i in range(68))
    p = tmp_path / "x.pts"
    p.write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    pts = read_pts(p)
    assert pts.shape == (68, 2)
    np.testing.assert_allclose(pts[:, 0], np.arange(68) + 0.5)
    np.testing.assert_allclose(pts[:, 1], 2 * np.arange(68))
    (tmp_path / "bad.pts").write_text("no braces here")
    with pytest.raises(DatasetError, match=r"not an iBUG \.pts file") as info:
        read_pts(tmp_path / "bad.pts")
    assert info.value.path == tmp_path / "bad.pts"


@pytest.mark.parametrize("name", list(FACES))
def test_detector_error_with_annotation_box(shared: Path, landmarker: DlibLandmarker, name: str) -> None:
    """MPIIFaceGaze's path: the face box comes from the six annotated points."""
    img, truth = load_face(shared, name)
    lms = landmarker(img, truth[ibug68.MPII_SIX])
    assert lms.detector == "dlib/annotation"
    err = normalized_error(lms.points, truth)
    print(f"{name}: detector error {err:.4f}")
    assert err <= DETECTOR_LIMIT[name]


@pytest.mark.parametrize("name", ["takeo", "einstein"])
def test_detector_error_with_hog_detection(shared: Path, landmarker: DlibLandmarker, name: str) -> None:
    """Without annotation: HOG (upsample 0) finds the labelled face, and its landmarks are as good."""
    img, truth = load_face(shared, name)
    boxes, source = landmarker.detect_faces(img)
    assert source == "hog"
    c = truth.mean(axis=0)
    hits = [b for b in boxes if b.left <= c[0] <= b.right and b.top <= c[1] <= b.bottom]
    assert hits, "HOG missed the labelled face"
    err = normalized_error(landmarker.predict(img, hits[0]), truth)
    print(f"{name}: HOG-box detector error {err:.4f}")
    assert err <= DETECTOR_LIMIT[name]


@pytest.mark.parametrize("name", list(FACES))
def test_annotation_box_matches_hog_geometry(shared: Path, landmarker: DlibLandmarker, name: str) -> None:
    """The six-point box rule reproduces dlib's own HOG box of the face (also below HOG's threshold)."""
    img, truth = load_face(shared, name)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    dets, _, _ = landmarker.hog.run(gray, 0, -0.6)
    c = truth.mean(axis=0)
    hog = [Box.from_dlib(d) for d in dets if d.left() <= c[0] <= d.right() and d.top() <= c[1] <= d.bottom()]
    assert hog
    assert iou(box_from_six(truth[ibug68.MPII_SIX]), hog[0]) >= 0.6


def test_cnn_fallback_on_small_images(shared: Path, landmarker: DlibLandmarker) -> None:
    """The MMOD CNN detector finds takeo's face; a blank image has no face (HOG and CNN both fail)."""
    img, truth = load_face(shared, "takeo")
    boxes = landmarker.detect_cnn(img)
    assert len(boxes) == 1
    lms = landmarker.landmarks_in_box(img, boxes[0], "cnn")
    assert lms.detector == "dlib/cnn"
    assert normalized_error(lms.points, truth) <= DETECTOR_LIMIT["takeo"]
    blank = np.full((160, 160, 3), 127, np.uint8)
    with pytest.raises(NoFaceError, match="no face"):
        landmarker(blank)


def test_mirror_averaging_is_mirror_symmetric(shared: Path, landmarker: DlibLandmarker) -> None:
    """Landmarks of the mirrored image are the mirrored landmarks (relabelled left<->right)."""
    img, truth = load_face(shared, "takeo")
    box = box_from_six(truth[ibug68.MPII_SIX])
    w = img.shape[1]
    flipped = np.ascontiguousarray(img[:, ::-1])
    fbox = Box(w - box.right, box.top, w - box.left, box.bottom)
    a = landmarker.predict(img, box)
    b = landmarker.predict(flipped, fbox)
    b = np.c_[w - 1 - b[:, 0], b[:, 1]][ibug68.MIRROR]
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_trimmed_consensus_drops_the_outlier() -> None:
    """Four hypotheses that agree and one from another basin: the result is the four's mean."""
    rng = np.random.default_rng(3)
    base = rng.uniform(100.0, 300.0, (68, 2))
    good = base + rng.normal(0.0, 0.5, (4, 68, 2))
    bad = base + np.array([0.0, 25.0])
    out = trimmed_consensus(np.concatenate([good[:2], bad[None], good[2:]]))
    np.testing.assert_allclose(out, good.mean(axis=0), atol=1e-12)
    # identical hypotheses are all kept
    np.testing.assert_allclose(trimmed_consensus(np.stack([base, base, base])), base)
    with pytest.raises(ValueError):
        trimmed_consensus(np.zeros((0, 68, 2)))


@pytest.mark.parametrize(("name", "boxes"), [("breakingbad", 5), ("takeo", 1)])
def test_box_consensus_where_the_predictor_is_unstable(
    shared: Path, landmarker: DlibLandmarker, name: str, boxes: int
) -> None:
    """Breakingbad (turned ~50 deg) gets the five-box consensus, which beats its single box; takeo keeps one box."""
    img, truth = load_face(shared, name)
    box = box_from_six(truth[ibug68.MPII_SIX])
    lms = landmarker(img, truth[ibug68.MPII_SIX])
    assert lms.boxes == boxes
    single = normalized_error(landmarker.predict(img, box, consensus=False), truth)
    err = normalized_error(lms.points, truth)
    print(f"{name}: one box {single:.4f}, with consensus {err:.4f} ({lms.boxes} boxes)")
    if boxes == 1:
        assert err == single
    else:
        assert err < single - 0.003
    # the consensus is mirror-equivariant like the pair it starts from
    w = img.shape[1]
    flipped = np.ascontiguousarray(img[:, ::-1])
    b = landmarker.predict(flipped, Box(w - box.right, box.top, w - box.left, box.bottom))
    np.testing.assert_allclose(lms.points, np.c_[w - 1 - b[:, 0], b[:, 1]][ibug68.MIRROR], atol=1e-9)


def test_six_point_box_rejects_degenerate_points() -> None:
    with pytest.raises(NoFaceError):
        box_from_six(np.zeros((6, 2)))


def test_fan_backend_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without face-alignment: the pip hint; with it but offline and no weights: the file and its folder."""
    import importlib.util

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("NVSYNTH_OFFLINE", "1")
    with pytest.raises((ReconError, AssetError)) as info:
        make_landmarker("fan")
    msg = str(info.value)
    assert "\n" not in msg
    if importlib.util.find_spec("face_alignment") is None:
        assert isinstance(info.value, ReconError) and "pip install 'nvsynth[fan]'" in msg
    else:
        assert isinstance(info.value, AssetError) and "2DFAN" in msg and str(tmp_path / "torch") in msg
