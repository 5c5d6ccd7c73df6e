"""Test inputs in other layouts, made from the bundled MPIIFaceGaze sample's known geometry.

* :func:`write_eth_xgaze_h5`: an ETH-XGaze-layout file written the way ETH-XGaze's
  ``normalizeData_face`` writes its patches (focal 960, 600 mm, 224x224, principal
  point 112), coded here from that script and not through ``nvsynth.core.geometry``,
  so that reading it back checks nvsynth against ETH-XGaze's conventions.
* :func:`export_folder`: the sample as images plus ``labels.csv``.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
from numpy.typing import NDArray

from nvsynth.datasets import mpii

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "supplementary" / "sample"

#: ETH-XGaze's normalizeData_face constants.
FOCAL_NORM, DISTANCE_NORM, ROI = 960.0, 600.0, 224
#: MPIIGaze's six-point face model (mm), as in ETH-XGaze's and MPIIGaze's data scripts.
FACE_MODEL = np.array(
    [
        [-45.096768, -0.483773, 2.397030],
        [-21.312858, 0.483773, -2.397030],
        [21.312858, 0.483773, -2.397030],
        [45.096768, -0.483773, 2.397030],
        [-26.299577, 68.595035, 0.0],
        [26.299577, 68.595035, 0.0],
    ]
)


@dataclass(frozen=True)
class XGazeTruth:
    """What the script knew for each row: the normalized head rotation and gaze direction."""

    head_rotation: NDArray[np.float64]  # (N, 3, 3) R . hR
    gaze: NDArray[np.float64]  # (N, 3) unit, normalized camera


def normalize_face(image, hr, ht, gc, cam, dist):
    """One frame as ETH-XGaze's ``normalizeData_face`` normalizes it: (patch, gaze vector, hR_norm)."""
    hR = cv2.Rodrigues(np.asarray(hr, float).reshape(3, 1))[0]
    Fc = hR @ FACE_MODEL.T + np.asarray(ht, float).reshape(3, 1)
    face_center = Fc.mean(axis=1)  # the MPIIGaze six-point centre (nvsynth's convention)
    distance = np.linalg.norm(face_center)
    cam_norm = np.array([[FOCAL_NORM, 0, ROI / 2], [0, FOCAL_NORM, ROI / 2], [0, 0, 1.0]])
    S = np.diag([1.0, 1.0, DISTANCE_NORM / distance])
    forward = face_center / distance
    down = np.cross(forward, hR[:, 0])
    down /= np.linalg.norm(down)
    right = np.cross(down, forward)
    right /= np.linalg.norm(right)
    R = np.c_[right, down, forward].T
    W = cam_norm @ S @ R @ np.linalg.inv(cam)
    patch = cv2.warpPerspective(cv2.undistort(image, cam, dist), W, (ROI, ROI))
    g = R @ (np.asarray(gc, float) - face_center)
    return patch, g / np.linalg.norm(g), R @ hR


def write_eth_xgaze_h5(path: Path, *, nan_row: bool = True, with_gaze: bool = True) -> XGazeTruth:
    """The sample's six frames (and a seventh row with a missing gaze label) in ETH-XGaze's layout."""
    subj = mpii.open_subject(SAMPLE, "p00")
    cam = subj.calibration.camera
    patches, gazes, heads, Hs, gs = [], [], [], [], []
    for fr in subj.frames():
        patch, g, H = normalize_face(fr.load_image(), fr.head_rvec, fr.head_tvec, fr.gaze_target, cam.matrix,
                                     cam.dist_coeffs)  # fmt: skip
        patches.append(patch)
        gazes.append([np.arcsin(-g[1]), np.arctan2(-g[0], -g[2])])  # ETH-XGaze's gaze (pitch, yaw)
        heads.append([np.arcsin(H[1, 2]), np.arctan2(H[0, 2], H[2, 2])])  # and head (pitch, yaw)
        Hs.append(H)
        gs.append(g)
    if nan_row:
        patches.append(patches[0])
        gazes.append([np.nan, np.nan])
        heads.append(heads[0])
    with h5py.File(path, "w") as f:
        f.create_dataset("face_patch", data=np.stack(patches), chunks=(1, ROI, ROI, 3), compression="lzf")
        if with_gaze:
            f.create_dataset("face_gaze", data=np.array(gazes, dtype=np.float32))
        f.create_dataset("face_head_pose", data=np.array(heads, dtype=np.float32))
        f.create_dataset("frame_index", data=np.arange(len(patches), dtype=np.int32))
    return XGazeTruth(np.stack(Hs), np.stack(gs))


def export_folder(dst: Path, *, head: bool, six: bool, subject_column: bool = False) -> Path:
    """The sample as ``dst/<day>/<NNNN>.jpg`` and ``dst/labels.csv`` (with 3D gaze targets)."""
    subj = mpii.open_subject(SAMPLE, "p00")
    K, d = subj.calibration.camera.matrix, subj.calibration.camera.dist_coeffs
    rows = []
    for fr in subj.frames():
        (dst / fr.relative_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fr.image_path, dst / fr.relative_path)
        row = {"file": fr.relative_path, "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}
        row |= dict(zip(("k1", "k2", "p1", "p2", "k3"), d, strict=True))
        row |= dict(zip(("target_x", "target_y", "target_z"), fr.gaze_target, strict=True))
        if head:
            row |= dict(zip(("head_rx", "head_ry", "head_rz"), fr.head_rvec, strict=True))
            row |= dict(zip(("face_x", "face_y", "face_z"), fr.head_pose.face_center(), strict=True))
        if six:
            row |= {f"p{i + 1}_{a}": fr.landmarks_6[i, j] for i in range(6) for j, a in enumerate("xy")}
        if subject_column:
            row["subject"] = "p00"
        rows.append({k: (v if isinstance(v, str) else repr(float(v))) for k, v in row.items()})
    with open(dst / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst
