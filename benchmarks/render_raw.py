"""Raw renderer throughput: the renderer alone (uploads, draws, readback), no other stage.

* :func:`pipeline_raw_throughput` (used by ``benchmarks/bench_render.py``):
  :meth:`FaceRenderer.render_composited` on a run's own sources, views and
  backdrops, in the pipeline's process layout (N 'spawn' processes, each
  with its llvmpipe thread count). Each process prepares its share of the
  sources exactly as a pipeline worker does (untimed), then the renderer
  calls alone are timed, all processes at once.
* :func:`raw_renderer_throughput` / :func:`measure_renderer`:
  :meth:`FaceRenderer.render` in this process on one source.
* ``python -m render.bench`` measures the template textured by a synthetic
  frame (needs the face template: ``NVSYNTH_FACE_TEMPLATE`` or the config).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import geometry
from nvsynth.render.appearance import Light
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import RenderMesh


@dataclass(frozen=True)
class RendererTiming:
    images_per_s: float  # wall clock
    cpu_ms_per_image: float  # process CPU time (all threads, llvmpipe's included)
    views: int
    repeats: int


def sweep_transforms(landmarks: ArrayLike, views: int, max_deg: float = 40.0) -> NDArray[np.float64]:
    """``views`` rigid transforms that move the landmarks' centre to (0, 0, 300) mm, turned on a pitch/yaw grid."""
    c = np.asarray(landmarks, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    k = int(np.ceil(np.sqrt(views)))
    angles = np.radians(np.linspace(-max_deg, max_deg, k)) if k > 1 else np.zeros(1)
    out = np.zeros((views, 4, 4))
    for b in range(views):
        rot = geometry.head_rotation_from_pitchyaw(angles[(b // k) % k] * 0.5, angles[b % k])
        out[b, :3, :3] = rot
        out[b, :3, 3] = np.array([0.0, 0.0, geometry.NORM_DISTANCE]) - rot @ c
        out[b, 3, 3] = 1.0
    return out


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure_renderer(
    texture_bgr: NDArray[np.uint8],
    mesh: RenderMesh,
    transforms: ArrayLike,
    lights: Sequence[Light | None] | None = None,
    repeats: int = 10,
    renderer: FaceRenderer | None = None,
) -> RendererTiming:
    """Time ``repeats`` calls of ``renderer.render`` (after one warm-up call)."""
    T = np.asarray(transforms, dtype=np.float64)
    own = renderer is None
    r = FaceRenderer() if renderer is None else renderer
    try:
        r.render(texture_bgr, mesh, T, lights)  # context, program and framebuffer creation
        t0, c0 = time.perf_counter(), _cpu_seconds()
        for _ in range(repeats):
            r.render(texture_bgr, mesh, T, lights)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    finally:
        if own:
            r.release()
    images = len(T) * repeats
    return RendererTiming(images / wall, 1000.0 * cpu / images, len(T), repeats)


def raw_renderer_throughput(
    mesh: RenderMesh,
    texture_bgr: NDArray[np.uint8],
    views: int | ArrayLike = 16,
    repeats: int = 10,
    lights: Sequence[Light | None] | None = None,
) -> float:
    """Images/s of the raw renderer for one source: ``views`` is a count (a pitch/yaw sweep) or (B, 4, 4) transforms.

    ``mesh`` and ``texture_bgr``: e.g. :func:`render.mesh.build_render_mesh`'s mesh and atlas.
    """
    T = sweep_transforms(mesh.landmarks, int(views)) if np.ndim(views) == 0 else np.asarray(views, dtype=np.float64)
    return measure_renderer(texture_bgr, mesh, T, lights, repeats).images_per_s


@dataclass(frozen=True)
class RawRun:
    """:func:`pipeline_raw_throughput`'s result."""

    images_per_s: float  # images rendered by all processes / the slowest process's wall time
    cpu_ms_per_image: float  # CPU time of the processes (all threads) while timed, per image
    images: int
    processes: int
    lp_threads: int


def _raw_worker(
    spec: Any, backgrounds: Any, subject: str, sources: Sequence[Any], repeats: int, lp_threads: int,
    barrier: Any, results: Any,
) -> None:  # fmt: skip
    os.environ["LP_NUM_THREADS"] = str(lp_threads)  # before this process's GL context exists
    from nvsynth.render.pipeline import PreparedSource, SourceRenderer

    worker = SourceRenderer(spec, backgrounds)
    preps = [p for s in sources if isinstance(p := worker.prepare(subject, s), PreparedSource)]
    if preps:
        worker.render_prepared(preps[0])  # context, shaders and framebuffers, untimed
    barrier.wait()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    images = 0
    for _ in range(repeats):
        for p in preps:
            images += len(worker.render_prepared(p))
    results.put((images, time.perf_counter() - t0, _cpu_seconds() - c0))


def pipeline_raw_throughput(
    spec: Any,
    backgrounds: Any,
    subject: str,
    sources: Sequence[Any],
    processes: int = 2,
    lp_threads: int = 1,
    repeats: int = 1,
) -> RawRun:
    """The renderer alone on a run's sources, as the pipeline's workers would render them.

    ``spec`` is the pipeline's :class:`render.pipeline.RunSpec`, ``sources``
    its :class:`render.pipeline.Source` list. The sources are dealt round-robin
    to ``processes`` 'spawn' processes with ``LP_NUM_THREADS=lp_threads``;
    each prepares its sources (record, image, views, mesh, backdrops:
    untimed), renders one to warm up, waits for the others, then times
    ``repeats`` passes of ``render_composited`` (texture, mesh and background
    uploads, draws, readback) over them.
    """
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_raw_worker,
            args=(spec, backgrounds, subject, list(sources[i::processes]), repeats, lp_threads, barrier, results),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    images = sum(g[0] for g in got)
    wall = max(g[1] for g in got)
    cpu = sum(g[2] for g in got)
    return RawRun(images / wall, 1000.0 * cpu / max(images, 1), images, processes, lp_threads)


def _synthetic_source(views: int) -> tuple[NDArray[np.uint8], RenderMesh, NDArray[np.float64]]:
    from nvsynth.core.config import Config
    from nvsynth.recon.template import template_from_config

    tpl = template_from_config(Config())
    K = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
    verts = tpl.vertices + np.array([0.0, 0.0, 500.0])
    yy, xx = np.mgrid[0:720, 0:1280]
    frame = np.stack([(xx * 3) % 256, (yy * 5) % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    mesh = RenderMesh(
        positions=verts.astype(np.float32),
        faces=tpl.faces,
        texcoords=geometry.project(verts, K).astype(np.float32),
        normals=-np.tile(np.array([0.0, 0.0, 1.0], np.float32), (len(verts), 1)),
        seen=np.ones(len(verts), np.float32),
        landmarks=verts[:68].astype(np.float32),
    )
    return frame, mesh, sweep_transforms(verts, views)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="raw renderer throughput on the face template")
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--lit", action="store_true", help="relight every view")
    args = ap.parse_args(argv)
    frame, mesh, T = _synthetic_source(args.views)
    lights = None
    if args.lit:
        lights = [Light(np.array([0.3, -0.3, -0.9]) / np.linalg.norm([0.3, -0.3, -0.9]), np.ones(3), 0.5)] * len(T)
    t = measure_renderer(frame, mesh, T, lights, args.repeats)
    print(
        f"raw renderer: {t.images_per_s:.0f} images/s wall, {t.cpu_ms_per_image:.2f} CPU-ms/image "
        f"({len(mesh.faces)} triangles, batch {t.views}, {t.repeats} batches, 448x448, readback included)"
    )


if __name__ == "__main__":
    main()
