"""Raw renderer throughput: :meth:`FaceRenderer.render` alone (upload, one draw, readback).

``benchmarks/bench_render.py`` calls :func:`raw_renderer_throughput` on a real
recon record and its source frame, to compare with the end-to-end rate.
``python -m render.bench`` measures the template textured by a synthetic
frame (needs the face template: ``NVSYNTH_FACE_TEMPLATE`` or the config).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth import geometry
from recon.record import ReconRecord
from render.appearance import Light
from render.gl import FaceRenderer
from render.mesh import RenderMesh, build_render_mesh


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
    record: ReconRecord | RenderMesh,
    texture_bgr: NDArray[np.uint8],
    views: int | ArrayLike = 16,
    repeats: int = 10,
    lights: Sequence[Light | None] | None = None,
) -> float:
    """Images/s of the raw renderer for one source: ``views`` is a count (a pitch/yaw sweep) or (B, 4, 4) transforms."""
    mesh = record if isinstance(record, RenderMesh) else build_render_mesh(record)
    T = sweep_transforms(mesh.landmarks, int(views)) if np.ndim(views) == 0 else np.asarray(views, dtype=np.float64)
    return measure_renderer(texture_bgr, mesh, T, lights, repeats).images_per_s


def _synthetic_source(views: int) -> tuple[NDArray[np.uint8], RenderMesh, NDArray[np.float64]]:
    from nvsynth.config import Config
    from recon.template import template_from_config

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
