"""What the render size (``render.render_size``) costs and changes: the same views drawn at several sizes.

Every view is drawn at each size (the normalized camera scaled to it) and
area-reduced to the 224 patch, over a flat grey backdrop, unlit, so that
only the sampling differs. The reference is 448 px (2 x 2 supersampling, the
ETH-XGaze convention). Per size it prints:

* GL ms per image: the renderer call (uploads, draws, readback) plus the area
  reduction, CPU time of this process (``LP_NUM_THREADS=0``: llvmpipe draws in
  this thread), the fastest of ``--repeats``;
* the patch's difference from the 448 one, grey levels (mean over the three
  channels): mean and 99th percentile inside the face (the 448 mask, less a
  2-pixel band along its outline), and mean on that band (the outline, where
  anti-aliasing shows);
* the face mask's agreement with the 448 one (IoU) and the share of pixels that differ.

The geometry is the same at every size (the labels do not depend on it); the
fidelity benchmark (``bench_fidelity.py``) scores the views against the true head.

    python benchmarks/bench_supersample.py [--sources 24] [--sizes 448 392 336 280 224] [--sheet PNG]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LP_NUM_THREADS", "0")  # before any GL context: CPU time of the draws is this thread's

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

GREY = (128, 128, 128)
BAND_PX = 2


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=24, help="source frames (16 views each; default 24)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[448, 392, 336, 280, 224])
    ap.add_argument("--repeats", type=int, default=3, help="timed renderer calls per source and size (default 3)")
    ap.add_argument("--sheet", type=Path, help="save a sheet: one view at each size, and its difference x8")
    args = ap.parse_args(argv)

    from sample_records import make_records

    from nvsynth.core import geometry
    from nvsynth.core.config import from_dict
    from nvsynth.render.backgrounds import BackgroundSource
    from nvsynth.render.compose import finish_composited
    from nvsynth.render.compositing import Backdrop
    from nvsynth.render.gl import FaceRenderer
    from nvsynth.render.patterns import load_pattern
    from nvsynth.render.stage import PreparedSource, RenderSpec, Source, SourceRenderer

    sizes = sorted(set(args.sizes) | {448}, reverse=True)
    with tempfile.TemporaryDirectory(prefix="nvsynth-supersample-") as tmp:
        raw = make_records(Path(tmp), args.sources)
        cfg = from_dict({"data": {"input": str(raw), "records": tmp}, "render": {"appearance": "plain"}})
        spec = RenderSpec(cfg, cfg.render.seed, load_pattern(cfg), raw)
        worker = SourceRenderer(spec, BackgroundSource(None))
        paths = sorted((Path(tmp) / "p00").rglob("*.npz"))
        prepared = [worker.prepare("p00", Source(path, i)) for i, path in enumerate(paths)]
        preps = [p for p in prepared if isinstance(p, PreparedSource)]
        worker.close()
    if not preps:
        raise SystemExit("no source could be prepared")
    n_images = sum(len(p.views) for p in preps)
    patches: dict[int, np.ndarray] = {}
    masks: dict[int, np.ndarray] = {}
    cpu_ms: dict[int, float] = {}
    for size in sizes:
        r = FaceRenderer(size, camera_matrix=geometry.normalized_camera_matrix(size, spec.norm))
        try:
            looks = [Backdrop(color=GREY)] * max(len(p.views) for p in preps)
            r.render_composited(preps[0].image, preps[0].mesh, preps[0].transforms, None, looks[: len(preps[0].views)])
            best = np.inf
            for _ in range(args.repeats):
                c0 = time.process_time()
                out_p, out_m = [], []
                for p in preps:
                    full = r.render_composited(p.image, p.mesh, p.transforms, None, looks[: len(p.views)])
                    pa, ma = finish_composited(full)
                    out_p.append(pa)
                    out_m.append(ma)
                best = min(best, time.process_time() - c0)
        finally:
            r.release()
        cpu_ms[size] = 1000.0 * best / n_images
        patches[size] = np.concatenate(out_p)
        masks[size] = np.concatenate(out_m) > 0

    ref_p, ref_m = patches[448].astype(np.int16), masks[448]
    kernel = np.ones((2 * BAND_PX + 1, 2 * BAND_PX + 1), np.uint8)
    inner = np.stack([cv2.erode(m.astype(np.uint8), kernel) > 0 for m in ref_m])
    outer = np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in ref_m])
    band = outer & ~inner
    print(f"{len(preps)} sources x 16 views = {n_images} images; reference 448 px; grey levels, mean of 3 channels")
    print("render px  GL ms/img  speed-up | face mean  p99 | outline mean | mask IoU  differ")
    for size in sizes:
        d = np.abs(patches[size].astype(np.int16) - ref_p).mean(axis=-1)
        m = masks[size]
        iou = float((m & ref_m).sum() / max((m | ref_m).sum(), 1))
        print(f"{size:9d}  {cpu_ms[size]:9.2f}  {cpu_ms[448] / cpu_ms[size]:7.2f}x |"
              f" {d[inner].mean():9.2f} {np.percentile(d[inner], 99):5.1f} | {d[band].mean():12.2f} |"
              f" {iou:8.4f} {np.mean(m != ref_m) * 100:6.2f}%")  # fmt: skip
    if args.sheet:
        v = int(np.argmax([np.abs(masks[448][i].astype(int) - masks[min(sizes)][i]).sum() for i in range(n_images)]))
        row1 = [patches[s][v] for s in sizes]
        row2 = [cv2.convertScaleAbs(np.abs(patches[s][v].astype(np.int16) - ref_p[v]).astype(np.uint8), alpha=8)
                for s in sizes]  # fmt: skip
        sheet = np.vstack([np.hstack(row1), np.hstack(row2)])
        for i, s in enumerate(sizes):
            cv2.putText(sheet, f"{s} px", (i * 224 + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
        cv2.putText(sheet, "|diff to 448| x8", (6, 224 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.sheet), sheet)
        print(f"sheet (view {v}): {args.sheet}")


if __name__ == "__main__":
    main()
