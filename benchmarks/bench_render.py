"""Render speed: end to end (recon records -> h5) against the raw renderer, per executor and worker count.

Records: ``nvsynth recon`` on the bundled sample subject, cycled to
``--sources`` frames (``benchmarks/sample_records.py``), unless ``--obj/--raw``
name existing records.

Variants (one line each): ``default``, the shipped configuration
(``workers: auto``, ``device: auto``, the executor ``nvsynth render`` picks),
then each ``--executors`` entry with each ``--workers`` count. An executor is
one entry of :data:`EXECUTORS`: a name and a factory with the signature of
:func:`nvsynth.runtime.executor.make_executor` (``ray``: one actor per worker
on a local Ray instance that the variant starts, ``pip install 'nvsynth[ray]'``).
Each variant runs :func:`nvsynth.runtime.render_run.run` in a fresh 'spawn'
process, so its peak RSS is its own.

Definitions (printed with the figures):

* end to end: the wall time of the run -- worker start-up, record and image
  loading, view and appearance sampling, mesh, backdrops, rendering, area
  resize, lzf, h5 writes, manifest; "steady" leaves out the time to the
  first finished source.
* raw: draw + readback alone with every upload amortised, on the same
  sources, views, lights and backdrops, in the variant's process layout
  (``render_raw.pipeline_raw_throughput(mode="raw")``): per source the
  texture, mesh and backdrops are uploaded once, untimed, then its views
  are drawn and read back ``--repeats`` times, at ``render.render_size``
  (the draw and readback the patch needs; the reduction to 224 is not
  counted), on the first ``--raw-sources`` sources. Also printed: the renderer
  call as the pipeline makes it (``render_composited``: uploads, draws,
  readback). Raw layouts are measured before and after the end-to-end runs;
  the faster counts (so machine noise can only make the ratio harsher).
* ratio: end-to-end time per image / raw time per image (and / the renderer call's).
* stages: wall ms per image in the workers (summed over workers, from the
  run's ``manifest.json``) and in the main process (waiting for results, writing).
* peak RSS: the run's main process and its largest worker (``getrusage``).
* each variant runs ``--runs`` times (rounds over all variants); the fastest run counts.
* ``--gaze``: the records are made with ``recon.detector: mediapipe`` (with the
  subject's eyeball model), and the shipped configuration also runs end to end with
  ``render.gaze: gaussian`` (redirected eyes) against ``follow-head``,
  alternating, ``--runs`` times each, the fastest of each counting: both
  figures and the ratio of their times per image (:func:`gaze_comparison`).

    python benchmarks/bench_render.py [--sources 60] [--views 16] [--workers 1 2]
        [--executors local process ray] [--gaze] [--raw-sources 120]

    python benchmarks/bench_render.py --sources 3000 --executors --runs 1   # a full MPIIFaceGaze-size subject
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


# -- executors: one entry each (name -> factory with make_executor's signature) ------------------------------


def _local(setup: Callable[[], Any], workers: int, *, env: Mapping[str, str] | None = None) -> Any:
    from nvsynth.runtime.executor import InProcessExecutor

    return InProcessExecutor(setup)


def _process(setup: Callable[[], Any], workers: int, *, env: Mapping[str, str] | None = None) -> Any:
    from nvsynth.runtime.executor import ProcessExecutor

    return ProcessExecutor(setup, workers, env=env)


def _ray(setup: Callable[[], Any], workers: int, *, env: Mapping[str, str] | None = None) -> Any:
    """One Ray actor per worker on a local Ray instance (num_cpus = workers) this run starts and stops."""
    from nvsynth.runtime.ray_executor import RayExecutor

    return RayExecutor(setup, workers, env=env)


def _default(setup: Callable[[], Any], workers: int, *, env: Mapping[str, str] | None = None) -> Any:
    from nvsynth.runtime.executor import make_executor

    return make_executor(setup, workers, env=env)


@dataclass(frozen=True)
class ExecutorEntry:
    factory: Callable[..., Any]
    max_workers: int | None  # None: any count
    layout: Callable[[int], tuple[int, int | None]]  # workers -> (processes, llvmpipe threads; None: default)


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry(_local, 1, lambda w: (1, None)),  # this process, llvmpipe's own threads
    "process": ExecutorEntry(_process, None, lambda w: (w, 0)),  # 'spawn' workers, LP_NUM_THREADS=0 each
    # Ray actors, LP_NUM_THREADS=0 each; the wall time includes starting the local Ray instance ("steady" does not)
    "ray": ExecutorEntry(_ray, None, lambda w: (w, 0)),
}


# -- one end-to-end run, in its own process -----------------------------------------------------------------------


def _e2e(cfg_json: dict[str, Any], out: str, limit: int, executor: str, results: Any) -> None:
    from nvsynth.core.config import from_dict
    from nvsynth.runtime.render_run import run

    cfg = from_dict(cfg_json)
    factory = _default if executor == "default" else EXECUTORS[executor].factory
    t0 = time.perf_counter()
    run(cfg, Path(out), subjects="p00", limit=limit, executor_factory=factory)
    wall = time.perf_counter() - t0
    ru_self, ru_kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    results.put({
        "wall": wall,
        "manifest": json.loads((Path(out) / "manifest.json").read_text()),
        "rss_main_mb": ru_self.ru_maxrss / 1024.0,
        "rss_worker_mb": ru_kids.ru_maxrss / 1024.0,
        "cpu_s": ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime + ru_kids.ru_stime,
    })  # fmt: skip


def run_variant(cfg_json: dict[str, Any], out: Path, limit: int, executor: str) -> dict[str, Any]:
    """One end-to-end run in a fresh 'spawn' process (not a pool's daemon: it starts workers of its own)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_e2e, args=(cfg_json, str(out), limit, executor, results))
    proc.start()
    try:
        return results.get(timeout=3600)
    finally:
        proc.join(timeout=60)


@dataclass(frozen=True)
class Variant:
    label: str
    executor: str  # "default" or a key of EXECUTORS
    workers: int | str

    def layout(self, auto: int) -> tuple[int, int | None]:
        w = auto if self.workers == "auto" else int(self.workers)
        if self.executor == "default":
            return EXECUTORS["process" if w > 1 else "local"].layout(w)
        return EXECUTORS[self.executor].layout(w)


def gaze_comparison(base: dict[str, Any], work: Path, limit: int, runs: int) -> list[str]:
    """Redirection on (``render.gaze: gaussian``) against off (``follow-head``), shipped config, alternating.

    Each run is :func:`run_variant` (a fresh process, start-up included); the fastest of ``runs`` each counts.
    Lines: both figures, the ratio of time per image, and the workers' stage times per image of each.
    """
    best: dict[str, dict[str, Any]] = {}
    for k in range(max(1, runs)):
        for mode in ("follow-head", "gaussian"):
            cfg_json = {**base, "render": {**base["render"], "gaze": mode}}
            res = run_variant(cfg_json, work / f"gaze-{mode}-{k}", limit, "default")
            res["images"] = int(res["manifest"]["totals"]["rows_this_run"])
            res["per_image"] = res["wall"] / max(res["images"], 1)
            if mode not in best or res["per_image"] < best[mode]["per_image"]:
                best[mode] = res
    off, on = best["follow-head"], best["gaussian"]
    lines = [
        f"gaze redirection, end to end (shipped config, {off['manifest']['device']['workers']} worker(s), start-up "
        f"included; the faster of {max(1, runs)} alternating runs each):",
        f"  render.gaze: follow-head (off) {1 / off['per_image']:7.1f} images/s ({off['images']} images)",
        f"  render.gaze: gaussian    (on)  {1 / on['per_image']:7.1f} images/s ({on['images']} images)",
        f"  time per image on / off: {on['per_image'] / off['per_image']:.2f}x (target <= 1.3x)",
    ]
    for name, res in (("off", off), ("on", on)):
        timing = res["manifest"]["timing_s"]
        w = " ".join(
            f"{k.removeprefix('worker_')} {1000 * float(t) / res['images']:.2f}"
            for k, t in timing.items()
            if k.startswith("worker_")
        )
        lines.append(f"  stages {name}, wall ms per image summed over workers: {w}")
    return lines


def main(argv: list[str] | None = None) -> None:
    from render_raw import RawRun, pipeline_raw_throughput
    from sample_records import SAMPLE_RAW, make_records

    from nvsynth.core.config import from_dict
    from nvsynth.core.h5io import lzf_backend
    from nvsynth.render.backgrounds import BackgroundSource
    from nvsynth.render.egl_devices import select_device
    from nvsynth.render.patterns import load_pattern
    from nvsynth.render.stage import RenderSpec
    from nvsynth.runtime.render_plan import list_sources
    from nvsynth.runtime.slots import usable_cpus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=60, help="source frames to render (default 60)")
    ap.add_argument("--views", type=int, default=16, help="views per source (default 16)")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="worker counts to try (default 1 2)")
    installed = [ex for ex in EXECUTORS if ex != "ray" or importlib.util.find_spec("ray") is not None]
    ap.add_argument("--executors", nargs="*", default=installed, choices=list(EXECUTORS))
    ap.add_argument("--device", default="auto", help="render.device (default auto)")
    ap.add_argument("--repeats", type=int, default=3, help="raw: draws of each source per upload (default 3)")
    ap.add_argument("--raw-sources", type=int, default=120,
                    help="raw: the first N sources (each process holds its prepared share; default 120)")  # fmt: skip
    ap.add_argument("--runs", type=int, default=2, help="end-to-end runs per variant, the fastest counts (default 2)")
    ap.add_argument("--obj", type=Path, help="existing recon records (root holding p00/)")
    ap.add_argument("--raw", type=Path, help="the dataset root their source_file paths are relative to")
    ap.add_argument(
        "--gaze",
        action="store_true",
        help="mediapipe records; also render.gaze: gaussian against follow-head, both figures and ratio",
    )
    args = ap.parse_args(argv)
    device_setting: int | str = int(args.device) if args.device.isdigit() else args.device

    variants = [Variant("default (shipped config)", "default", "auto")]
    for ex in args.executors:
        for w in args.workers:
            if EXECUTORS[ex].max_workers is None or w <= EXECUTORS[ex].max_workers:
                variants.append(Variant(f"{ex}, {w} worker(s)", ex, w))
    auto = usable_cpus()

    with tempfile.TemporaryDirectory(prefix="nvsynth-bench-") as tmp:
        work = Path(tmp)
        if args.obj is not None:
            obj, raw = args.obj, args.raw or SAMPLE_RAW
        else:
            obj = work / "obj"
            raw = make_records(obj, args.sources, detector="mediapipe" if args.gaze else "dlib")
        base = {"data": {"input": str(raw), "records": str(obj)},
                "render": {"views": args.views, "seed": 0, "device": device_setting}}  # fmt: skip
        cfg = from_dict(base)
        device = select_device(cfg.render.device)
        spec = RenderSpec(cfg=cfg, seed=0, pattern=load_pattern(cfg), image_root=Path(raw), device=device)
        backgrounds = BackgroundSource(cfg.data.background_path)
        sources, _ = list_sources(Path(obj), "p00", args.sources)
        layouts = sorted({v.layout(auto) for v in variants}, key=lambda x: (x[0], x[1] or 0))

        def measure(mode: str, repeats: int) -> dict[tuple[int, int | None], RawRun]:
            return {
                lay: pipeline_raw_throughput(spec, backgrounds, "p00", sources[: args.raw_sources], *lay, repeats, mode)
                for lay in layouts
            }

        raw_before = measure("raw", args.repeats)
        call = measure("call", 1)
        results: dict[Variant, dict[str, Any]] = {}
        for k in range(max(1, args.runs)):  # rounds over the variants: load changes hit every variant alike
            for i, v in enumerate(variants):
                cfg_json = {**base, "render": {**base["render"], "workers": v.workers}}
                res = run_variant(cfg_json, work / f"out{i}-{k}", args.sources, v.executor)
                if v not in results or res["wall"] < results[v]["wall"]:
                    results[v] = res
        raw_after = measure("raw", args.repeats)
        gaze_lines = gaze_comparison(base, work, args.sources, args.runs) if args.gaze else []
    raws = {k: max(raw_before[k], raw_after[k], key=lambda r: r.images_per_s) for k in layouts}

    first = next(iter(results.values()))["manifest"]
    dev = first["device"]
    print(f"GL_RENDERER {dev['gl_renderer']}; GL_VERSION {dev['gl_version']}; {dev['egl_device']}")
    print(f"{auto} usable CPU(s); lzf by {lzf_backend()}; {args.sources} sources x {args.views} views per run")

    def lay_name(lay: tuple[int, int | None]) -> str:
        return f"{lay[0]} proc x {'default' if lay[1] is None else lay[1]} LP thread(s)"

    for lay in layouts:
        r, c = raws[lay], call[lay]
        print(
            f"raw renderer, {lay_name(lay)}: {r.images_per_s:6.1f} images/s, {r.cpu_ms_per_image:.2f} CPU-ms/image "
            f"(draw + readback, uploads amortised over {args.repeats} draws; before/after "
            f"{raw_before[lay].images_per_s:.0f}/{raw_after[lay].images_per_s:.0f}); renderer call with uploads "
            f"(render_composited): {c.images_per_s:6.1f} images/s"
        )
    print(
        f"{'variant':<28} {'workers':>7} {'e2e img/s':>9} {'steady':>7} {'raw':>7} {'ratio':>6} {'call':>7} "
        f"{'ratio':>6}  RSS main/worker MB"
    )
    stages_rows = []
    for v, res in results.items():
        m = res["manifest"]
        images = int(m["totals"]["rows_this_run"])
        wall = float(res["wall"])
        first_s = float(m["timing_s"]["first_result"])
        steady = (images - args.views) / max(wall - first_s, 1e-9)
        lay = v.layout(auto)
        e2e = images / wall
        workers = m["device"]["workers"]
        # in-process: no worker (RUSAGE_CHILDREN would show ldconfig, forked by ctypes.util.find_library)
        in_process = v.executor == "local" or (v.executor == "default" and workers == 1)
        rss = f"{res['rss_main_mb']:.0f}/" + ("-" if in_process else f"{res['rss_worker_mb']:.0f}")
        r, c = raws[lay].images_per_s, call[lay].images_per_s
        print(
            f"{v.label:<28} {workers:>7} {e2e:9.1f} {steady:7.1f} {r:7.1f} {r / e2e:5.2f}x {c:7.1f} {c / e2e:5.2f}x"
            f"  {rss}"
        )
        timing = m["timing_s"]
        stages = {
            k.removeprefix("worker_"): 1000 * float(t) / images for k, t in timing.items() if k.startswith("worker_")
        }
        mains = {k.removeprefix("main_"): 1000 * float(t) / images for k, t in timing.items() if k.startswith("main_")}
        cpu = 1000 * res["cpu_s"] / images
        stages_rows.append((v.label, stages, mains, cpu))
    print("stages, wall ms per image (workers: summed over workers | main process), CPU ms per image of the run:")
    for label, stages, mains, cpu in stages_rows:
        w = " ".join(f"{k} {t:.2f}" for k, t in stages.items())
        mm = " ".join(f"{k} {t:.2f}" for k, t in mains.items())
        print(f"  {label:<28} {w} | {mm} | CPU {cpu:.2f}")
    for line in gaze_lines:
        print(line)


if __name__ == "__main__":
    main()
