"""Render speed: end to end (recon records -> h5) against the raw renderer, in one run.

Records: ``nvsynth recon`` on the bundled sample subject
(``supplementary/sample/p00``, six 1280x720 frames), cycled to ``--sources``
source frames (each copy gets its own frame index, so its views and
appearance differ), unless ``--obj/--raw`` name existing records.

* end to end: :func:`render.pipeline.run` with ``--workers`` processes and
  ``--views`` views per source, the real pipeline (view sampling, mesh,
  render, backgrounds, compositing, lzf, h5 writes, manifest). Reported with
  and without the pool's start-up (time to the first finished source).
* raw: :func:`render.bench.raw_renderer_throughput` on one record and its
  frame with the same number of views, in this process (one renderer).
* ratio: end-to-end time per image over raw time per image.

    python benchmarks/bench_render.py [--sources 60] [--views 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from nvsynth.config import Config, from_dict  # noqa: E402
from nvsynth.seeding import STREAM_POSE, view_rng  # noqa: E402
from recon.record import ReconRecord  # noqa: E402

SAMPLE_RAW = REPO / "supplementary" / "sample"


def make_records(work: Path, sources: int) -> tuple[Path, Path]:
    """Recon on the sample subject, then the records cycled to ``sources`` frames."""
    from recon.pipeline import run as run_recon

    first = work / "recon"
    cfg = from_dict({"data": {"mpii": {"raw": str(SAMPLE_RAW), "obj": str(first)}}})
    run_recon(cfg, subjects="p00")
    records = sorted((ReconRecord.load(p) for p in (first / "p00").rglob("*.npz")), key=lambda r: r.frame_index)
    if not records:
        raise SystemExit("recon produced no records for the sample subject")
    obj = work / "obj"
    for i in range(sources):
        rec = dataclasses.replace(records[i % len(records)], frame_index=i)
        rec.save(obj / "p00" / "day01" / f"{i:05d}.npz")
    return SAMPLE_RAW, obj


def raw_throughput(cfg: Config, obj: Path, raw: Path, views: int, repeats: int) -> float:
    """Images/s of the renderer alone on the first record, with that record's pipeline views."""
    from render.bench import raw_renderer_throughput
    from render.patterns import load_pattern
    from render.views import normalize_record, sample_view

    path = sorted((obj / "p00").rglob("*.npz"))[0]
    rec = ReconRecord.load(path)
    image = cv2.imread(str(raw / rec.source_file), cv2.IMREAD_COLOR)
    src = normalize_record(rec)
    pattern = load_pattern(cfg)
    transforms = []
    for v in range(10 * views):
        s = sample_view(
            src, pattern, view_rng(cfg.render.seed, "p00", rec.frame_index, v, STREAM_POSE), rec.landmarks_3d, 80.0, 20
        )
        if s.view is not None:
            transforms.append(s.view.transform)
        if len(transforms) == views:
            break
    return raw_renderer_throughput(rec, image, np.stack(transforms), repeats=repeats)


def cpu_seconds(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: kB


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=60, help="source frames to render (default 60)")
    ap.add_argument("--views", type=int, default=16, help="views per source (default 16)")
    ap.add_argument("--workers", type=int, default=2, help="render workers (default 2)")
    ap.add_argument("--repeats", type=int, default=20, help="raw renderer batches (default 20)")
    ap.add_argument("--obj", type=Path, help="existing recon records (root holding p00/)")
    ap.add_argument("--raw", type=Path, help="the dataset root their source_file paths are relative to")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nvsynth-bench-") as tmp:
        work = Path(tmp)
        if args.obj is not None:
            obj, raw = args.obj, args.raw or SAMPLE_RAW
        else:
            raw, obj = make_records(work, args.sources)
        cfg = from_dict(
            {
                "data": {"mpii": {"raw": str(raw), "obj": str(obj)}},
                "render": {"views": args.views, "workers": args.workers, "seed": 0},
            }
        )
        raw_ips = raw_throughput(cfg, obj, raw, args.views, args.repeats)

        from render.pipeline import run

        out = work / "out"
        cpu0 = {who: cpu_seconds(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)}
        t0 = time.perf_counter()
        run(cfg, out, subjects="p00", limit=args.sources)
        wall = time.perf_counter() - t0
        cpu = {who: cpu_seconds(who) - c for who, c in cpu0.items()}
        manifest = json.loads((out / "manifest.json").read_text())
        images = int(manifest["totals"]["rows_this_run"])
        size_mb = sum(p.stat().st_size for p in out.glob("*.h5")) / 1e6

    timing = manifest["timing_s"]
    first = float(timing["first_result"])
    e2e_ips = images / wall
    # steady state: the first finished source counted with the start-up
    steady_ips = (images - args.views) / max(wall - first, 1e-9)
    print(f"device: {manifest['versions']['gl_renderer']}, {os.cpu_count()} CPUs, workers {args.workers}")
    print(f"images: {images} ({args.views} views x {images // max(args.views, 1)} sources), h5 {size_mb:.1f} MB")
    print(f"end to end:   {e2e_ips:7.1f} images/s  ({wall:.2f} s wall, incl. {first:.2f} s to the first source)")
    print(f"steady state: {steady_ips:7.1f} images/s  (after the first source)")
    print(f"raw renderer: {raw_ips:7.1f} images/s  (one process, batches of {args.views})")
    print(
        f"ratio (end-to-end time per image / raw): {raw_ips / e2e_ips:.2f}x overall, "
        f"{raw_ips / steady_ips:.2f}x steady state"
    )
    stages = {k.removeprefix("worker_"): v for k, v in timing.items() if k.startswith("worker_")}
    per_img = ", ".join(f"{k} {1000 * v / images:.2f}" for k, v in stages.items())
    print(f"worker ms/image (summed over workers): {per_img}")
    print(f"main ms/image: write {1000 * timing.get('main_write', 0.0) / images:.2f} (wall)")
    print(
        f"CPU ms/image: main process {1000 * cpu[resource.RUSAGE_SELF] / images:.2f}, "
        f"workers {1000 * cpu[resource.RUSAGE_CHILDREN] / images:.2f} (start-up included)"
    )
    print(
        f"peak RSS: main {peak_rss_mb(resource.RUSAGE_SELF):.0f} MB, "
        f"largest worker {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB"
    )


if __name__ == "__main__":
    main()
