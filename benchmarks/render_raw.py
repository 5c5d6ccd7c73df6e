"""Raw renderer throughput: the renderer alone (uploads, draws, readback), no other stage.

* :func:`pipeline_raw_throughput` (used by ``benchmarks/bench_render.py``):
  a run's own sources, views and backdrops, in the pipeline's process layout
  (N 'spawn' processes, each with its llvmpipe thread count). Each process
  prepares its share of the sources exactly as a pipeline worker does
  (untimed), then times, all processes at once, either

  - ``mode="raw"``: draw + readback alone, every upload amortised: per source
    the texture crop, the mesh and the backdrops are uploaded once, untimed;
    then ``repeats`` times, per view: its uniforms, a depth clear, the draw,
    and after the round of views the readback of each (``glReadPixels`` into
    a numpy array) -- the GL work no image can do without; or
  - ``mode="call"``: :meth:`FaceRenderer.render_composited` as the pipeline
    calls it (texture, mesh and backdrop uploads, draws, readback).
* :func:`measure_renderer`: :meth:`FaceRenderer.render` in this process on
  one source.
* ``python benchmarks/render_raw.py`` measures the template textured by a
  synthetic frame (needs the face template: ``NVSYNTH_FACE_TEMPLATE`` or the config).
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


@dataclass(frozen=True)
class RawRun:
    """:func:`pipeline_raw_throughput`'s result."""

    images_per_s: float  # the processes' rates added up (each: its images / its timed wall time)
    cpu_ms_per_image: float  # CPU time of the processes (all threads) while timed, per image
    images: int
    processes: int
    lp_threads: int | None  # None: llvmpipe's default (one thread per CPU)
    mode: str


def _amortised(worker: Any, preps: Sequence[Any], repeats: int) -> tuple[int, float, float]:
    """Draw + readback of each prepared source's views, ``repeats`` times per upload (uploads untimed)."""
    import moderngl

    from nvsynth.render.compositing import BackdropTarget
    from nvsynth.render.upload import MeshUpload

    r = worker.renderer
    gl = r._objects()  # the renderer's program and framebuffer pools in this process
    images, wall, cpu = 0, 0.0, 0.0
    for p in preps:
        n = len(p.views)
        target = BackdropTarget(p.backdrops, r.size)
        fbos = gl.pool(target, r.size).take(n)
        upload = MeshUpload.create(gl.ctx, gl.shader, p.image, p.mesh)
        uniforms = [r.camera.view_uniforms(T) for T in p.transforms]
        lights = [q.light for q in p.params]
        gl.ctx.enable_only(moderngl.DEPTH_TEST)
        for b, fbo in enumerate(fbos):
            target.fill(fbo, b)  # the backdrop, once
        gl.ctx.finish()
        t0, c0 = time.perf_counter(), _cpu_seconds()
        for _ in range(repeats):
            for b, fbo in enumerate(fbos):
                gl.shader.set_view(uniforms[b], lights[b], target.darkening(b), target.alpha_mode)
                fbo.use()
                fbo.color_mask = (False, False, False, False)  # depth only: the backdrop stays
                fbo.clear(depth=1.0)
                fbo.color_mask = (True, True, True, True)
                fbo.use()
                upload.draw()
            for b, fbo in enumerate(fbos):
                target.read(fbo, b)
        wall += time.perf_counter() - t0
        cpu += _cpu_seconds() - c0
        images += n * repeats
        upload.release()
    return images, wall, cpu


def _raw_worker(
    spec: Any, backgrounds: Any, subject: str, sources: Sequence[Any], repeats: int, lp_threads: int | None,
    mode: str, barrier: Any, results: Any,
) -> None:  # fmt: skip
    if lp_threads is not None:
        os.environ["LP_NUM_THREADS"] = str(lp_threads)  # before this process's GL context exists
    from nvsynth.render.stage import PreparedSource, SourceRenderer

    worker = SourceRenderer(spec, backgrounds)
    preps = [p for s in sources if isinstance(p := worker.prepare(subject, s), PreparedSource)]
    if preps:
        worker.render_prepared(preps[0])  # context, shaders and framebuffers, untimed
    barrier.wait()
    if mode == "raw":
        results.put(_amortised(worker, preps, repeats))
        return
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
    lp_threads: int | None = 1,
    repeats: int = 1,
    mode: str = "raw",
) -> RawRun:
    """The renderer alone on a run's sources, as the pipeline's workers would render them.

    ``spec`` is the run's :class:`render.stage.RenderSpec` (its device
    included), ``sources`` its :class:`render.stage.Source` list. The sources
    are dealt round-robin to ``processes`` 'spawn' processes with
    ``LP_NUM_THREADS=lp_threads`` (``None``: llvmpipe's default); each
    prepares its sources (record, image, views, mesh, backdrops: untimed),
    renders one to warm up, waits for the others, then times ``mode``
    (module docstring) over them.
    """
    if mode not in ("raw", "call"):
        raise ValueError(f"mode must be 'raw' or 'call', got {mode!r}")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    common = (repeats, lp_threads, mode, barrier, results)
    procs = [
        ctx.Process(target=_raw_worker, args=(spec, backgrounds, subject, list(sources[i::processes]), *common))
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
    rate = sum(g[0] / g[1] for g in got if g[1] > 0)
    cpu = sum(g[2] for g in got)
    return RawRun(rate, 1000.0 * cpu / max(images, 1), images, processes, lp_threads, mode)


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
