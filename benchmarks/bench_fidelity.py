"""Ground-truth fidelity of nvsynth's novel views: synthetic subjects whose true 3D head is known.

1. Build subjects (``benchmarks/fidelity``): a deformed canonical face mesh per
   portrait, textured from it, rendered into MPIIFaceGaze-layout frames with a
   distorting calibration, background and a PnP six-point annotation.
2. Run ``nvsynth recon`` and ``nvsynth render`` through the CLI, with a plain
   appearance (black background, no darkening, no relighting), for the novel-view
   patterns and for ``source``.
3. Render the labelled truth (the true head, scaled about the camera centre so
   its face centre is the annotation's) at every output row's pose and compare
   (``benchmarks/fidelity/score.py`` defines every figure): median and 90th
   percentile of the DIS optical-flow displacement inside the face (the
   intersection of the two face masks, pooled over all rows' pixels), the share
   of nvsynth's face-mask pixels textured from the source's background, and the
   same flow for the true mesh pushed through nvsynth's render path (oracle,
   the floor of the measurement). Diagnostics: mask IoU, ``repro`` (the
   background-share mesh reproduces the stored patch: mean |grey difference|),
   ann/true depth (the annotation's face-centre depth over the true one) and
   ``mesh dz rms`` (nvsynth's fitted mesh minus the labelled truth over the
   template's 468 vertices, source camera, mm: mean depth offset and RMS).

The held-out subject (portrait ``takeo``, deformation seed 9001) is reported
separately: do not tune against it.

    python benchmarks/bench_fidelity.py [--out DIR] [--frames 8] [--views 4] [--workers 1]
        [--subjects astronaut,hopper,...] [--patterns gaussian,eyediap-cs] [--reuse]

Needs ``NVSYNTH_FACE_TEMPLATE`` (and ``NVSYNTH_SHARED`` for the shared faces,
``NVSYNTH_TARGETS_DIR`` for ``eyediap-cs``, ``NVSYNTH_OFFLINE=1`` offline) and
scikit-image (``pip install -e '.[test]'``). About 45 s on two busy cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fidelity import run, scene, score, sheet  # noqa: E402

#: The tuning subjects ...
SUBJECTS = (
    run.Spec("p80", "astronaut", 11),
    run.Spec("p81", "hopper", 12),
    run.Spec("p82", "breakingbad", 13),
    run.Spec("p83", "einstein", 14),
)
#: ... and the held-out one (never used for tuning).
HELD_OUT = (run.Spec("p89", "takeo", 9001),)
NOVEL_PATTERNS = ("gaussian", "eyediap-cs")


def fmt(s: score.Summary) -> str:
    return f"{s.median:5.2f} {s.p90:5.2f}"


def report(title: str, scores: list[score.RowScore], specs: list[run.Spec]) -> None:
    print(f"\n{title}")
    print(
        f"  {'subject':<16} {'rows':>4} | novel med  p90 | source med  p90 | bg share novel  src"
        " | oracle med  p90 | mask IoU | repro | ann/true depth | mesh dz rms mm"
    )
    groups = [(f"{sp.subject} {sp.portrait}", [s for s in scores if s.subject == sp.subject]) for sp in specs]
    groups.append(("all", scores))
    for label, rows in groups:
        novel = score.summarize([s for s in rows if s.pattern != "source"])
        src = score.summarize([s for s in rows if s.pattern == "source"])
        both = score.summarize(rows)
        print(
            f"  {label:<16} {both.rows:4d} |     {fmt(novel)} |      {fmt(src)} |"
            f"      {100 * novel.background_share:5.2f}% {100 * src.background_share:4.2f}%"
            f" |      {both.oracle_median:5.2f} {both.oracle_p90:5.2f} |   {both.mask_iou:5.3f}"
            f" | {both.repro:5.2f} |          {both.depth_scale:5.3f} | {src.mesh_dz_mm:+7.1f} {src.mesh_rms_mm:4.1f}"
        )
    for pattern in sorted({s.pattern for s in scores}):
        p = score.summarize([s for s in scores if s.pattern == pattern])
        print(
            f"  pattern {pattern:<11}: {p.rows} rows, flow median {p.median:.2f} px, p90 {p.p90:.2f} px, "
            f"background share {100 * p.background_share:.2f}%"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/nvsynth-fidelity"), help="work folder (replaced)")
    ap.add_argument("--frames", type=int, default=8, help="source frames per subject")
    ap.add_argument("--views", type=int, default=4, help="novel views per source frame and pattern")
    ap.add_argument("--workers", type=int, default=1, help="nvsynth recon/render workers")
    ap.add_argument("--subjects", default=None, help="portraits to use (default: all tuning subjects)")
    ap.add_argument("--patterns", default=",".join(NOVEL_PATTERNS), help="novel-view patterns")
    ap.add_argument("--no-held-out", action="store_true", help="skip the held-out subject")
    ap.add_argument("--reuse", action="store_true", help="keep the built subjects in --out (rerun nvsynth only)")
    ap.add_argument(
        "--recon",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recon.* config key for this run, e.g. detector=mediapipe or rotation_prior_deg=0.5 (repeatable)",
    )
    ap.add_argument("--sheet", type=Path, default=None, help="contact sheet PNG (default OUT/contact_sheet.png)")
    args = ap.parse_args()

    root = args.out.resolve()
    wanted = None if args.subjects is None else set(args.subjects.split(","))
    specs = [s for s in SUBJECTS if wanted is None or s.portrait in wanted]
    held = [] if args.no_held_out else list(HELD_OUT)
    every = specs + held
    timing: dict[str, float] = {}

    t = time.perf_counter()
    if args.reuse and (root / "truth").is_dir():
        truths = {sp.subject: scene.load_truth(root / "truth" / f"{sp.subject}.npz") for sp in every}
        print(f"reusing the subjects in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        print(f"building {len(every)} subjects x {args.frames} frames in {root}")
        truths = run.build(root, every, args.frames)
    timing["build subjects"] = time.perf_counter() - t

    patterns = [p for p in args.patterns.split(",") if p] + ["source"]
    recon = dict(kv.split("=", 1) for kv in args.recon)
    timing.update(run.run_nvsynth(root, [sp.subject for sp in every], patterns, args.views, args.workers, recon))
    t = time.perf_counter()
    scores = run.score_all(root, truths, patterns, keep_images=1)
    timing["scoring"] = time.perf_counter() - t

    held_ids = {sp.subject for sp in held}
    report(
        "Tuning subjects (flow in 224-px patch pixels, pooled over face-mask pixels)",
        [s for s in scores if s.subject not in held_ids],
        specs,
    )
    if held:
        report("Held-out subject (do not tune against it)", [s for s in scores if s.subject in held_ids], held)
    path = sheet.contact_sheet(
        sorted(scores, key=lambda s: (s.subject in held_ids, s.subject, s.pattern != "source", s.pattern)),
        args.sheet or root / "contact_sheet.png",
    )
    print(f"\ncontact sheet: {path}")
    print("timing (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()))
    print(f"  total {sum(timing.values()):.1f} s on {os.cpu_count()} CPU cores (shared with other jobs: under load)")


if __name__ == "__main__":
    main()
