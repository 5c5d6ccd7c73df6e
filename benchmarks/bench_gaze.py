"""Gaze audit: MediaPipe Iris on rendered views, read back through the eyeball model, against the row's labels.

Records: ``nvsynth recon`` with ``recon.detector: mediapipe`` on the bundled
sample (six frames, one subject; its kappa and eyeball centre are fitted by
recon), unless ``--obj`` names existing records (a root holding
``<subject>/``) and ``--raw`` their dataset root.

Views: the render stage itself (:class:`nvsynth.render.stage.SourceRenderer`)
with ``render.gaze: gaussian`` (sigma ``--sigma``, bounded at 35 degrees) and
head poses from ``render.pattern: gaussian`` (sigma ``--head-sigma``), so the
audited rows are what ``nvsynth render`` writes. Appearance ``plain`` and no
relighting by default (the audit is of the eyes; ``--appearance mpii-nv``
audits the darkened, relit, backgrounded views too).

Audit (:mod:`nvsynth.render.gaze_audit`): the iris model on each eye of the
render (``render.render_size``, 320 x 320 shipped; before the reduction to
224), cropped from the view's eye-corner vertices (re-centred on
its estimate and averaged over small shifts), the iris centre back-projected
onto the eyeball sphere (at the limbus depth) whose centre the row's transform
places, the subject's kappa added: each eye's visual axis. Error = degrees
between that and the label: "face" = the point at the target's distance
along both eyes' mean axis, seen from the face centre, vs ``face_gaze``;
"eye" = each eye's axis vs its direction to ``gaze_target_3d``. Binned by the
eye-in-head rotation (the drawn gaze's angle from the eyes' primary position),
and, for rotations up to 30 degrees, by its main direction (up, down, image-left,
image-right: the larger of its pitch and yaw from the primary position).
This is an iris-model audit of the rendering, not a learned gaze estimator's error.

    python benchmarks/bench_gaze.py [--views 40] [--sigma 20] [--head-sigma 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SAMPLE = REPO / "supplementary" / "sample"
BINS = ((0, 10), (10, 20), (20, 30), (30, 35))


def make_records(work: Path) -> tuple[Path, Path]:
    """``nvsynth recon`` (mediapipe) on the sample into ``work``: (dataset root, records root)."""
    from nvsynth.core.config import from_dict
    from nvsynth.runtime.recon_run import run as run_recon

    cfg = from_dict({"data": {"input": str(SAMPLE), "records": str(work)}, "recon": {"detector": "mediapipe"}})
    run_recon(cfg, subjects="p00")
    return SAMPLE, work


def audit(raw: Path, obj: Path, subject: str, views: int, sigma: float, head_sigma: float,
          appearance: str, seed: int) -> np.ndarray:  # fmt: skip
    """Rows (rotation deg, face error deg, eye 0 error, eye 1 error, pitch, yaw from the primary position, deg)
    over every rendered view of ``subject``."""
    from nvsynth.core import geometry
    from nvsynth.core.config import from_dict
    from nvsynth.recon.eyeball import EyeballModel, eyeball_path
    from nvsynth.recon.mediapipe import MediaPipeLandmarker
    from nvsynth.recon.record import ReconRecord
    from nvsynth.render.backgrounds import BackgroundSource
    from nvsynth.render.gaze import load_gaze_spec, primary_gaze
    from nvsynth.render.gaze_audit import audit_view
    from nvsynth.render.patterns import load_pattern
    from nvsynth.render.stage import PreparedSource, RenderSpec, SourceRenderer
    from nvsynth.render.views import normalize_record
    from nvsynth.runtime.render_plan import list_sources

    cfg = from_dict(
        {
            "data": {"input": str(raw), "records": str(obj)},
            "render": {
                "views": views,
                "seed": seed,
                "pattern": "gaussian",
                "gaussian_sigma_deg": head_sigma,
                "gaze": "gaussian",
                "gaze_sigma_deg": sigma,
                "appearance": appearance,
                "light": {"enabled": appearance != "plain"},
            },
        }
    )
    model = EyeballModel.load(eyeball_path(obj / subject))
    spec = RenderSpec(cfg, seed, load_pattern(cfg), raw, gaze=load_gaze_spec(cfg))
    worker = SourceRenderer(spec, BackgroundSource(cfg.data.background_path))
    landmarker = MediaPipeLandmarker.from_config(cfg)
    sources, _ = list_sources(obj, subject, None)
    rows = []
    for source in sources:
        prep = worker.prepare(subject, source, eyeball=model)
        if not isinstance(prep, PreparedSource) or prep.eyes is None or prep.gaze is None:
            continue
        primary = primary_gaze(prep.eyes.rig, normalize_record(ReconRecord.load(source.path)))
        ahead = geometry.vector_from_pitchyaw(primary)
        images = worker.render_prepared(prep)
        for b, (view, lab) in enumerate(zip(prep.views, prep.gaze, strict=True)):
            img = np.ascontiguousarray(images[b, :, :, :3])
            a = audit_view(landmarker, img, view, prep.eyes.rig, lab.target)
            rot = float(geometry.angular_error_deg(geometry.vector_from_pitchyaw(lab.eye_rotation), ahead))
            rel = np.degrees(np.asarray(lab.eye_rotation) - primary)  # (pitch, yaw) from the primary position
            rows.append((rot, a.face_error_deg, *a.eye_error_deg, *rel))
    worker.close()
    return np.asarray(rows, dtype=np.float64)


def summary(rows: np.ndarray) -> list[str]:
    """One line per rotation bin and one for all rotations up to 30 degrees."""
    lines = []

    def line(name: str, sel: np.ndarray) -> str:
        r = rows[sel]
        if not len(r):
            return f"{name:>18}: no views"
        return (
            f"{name:>18}: {len(r):4d} views  face median {np.median(r[:, 1]):5.2f} deg, p90 "
            f"{np.percentile(r[:, 1], 90):5.2f} | eye median {np.median(r[:, 2:4]):5.2f}, p90 "
            f"{np.percentile(r[:, 2:4], 90):5.2f}"
        )

    for lo, hi in BINS:
        lines.append(line(f"{lo}-{hi} deg", (rows[:, 0] >= lo) & (rows[:, 0] < hi)))
    lines.append(line("all <= 30 deg", rows[:, 0] <= 30))
    pitch, yaw = rows[:, 4], rows[:, 5]
    vertical = np.abs(pitch) >= np.abs(yaw)
    for name, sel in (("up", vertical & (pitch > 0)), ("down", vertical & (pitch <= 0)),
                      ("image-left", ~vertical & (yaw > 0)), ("image-right", ~vertical & (yaw <= 0))):  # fmt: skip
        lines.append(line(f"<= 30, {name}", sel & (rows[:, 0] <= 30)))
    return lines


def main(argv: list[str] | None = None) -> None:
    from nvsynth.core.config import from_dict

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=40, help="views per source frame (default 40)")
    ap.add_argument("--sigma", type=float, default=20.0, help="render.gaze_sigma_deg (default 20)")
    ap.add_argument("--head-sigma", type=float, default=15.0, help="head-pose gaussian sigma, degrees (default 15)")
    ap.add_argument("--appearance", choices=["plain", "mpii-nv"], default="plain")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--obj", type=Path, help="existing recon records (mediapipe), root holding <subject>/")
    ap.add_argument("--raw", type=Path, help="their dataset root")
    ap.add_argument("--subject", default="p00")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nvsynth-gaze-") as tmp:
        raw, obj = (args.raw or SAMPLE, args.obj) if args.obj else make_records(Path(tmp))
        rows = audit(raw, obj, args.subject, args.views, args.sigma, args.head_sigma, args.appearance, args.seed)
    print(
        f"gaze audit (MediaPipe Iris on the {from_dict({}).render.render_size} px renders, eyeball model + kappa "
        f"vs labels), {args.subject}, "
        f"{len(rows)} views, appearance {args.appearance}, gaze sigma {args.sigma:g} deg, head sigma "
        f"{args.head_sigma:g} deg, {time.perf_counter() - t0:.0f} s"
    )
    for line in summary(rows):
        print(line)


if __name__ == "__main__":
    main()
