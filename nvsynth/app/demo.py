"""``nvsynth demo``: recon -> render -> inspect on the bundled sample subject.

Everything stays inside OUTDIR::

    OUTDIR/recon/p00/day01/0001.npz ...   recon records (+ manifest.csv)
    OUTDIR/h5/p00.h5, manifest.json       rendered views, ETH-XGaze layout
    OUTDIR/inspect/*.png                  contact sheet, masks, pose histograms
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path

from nvsynth.core.config import Config, load_config, with_overrides
from nvsynth.core.errors import AssetError
from nvsynth.runtime.preflight import prepare_folder

SAMPLE_SUBJECT = "p00"
DEMO_VIEWS = 16


def sample_root() -> Path:
    """The bundled sample (MPIIFaceGaze layout) inside the installed package."""
    root = Path(str(resources.files("nvsynth.supplementary") / "sample"))
    if not (root / SAMPLE_SUBJECT / f"{SAMPLE_SUBJECT}.txt").is_file():
        raise AssetError(f"bundled sample not found at {root}; reinstall nvsynth")
    return root


def demo_config(base: Config, out: Path) -> Config:
    """The user's config (for asset paths) with the demo's data paths and render settings.

    The demo always uses the procedural backgrounds, whatever the config says.
    """
    base = base.model_copy(update={"data": base.data.model_copy(update={"background_path": None})})
    return with_overrides(
        base,
        {
            "data.input": str(sample_root()),
            "data.kind": "mpiifacegaze",
            "data.records": str(out / "recon"),
            "render.views": DEMO_VIEWS,
            "render.pattern": "gaussian",
            "render.workers": 1,
            "recon.workers": 1,
        },
    )


def run(out: Path, config: Path | None = None) -> int:
    from nvsynth.app.inspect import run as run_inspect
    from nvsynth.runtime.recon_run import run as run_recon
    from nvsynth.runtime.render_run import run as run_render

    out = Path(out).resolve()
    prepare_folder(out, "demo folder")
    cfg = demo_config(load_config(config), out)
    t0 = time.perf_counter()
    print(f"[1/3] recon: bundled sample {SAMPLE_SUBJECT} -> {out / 'recon'}")
    rc = run_recon(cfg, subjects=SAMPLE_SUBJECT, limit=None, force=False)
    if rc != 0:
        return rc
    print(f"[2/3] render: {DEMO_VIEWS} views per frame -> {out / 'h5'}")
    for stale in (out / "h5" / f"{SAMPLE_SUBJECT}.h5", out / "h5" / f"{SAMPLE_SUBJECT}.h5.partial"):
        stale.unlink(missing_ok=True)  # the demo owns OUTDIR/h5: a re-run renders afresh
    shutil.rmtree(out / "h5" / f"{SAMPLE_SUBJECT}.h5.parts", ignore_errors=True)
    rc = run_render(cfg, outdir=out / "h5", subjects=SAMPLE_SUBJECT, limit=None, resume=False)
    if rc != 0:
        return rc
    print(f"[3/3] inspect -> {out / 'inspect'}")
    rc = run_inspect(out / "h5", out=out / "inspect", num=16, index=None)
    if rc != 0:
        return rc
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    print(f"  h5:     {out / 'h5' / (SAMPLE_SUBJECT + '.h5')}")
    for name in ("contact_sheet.png", "masks.png", "pose_hist.png"):
        print(f"  image:  {out / 'inspect' / name}")
    return 0
