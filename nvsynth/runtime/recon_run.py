"""``nvsynth recon``: one fitted, textured face mesh per MPIIFaceGaze frame.

See docs/design.md ("Runtime"). The run checks the configuration, the
subjects (calibration, annotation), the template and the landmark backend
before any work, then per subject lists the frames, keeps those whose record
exists and loads (unless ``force``), and runs the recon stage
(:func:`nvsynth.recon.stage.process_frame`) on the others through one
executor (:mod:`nvsynth.runtime.executor`). Each record lands at
``<data.mpii.obj>/<subject>/<dayNN>/<NNNN>.npz``; each subject gets a
``manifest.csv`` (:func:`nvsynth.runtime.manifest.write_recon_manifest`).

Frames always run in worker processes ('spawn'), even with one worker: each
sets single-threaded BLAS before numpy loads (the fit's small dense solves
are far slower with several BLAS threads per process) and builds its own
dlib objects and template; nothing mutable is shared. SIGINT stops after the
frames in flight: the subject's manifest lists the frames done so far, and a
re-run continues from the records on disk.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial
from pathlib import Path

import numpy as np

from nvsynth.core.config import Config
from nvsynth.core.errors import ConfigError
from nvsynth.datasets.mpii import Subject, open_subject, select_subjects
from nvsynth.recon.eyeball import fit_subject
from nvsynth.recon.record import record_path
from nvsynth.recon.stage import (
    FrameOutcome,
    FrameTask,
    cached_outcome,
    check_backend,
    process_frame,
    start_frame_processor,
)
from nvsynth.recon.template import load_landmark_map, template_from_config
from nvsynth.runtime.executor import Executor, make_executor
from nvsynth.runtime.interrupt import Interrupt
from nvsynth.runtime.manifest import RECON_MANIFEST, write_recon_manifest
from nvsynth.runtime.progress import progress_bar

#: Set in every recon worker before numpy loads.
BLAS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def summarize(outcomes: list[FrameOutcome], wall_s: float) -> str:
    """The run's summary: frames ok and skipped, reprojection error, time per frame, skip reasons."""
    ok = [o for o in outcomes if o.status in ("ok", "cached")]
    new = [o for o in outcomes if o.status == "ok"]
    skipped = [o for o in outcomes if o.status == "skipped"]
    errs = np.array([o.reprojection_error_px for o in ok], dtype=np.float64)
    lines = [
        f"recon: {len(ok)} frames ok ({len(new)} computed, {len(ok) - len(new)} existing), {len(skipped)} skipped",
    ]
    if len(errs):
        lines.append(
            f"  reprojection error: mean {errs.mean():.2f} px, 95th percentile {np.percentile(errs, 95):.2f} px"
        )
    worked = [o for o in outcomes if o.status != "cached"]
    if worked:
        per = np.mean([o.ms for o in worked])
        lines.append(
            f"  time: {per:.1f} ms per frame in a worker, {wall_s / len(outcomes) * 1e3:.1f} ms per frame wall"
        )
    reasons: dict[str, int] = {}
    for o in skipped:
        reasons[o.reason] = reasons.get(o.reason, 0) + 1
    for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"  skipped ({n}): {r}")
    return "\n".join(lines)


def run(cfg: Config, subjects: str | None = None, limit: int | None = None, force: bool = False) -> int:
    """Reconstruct every frame of the chosen subjects; returns the exit code."""
    raw, obj = cfg.data.mpii.raw, cfg.data.mpii.obj
    if raw is None:
        raise ConfigError("data.mpii.raw is not set: point it at the MPIIFaceGaze folder (holds p00 ... p14)")
    if obj is None:
        raise ConfigError("data.mpii.obj is not set: the folder where recon writes its records")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1 (got {limit})")
    names = select_subjects(raw, subjects)
    opened: list[Subject] = [open_subject(raw, n) for n in names]  # missing Camera.mat: one line naming it
    template_from_config(cfg)  # missing template offline: one line saying where to put it
    load_landmark_map(cfg)
    check_backend(cfg.recon.detector, cfg)

    all_outcomes: list[FrameOutcome] = []
    t_run = time.perf_counter()
    executor = make_executor(partial(start_frame_processor, cfg), cfg.recon.workers, env=BLAS_ENV, isolate=True)
    with executor, Interrupt() as stop:
        for subj in opened:
            all_outcomes.extend(_recon_subject(cfg, subj, Path(obj), limit, force, executor, stop))
    print(summarize(all_outcomes, time.perf_counter() - t_run))
    ok = sum(o.status in ("ok", "cached") for o in all_outcomes)
    return 0 if ok > 0 or not all_outcomes else 1


def _recon_subject(
    cfg: Config, subj: Subject, obj: Path, limit: int | None, force: bool, executor: Executor, stop: Interrupt
) -> list[FrameOutcome]:
    """One subject's frames: cached ones read, the others through the executor; its manifest written."""
    frames = subj.frame_list(limit)
    outcomes: list[FrameOutcome] = []
    tasks: list[FrameTask] = []
    for fr in frames:
        out = record_path(obj, subj.name, fr.relative_path)
        cached = None if force else cached_outcome(fr, out)
        if cached is not None:
            outcomes.append(cached)
        else:
            tasks.append(FrameTask(fr, subj.calibration.camera, out, cfg.recon.export_obj))
    results = executor.map(process_frame, tasks)
    bar = progress_bar(len(frames), desc=f"recon {subj.name}", unit="frame", initial=len(outcomes))
    try:
        with bar, contextlib.closing(results):
            for o in results:
                outcomes.append(o)
                bar.update(1)
                if o.status == "skipped":
                    bar.set_postfix_str(f"skipped {sum(x.status == 'skipped' for x in outcomes)}")
                stop.check()
    except KeyboardInterrupt:  # the manifest lists the frames done so far
        write_recon_manifest(obj / subj.name / RECON_MANIFEST, outcomes)
        raise
    write_recon_manifest(obj / subj.name / RECON_MANIFEST, outcomes)
    # the subject's eyeball model (kappa, centre offset) over all its frames, with its residual
    done = [record_path(obj, subj.name, o.image) for o in outcomes if o.status in ("ok", "cached")]
    model = fit_subject(done, obj / subj.name)
    if model is not None:
        print(model.report(subj.name))
    return outcomes
