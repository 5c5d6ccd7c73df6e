"""Contact sheets of redirected gaze: a 5 x 5 gaze sweep with the head fixed, and head and gaze both sampled.

Records: ``nvsynth recon`` (mediapipe) on the bundled sample, unless ``--obj``.

* ``gaze_sweep.jpg``: one source frame at its own head pose; the eyes turned to
  eye-in-head rotations of -30 ... +30 degrees in pitch (rows, up at the top)
  and yaw (columns, image-left at the left) about the eyes' primary position
  (:func:`nvsynth.render.gaze.primary_gaze`), target 600 mm from the face centre.
  The upper face of each 224 patch, as ``nvsynth render`` stores it (drawn at
  ``render.render_size``, reduced to 224).
* ``gaze_sampled.jpg``: rows of ``nvsynth render --gaze gaussian`` (head poses
  from ``render.pattern: gaussian``), 224 patches with the gaze label drawn
  from the face centre (red).

    python benchmarks/gaze_sheets.py [-o docs]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_gaze import SAMPLE, make_records  # noqa: E402

GRID_DEG = (30.0, 15.0, 0.0, -15.0, -30.0)
JPEG_QUALITY = 90


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (4, img.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, text, (4, img.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)


def sweep(obj: Path, raw: Path, frame: int) -> np.ndarray:
    """The 5 x 5 sheet (BGR) of one source frame."""
    from nvsynth.core.config import Config
    from nvsynth.core.geometry import normalized_camera_matrix
    from nvsynth.recon.eyeball import EyeballModel, eyeball_path
    from nvsynth.recon.record import ReconRecord
    from nvsynth.recon.template import template_from_config
    from nvsynth.render.compose import finish_composited
    from nvsynth.render.compositing import Backdrop
    from nvsynth.render.eye_gl import EyeScene
    from nvsynth.render.eyes import build_eye_rig, eye_pose
    from nvsynth.render.gaze import GazeDraw, eye_orientations, primary_gaze, redirect_view
    from nvsynth.render.gl import FaceRenderer
    from nvsynth.render.uvlayout import TemplateChart
    from nvsynth.render.views import make_view, normalize_record

    model = EyeballModel.load(eyeball_path(obj / "p00"))
    path = sorted((obj / "p00").rglob("*.npz"))[frame]
    rec = ReconRecord.load(path)
    image = cv2.imread(str(raw / rec.source_file), cv2.IMREAD_COLOR)
    chart = TemplateChart.of(template_from_config(Config()))  # the render stage's atlas layout
    rig = build_eye_rig(rec, image, model, chart)
    if rig is None:
        raise SystemExit(f"{path}: no eyes to redirect")
    src = normalize_record(rec)
    view = make_view(src, src.pose, rec.landmarks_3d)
    primary = primary_gaze(rig, src)
    views, poses, names = [], [], []
    for p in GRID_DEG:
        for y in GRID_DEG:
            new, lab = redirect_view(view, GazeDraw(primary + np.radians([p, y]), 600.0, 1))
            views.append(new)
            poses.append(eye_pose(rig, eye_orientations(rig, new, lab.target)))
            names.append(f"{p:+.0f}/{y:+.0f}")
    size = Config().render.render_size  # drawn as nvsynth render draws, reduced to 224
    renderer = FaceRenderer(size, camera_matrix=normalized_camera_matrix(size))
    grey = [Backdrop(color=(90, 90, 90))] * len(views)
    T = np.stack([v.transform for v in views])
    full = renderer.render_composited(rig.texture, rig.face, T, None, grey, eyes=EyeScene(rig, tuple(poses)))
    renderer.release()
    patches, _ = finish_composited(full)
    tiles = []
    for patch, name in zip(patches, names, strict=True):
        tile = np.ascontiguousarray(patch[10:110, 12:212])
        _label(tile, name)
        tiles.append(tile)
    return np.vstack([np.hstack(tiles[r * 5 : (r + 1) * 5]) for r in range(5)])


def sampled(obj: Path, raw: Path, out_dir: Path) -> np.ndarray:
    """A 4 x 4 sheet of ``nvsynth render --gaze gaussian`` rows with their gaze labels."""
    import h5py

    from nvsynth.core import geometry
    from nvsynth.core.config import from_dict
    from nvsynth.runtime.render_run import run

    cfg = from_dict(
        {
            "data": {"input": str(raw), "records": str(obj)},
            "render": {"views": 8, "seed": 1, "pattern": "gaussian", "gaussian_sigma_deg": 20.0, "gaze": "gaussian",
                       "gaze_sigma_deg": 15.0},
        }
    )  # fmt: skip
    run(cfg, out_dir)
    with h5py.File(out_dir / "p00.h5", "r") as f:
        rows = np.linspace(0, len(f["face_patch"]) - 1, 16).astype(int)
        tiles = []
        for i in rows:
            img = np.ascontiguousarray(f["face_patch"][i])
            g = geometry.vector_from_pitchyaw(f["face_gaze"][i].astype(np.float64))
            start = np.array([111.75, 111.75])  # the face centre: the 224 patch's principal point
            end = start + 60.0 * g[:2] / max(np.linalg.norm(g[:2]), 1e-6) * np.linalg.norm(g[:2])
            cv2.arrowedLine(img, tuple(np.round(start).astype(int)), tuple(np.round(end).astype(int)), (0, 0, 255),
                            2, cv2.LINE_AA, tipLength=0.2)  # fmt: skip
            py, er = np.degrees(f["face_gaze"][i]), np.degrees(f["eye_rotation"][i])
            _label(img, f"g {py[0]:+.0f}/{py[1]:+.0f} eye {er[0]:+.0f}/{er[1]:+.0f}")
            tiles.append(img)
    return np.vstack([np.hstack(tiles[r * 4 : (r + 1) * 4]) for r in range(4)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=REPO / "docs")
    ap.add_argument("--frame", type=int, default=0, help="source frame of the sweep (default 0)")
    ap.add_argument("--obj", type=Path)
    ap.add_argument("--raw", type=Path)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nvsynth-sheets-") as tmp:
        raw, obj = (args.raw or SAMPLE, args.obj) if args.obj else make_records(Path(tmp) / "recon")
        for name, sheet in (("gaze_sweep.jpg", sweep(obj, raw, args.frame)),
                            ("gaze_sampled.jpg", sampled(obj, raw, Path(tmp) / "render"))):  # fmt: skip
            path = args.out / name
            cv2.imwrite(str(path), sheet, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            print(f"wrote {path} ({sheet.shape[1]}x{sheet.shape[0]}, {path.stat().st_size / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
