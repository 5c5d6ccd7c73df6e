"""The benchmark's steps: build subjects, run nvsynth through its CLI, score every output row."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import heads, scene, score


@dataclass(frozen=True)
class Spec:
    """A subject: its MPIIFaceGaze id, portrait and deformation seed (the frames' seed is 1000 + seed)."""

    subject: str
    portrait: str
    seed: int


def build(root: Path, specs: Sequence[Spec], frames: int, verbose: bool = True) -> dict[str, scene.TruthSubject]:
    """Make every subject's true head and frames under ``root`` (:mod:`.scene`'s layout)."""
    from nvsynth.recon.fit import FitModel
    from nvsynth.recon.template import load_landmark_map

    tpl = heads.template_from_env()
    model = FitModel(tpl, load_landmark_map())
    fr = scene.FrameRenderer()
    out = {}
    try:
        for sp in specs:
            head, params = heads.build_true_head(heads.load_portrait(sp.portrait), tpl, sp.seed, model=model)
            out[sp.subject] = scene.write_subject(root, sp.subject, head, frames, seed=1000 + sp.seed, renderer=fr)
            if verbose:
                shown = ", ".join(f"{k} {v:.2f}" for k, v in params.items())
                print(f"  {sp.subject} {sp.portrait:<11} seed {sp.seed}: {shown}", flush=True)
    finally:
        fr.release()
    return out


def write_config(root: Path, workers: int = 1, recon: dict[str, str] | None = None) -> Path:
    """nvsynth's config for the benchmark: plain appearance (black, no darkening), no relighting.

    ``recon``: extra ``recon.*`` keys (e.g. ``{"detector": "mediapipe"}``); otherwise the defaults.
    """
    extra = "".join(f", {k}: {v}" for k, v in (recon or {}).items())
    cfg = Path(root) / "config.yaml"
    cfg.write_text(
        "data:\n"
        f"  input: '{Path(root) / 'raw'}'\n"
        f"  records: '{Path(root) / 'obj'}'\n"
        "  background_path: null\n"
        f"recon: {{workers: {workers}{extra}}}\n"
        f"render: {{appearance: plain, workers: {workers}, light: {{enabled: false}}}}\n"
    )
    return cfg


def nvsynth(*args: str) -> float:
    """Run one ``nvsynth`` CLI command in a fresh interpreter; returns its wall time (s)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nvsynth.app.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvsynth {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return time.perf_counter() - t


def run_nvsynth(
    root: Path,
    subjects: Sequence[str],
    patterns: Sequence[str],
    views: int,
    workers: int = 1,
    recon: dict[str, str] | None = None,
) -> dict:
    """``nvsynth recon``, then ``nvsynth render`` per pattern into ``root/render/<pattern>``; wall times (s).

    ``source`` renders one view per frame (all its views would be the same).
    """
    root = Path(root)
    for d in ("obj", "render"):
        shutil.rmtree(root / d, ignore_errors=True)
    cfg = str(write_config(root, workers, recon))
    ids = ",".join(subjects)
    timing = {"nvsynth recon": nvsynth("recon", "--config", cfg, "--subjects", ids)}
    for p in patterns:
        n = "1" if p == "source" else str(views)
        out = str(root / "render" / p)
        timing[f"nvsynth render {p}"] = nvsynth(
            "render", "--config", cfg, "-save", out, "--pattern", p, "--views", n, "--subjects", ids
        )
    return timing


def score_all(
    root: Path, truths: dict[str, scene.TruthSubject], patterns: Sequence[str], keep_images: int = 1
) -> list[score.RowScore]:
    """Every row of every ``root/render/<pattern>/<subject>.h5``."""
    from nvsynth.render.gl import FaceRenderer

    fr = FaceRenderer()
    scores: list[score.RowScore] = []
    try:
        for p in patterns:
            for sid, truth in truths.items():
                h5 = Path(root) / "render" / p / f"{sid}.h5"
                scores += score.score_h5(h5, root, truth, p, keep_images=keep_images, renderer=fr)
    finally:
        fr.release()
    return scores
