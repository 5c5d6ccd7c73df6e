"""Render speed: end to end (recon records -> h5) against the raw renderer, in one run.

Records: ``nvsynth recon`` on the bundled sample subject
(``supplementary/sample/p00``, six 1280x720 frames), cycled to ``--sources``
source frames (each copy gets its own frame index, so its views and
appearance differ), unless ``--obj/--raw`` name existing records.

Definitions (printed with the figures):

* end to end: the wall time of :func:`nvsynth.runtime.render_run.run` on those sources
  with ``--workers`` processes and ``--views`` views per source -- the real
  pipeline, from recon records to the committed h5: worker start-up, record
  and image loading, view and appearance sampling, mesh, backgrounds,
  rendering, area resize, lzf, h5 writes, manifest. Also reported without the
  start-up (after the first finished source).
* raw: the renderer alone on the same sources, views and backdrops, in the
  same machine layout as the pipeline (``--workers`` 'spawn' processes with
  one llvmpipe thread each): ``pipeline_raw_throughput`` (benchmarks/render_raw.py)
  times only ``FaceRenderer.render_composited`` (texture, mesh and
  background uploads, draws, readback); everything else is prepared
  beforehand, untimed. One process with two llvmpipe threads is measured too.
  Both layouts are measured before and after the end-to-end run; the ratio
  uses the fastest raw figure (so machine noise can only make it harsher).
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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SAMPLE_RAW = REPO / "supplementary" / "sample"


def make_records(work: Path, sources: int, detector: str = "dlib") -> tuple[Path, Path]:
    """Recon on the sample subject, then the records (and the eyeball model, if any) cycled to ``sources`` frames."""
    import shutil

    from nvsynth.core.config import from_dict
    from nvsynth.recon.eyeball import eyeball_path
    from nvsynth.recon.record import ReconRecord
    from nvsynth.runtime.recon_run import run as run_recon

    first = work / "recon"
    cfg = from_dict({"data": {"mpii": {"raw": str(SAMPLE_RAW), "obj": str(first)}}, "recon": {"detector": detector}})
    run_recon(cfg, subjects="p00")
    records = sorted((ReconRecord.load(p) for p in (first / "p00").rglob("*.npz")), key=lambda r: r.frame_index)
    if not records:
        raise SystemExit("recon produced no records for the sample subject")
    obj = work / "obj"
    for i in range(sources):
        rec = dataclasses.replace(records[i % len(records)], frame_index=i)
        rec.save(obj / "p00" / "day01" / f"{i:05d}.npz")
    if eyeball_path(first / "p00").is_file():
        shutil.copy(eyeball_path(first / "p00"), eyeball_path(obj / "p00"))
    return SAMPLE_RAW, obj


def cpu_seconds(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: kB


def main(argv: list[str] | None = None) -> None:
    from render_raw import RawRun, pipeline_raw_throughput

    from nvsynth.core.config import from_dict
    from nvsynth.core.h5io import lzf_backend
    from nvsynth.render.backgrounds import BackgroundSource
    from nvsynth.render.patterns import load_pattern
    from nvsynth.render.stage import RenderSpec
    from nvsynth.runtime.render_plan import list_sources
    from nvsynth.runtime.render_run import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=60, help="source frames to render (default 60)")
    ap.add_argument("--views", type=int, default=16, help="views per source (default 16)")
    ap.add_argument("--workers", type=int, default=2, help="render workers (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="raw renderer passes over the sources (default 2)")
    ap.add_argument("--obj", type=Path, help="existing recon records (root holding p00/)")
    ap.add_argument("--raw", type=Path, help="the dataset root their source_file paths are relative to")
    ap.add_argument(
        "--gaze",
        action="store_true",
        help="mediapipe records; also run end to end with render.gaze: gaussian (redirected eyes), both figures",
    )
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nvsynth-bench-") as tmp:
        work = Path(tmp)
        if args.obj is not None:
            obj, raw = args.obj, args.raw or SAMPLE_RAW
        else:
            raw, obj = make_records(work, args.sources, "mediapipe" if args.gaze else "dlib")
        cfg = from_dict(
            {
                "data": {"mpii": {"raw": str(raw), "obj": str(obj)}},
                "render": {"views": args.views, "workers": args.workers, "seed": 0},
            }
        )

        # raw: the renderer alone, same sources/views/backdrops, the pipeline's layout and one alternative
        spec = RenderSpec(cfg=cfg, seed=int(cfg.render.seed), pattern=load_pattern(cfg), image_root=Path(raw))
        backgrounds = BackgroundSource(cfg.data.background_path)
        sources, _ = list_sources(Path(obj), "p00", args.sources)
        layouts = [(max(1, args.workers), 1), (1, 2)]

        def measure_raw() -> dict[tuple[int, int], RawRun]:
            return {
                lay: pipeline_raw_throughput(spec, backgrounds, "p00", sources, *lay, args.repeats) for lay in layouts
            }

        raw_before = measure_raw()

        out = work / "out"
        cpu0 = {who: cpu_seconds(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)}
        t0 = time.perf_counter()
        run(cfg, out, subjects="p00", limit=args.sources)
        wall = time.perf_counter() - t0
        cpu = {who: cpu_seconds(who) - c for who, c in cpu0.items()}
        manifest = json.loads((out / "manifest.json").read_text())
        images = int(manifest["totals"]["rows_this_run"])
        size_mb = sum(p.stat().st_size for p in out.glob("*.h5")) / 1e6
        # measured before and after the end-to-end run; the faster of each layout counts (the harsher ratio)
        gaze_line = ""
        if args.gaze:  # redirected eyes (render.gaze: gaussian) against off, alternating, the faster of two each
            gcfg = cfg.model_copy(update={"render": cfg.render.model_copy(update={"gaze": "gaussian"})})
            per_image: dict[str, list[float]] = {"off": [wall / images], "on": []}  # seconds per image
            for k, c in (("on", gcfg), ("off", cfg), ("on", gcfg)):
                dest = work / f"out-{k}-{len(per_image[k])}"
                t1 = time.perf_counter()
                run(c, dest, subjects="p00", limit=args.sources)
                rows = int(json.loads((dest / "manifest.json").read_text())["totals"]["rows_this_run"])
                per_image[k].append((time.perf_counter() - t1) / max(rows, 1))
            on, off = min(per_image["on"]), min(per_image["off"])
            gaze_line = (
                f"end to end, gaze redirection on (render.gaze: gaussian): {1 / on:7.1f} images/s, off: "
                f"{1 / off:7.1f} images/s (the faster of two alternating runs each, start-up included); "
                f"time per image on/off: {on / off:.2f}x"
            )
        raw_after = measure_raw()
        raws = {lay: max(raw_before[lay], raw_after[lay], key=lambda r: r.images_per_s) for lay in layouts}
        best = max(raws.values(), key=lambda r: r.images_per_s)

    timing = manifest["timing_s"]
    first = float(timing["first_result"])
    e2e_ips = images / wall
    # steady state: the first finished source counted with the start-up
    steady_ips = (images - args.views) / max(wall - first, 1e-9)
    print(f"device: {manifest['versions']['gl_renderer']}, {os.cpu_count()} CPUs; lzf by {lzf_backend()}")
    print(f"images: {images} ({args.views} views x {images // max(args.views, 1)} sources), h5 {size_mb:.1f} MB")
    print(
        f"end to end:   {e2e_ips:7.1f} images/s  (records -> committed h5, {args.workers} workers: "
        f"{wall:.2f} s wall, incl. {first:.2f} s to the first source)"
    )
    print(f"steady state: {steady_ips:7.1f} images/s  (after the first source)")
    if gaze_line:
        print(gaze_line)
    for (procs, lp), r in raws.items():
        print(
            f"raw renderer: {r.images_per_s:7.1f} images/s  (render_composited alone on the same views and "
            f"backdrops, {procs} process(es) x {lp} llvmpipe thread(s), {r.images} images, "
            f"{r.cpu_ms_per_image:.2f} CPU-ms/image; before/after e2e: {raw_before[(procs, lp)].images_per_s:.0f}/"
            f"{raw_after[(procs, lp)].images_per_s:.0f})"
        )
    print(
        f"ratio (end-to-end time per image / raw, best raw layout): {best.images_per_s / e2e_ips:.2f}x overall, "
        f"{best.images_per_s / steady_ips:.2f}x steady state"
    )
    stages = {k.removeprefix("worker_"): v for k, v in timing.items() if k.startswith("worker_")}
    per_img = ", ".join(f"{k} {1000 * v / images:.2f}" for k, v in stages.items())
    print(f"worker wall ms/image (summed over workers): {per_img}")
    print(f"main ms/image: write {1000 * timing.get('main_write', 0.0) / images:.2f} (wall)")
    print(
        f"CPU ms/image end to end: main process {1000 * cpu[resource.RUSAGE_SELF] / images:.2f}, "
        f"workers {1000 * cpu[resource.RUSAGE_CHILDREN] / images:.2f} (start-up included; raw processes excluded)"
    )
    print(
        f"peak RSS: main {peak_rss_mb(resource.RUSAGE_SELF):.0f} MB, "
        f"largest child {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB (raw processes included)"
    )


if __name__ == "__main__":
    main()
