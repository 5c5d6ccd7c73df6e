"""Recon speed on 1280x720 frames: landmarks and fit, per frame, on one core.

Frames: the bundled sample subject (``supplementary/sample/p00``, 1280x720,
calibrated) unless ``--raw/--subject`` name an MPIIFaceGaze subject.
Two landmark paths: the MPIIFaceGaze one (face box from the annotation's six
points, no detection) and dlib HOG detection (upsample 0). Both run the
68-point predictor twice (image and mirror, averaged), and ten times where
the two disagree (five-box consensus, ``recon.landmarks.TTA_UNSTABLE``); the
annotation path is also timed with the consensus forced on every frame (the
cost on a hard, turned face). Then the fit (PnP, scale, deformation) and the
rest of a record (visibility, uv).

The dense backend (``recon.detector: mediapipe``, one LiteRT thread, as in a
worker): Face Mesh in the six-point crop (crop + inference + mapping back), the
Iris model on both eyes, and the whole landmarker call. It needs the two model
files (``assets.*`` or ``$NVSYNTH_FACE_LANDMARK_MODEL`` /
``$NVSYNTH_IRIS_LANDMARK_MODEL``); ``--no-dense`` skips it.

Figures are CPU milliseconds of this process (BLAS limited to one thread,
as in recon's workers) and wall milliseconds; the median over all repeats.

    python benchmarks/bench_recon.py [--repeats 5] [--raw DIR --subject p00 --frames 20]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: recon's workers run single-threaded BLAS

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nvsynth.core.config import load_config  # noqa: E402
from nvsynth.datasets.mpii import open_subject  # noqa: E402
from nvsynth.recon.fit import FitModel, fit_landmarks, fit_weights  # noqa: E402
from nvsynth.recon.landmarks import DlibLandmarker  # noqa: E402
from nvsynth.recon.mediapipe import MediaPipeLandmarker, Roi  # noqa: E402
from nvsynth.recon.template import load_landmark_map, template_from_config  # noqa: E402
from nvsynth.recon.visibility import visible_vertices  # noqa: E402


class Clock:
    """CPU and wall time of repeated calls, in ms."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []

    def __call__(self, fn, *args):
        c, w = time.process_time(), time.perf_counter()
        out = fn(*args)
        self.cpu.append((time.process_time() - c) * 1e3)
        self.wall.append((time.perf_counter() - w) * 1e3)
        return out

    def row(self, label: str) -> str:
        return f"  {label:<44} {np.median(self.cpu):8.2f} {np.median(self.wall):8.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="recon speed per frame (landmarks, fit) on 1280x720 frames")
    ap.add_argument("--config", type=Path, default=None, help="config for the face template (or NVSYNTH_FACE_TEMPLATE)")
    ap.add_argument("--raw", type=Path, default=REPO / "supplementary" / "sample", help="MPIIFaceGaze root")
    ap.add_argument("--subject", default="p00")
    ap.add_argument("--frames", type=int, default=20, help="at most this many frames")
    ap.add_argument("--repeats", type=int, default=5, help="passes over the frames")
    ap.add_argument("--no-dense", action="store_true", help="skip the mediapipe backend")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    # the shipped fit: placed by the annotation, with the configured rotation prior (recon.rotation_prior_deg)
    model = FitModel(template_from_config(cfg), load_landmark_map(cfg), fit_weights(cfg.recon))
    landmarker = DlibLandmarker()
    always = DlibLandmarker(tta_unstable=0.0)  # the five-box consensus on every frame
    subj = open_subject(args.raw, args.subject)
    cam = subj.calibration.camera
    frames = subj.frame_list(args.frames)
    images = [f.load_image() for f in frames]
    h, w = images[0].shape[:2]

    t_ann, t_all, t_hog, t_fit, t_rec = Clock(), Clock(), Clock(), Clock(), Clock()
    missed = 0
    consensus = 0
    for _ in range(args.repeats):
        for fr, img in zip(frames, images, strict=True):
            lms = t_ann(landmarker, img, fr.landmarks_6)
            consensus += lms.boxes > 1
            t_all(always, img, fr.landmarks_6)
            try:
                t_hog(landmarker, img, None)
            except Exception:
                missed += 1
            ideal = cam.undistort_points(lms.points)
            fit = t_fit(lambda p=ideal, a=fr.head_pose: fit_landmarks(model, p, cam.matrix, annotation=a))
            t_rec(lambda f=fit: (visible_vertices(f.vertices, model.faces, cam.matrix), cam.project(f.vertices)))

    ann = np.median(t_ann.cpu) + np.median(t_fit.cpu)
    hog = np.median(t_hog.cpu) + np.median(t_fit.cpu)
    print(f"recon benchmark: {len(frames)} frames of {w}x{h} ({args.raw.name}/{args.subject}), {args.repeats} passes")
    print(f"  {'median per frame':<44} {'CPU ms':>8} {'wall ms':>8}")
    print(t_ann.row("landmarks, annotation box (dlib x2 or x10)"))
    print(t_all.row("landmarks, annotation box, 5-box consensus"))
    print(t_hog.row("landmarks, HOG detection + dlib x2"))
    print(t_fit.row("fit (PnP, scale, prior, deformation)"))
    print(t_rec.row("record extras (visibility, uv)"))
    print(f"  landmarks + fit, annotation landmarks: {ann:.1f} ms CPU per frame (target <= 30)")
    print(f"  landmarks + fit, HOG detection:        {hog:.1f} ms CPU per frame")
    worst = np.median(t_all.cpu) + np.median(t_fit.cpu)
    print(f"  landmarks + fit, consensus forced:     {worst:.1f} ms CPU per frame")
    print(f"  (five-box consensus needed on {consensus} of {len(frames) * args.repeats} frames)")
    if missed:
        print(f"  (HOG found no face {missed} times)")
    if not args.no_dense:
        bench_dense(MediaPipeLandmarker.from_config(cfg), frames, images, args.repeats)
    return 0


def bench_dense(dense: MediaPipeLandmarker, frames, images, repeats: int) -> None:
    """Face Mesh, Iris (both eyes) and the whole mediapipe landmarker call, per frame."""
    dense.load()
    t_face, t_iris, t_call = Clock(), Clock(), Clock()
    for _ in range(repeats):
        for fr, img in zip(frames, images, strict=True):
            mesh = t_face(dense.face_mesh, img, Roi.from_six(fr.landmarks_6))
            t_iris(dense.irises, img, mesh.points)
            t_call(dense, img, fr.landmarks_6)
    print(f"  {'mediapipe backend (one LiteRT thread)':<44} {'CPU ms':>8} {'wall ms':>8}")
    print(t_face.row("face mesh, six-point crop (target ~5)"))
    print(t_iris.row("iris, both eyes (target ~5)"))
    print(t_call.row("landmarker call (mesh + iris + 68 points)"))


if __name__ == "__main__":
    sys.exit(main())
