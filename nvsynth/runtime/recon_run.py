"""``nvsynth recon``: one fitted, textured face mesh per source frame of any dataset reader.

See docs/design.md ("Runtime"). The run opens the dataset at ``data.input``
with the reader ``data.kind`` names or detects (:mod:`nvsynth.datasets.registry`),
checks the configuration, the subjects (calibration, annotation, file layout),
the template and the landmark backend before any work, then per subject lists
the samples, keeps those whose record exists and loads (unless ``force``),
and runs the recon stage (:func:`nvsynth.recon.stage.process_frame`) on the
others through one executor (:mod:`nvsynth.runtime.executor`). Each record
lands at ``<data.records>/<subject>/<record name>.npz``; each subject gets a
``manifest.csv`` (:func:`nvsynth.runtime.manifest.write_recon_manifest`).

Frames always run in worker processes ('spawn'), even with one worker: each
sets single-threaded BLAS before numpy loads (the fit's small dense solves
are far slower with several BLAS threads per process) and builds its own
dlib objects and template; nothing mutable is shared. SIGINT or SIGTERM
stops after the frames in flight: the subject's manifest lists the frames
done so far, and a re-run continues from the records on disk. Every record is
written atomically, so a SIGKILL loses only the frames in flight; their
temporary files are removed by the next run, and a damaged record (truncated,
or made from another annotation line) is redone.

Each subject's record folder is locked for the run
(:class:`nvsynth.runtime.preflight.RunLock`): a second recon of the same
subject refuses in one line naming the first one's pid. Duplicate annotation
lines are reported once and recorded as skipped (the frame is kept once).
"""

from __future__ import annotations

import contextlib
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from nvsynth.core.config import Config
from nvsynth.core.errors import ConfigError, WorkerError, io_guard
from nvsynth.datasets.base import DUPLICATE_REASON, Dataset, select_subjects
from nvsynth.datasets.registry import open_dataset
from nvsynth.recon.eyeball_fit import fit_subject
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
from nvsynth.runtime import failpoints
from nvsynth.runtime.executor import Executor, configured_factory, runs_remotely
from nvsynth.runtime.interrupt import Interrupt, Stopped
from nvsynth.runtime.manifest import RECON_MANIFEST, write_recon_manifest
from nvsynth.runtime.preflight import RunLock, check_workers, prepare_folder, warn
from nvsynth.runtime.progress import progress_bar
from nvsynth.runtime.slots import worker_count

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
    obj = cfg.data.records
    if obj is None:
        raise ConfigError("data.records is not set: the folder where recon writes its records")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1 (got {limit})")
    dataset = open_dataset(cfg.data.input, cfg.data.kind)
    names = select_subjects(dataset, subjects)
    for n in names:
        dataset.check(n)  # e.g. a missing Camera.mat, an h5 without face_patch: one line naming it
    template_from_config(cfg)  # missing template offline: one line saying where to put it
    load_landmark_map(cfg)
    check_backend(cfg.recon.detector, cfg)
    local = not runs_remotely(cfg.runtime)
    workers = worker_count(cfg.recon.workers, "recon", local)
    if local:
        warn(check_workers(workers))
    prepare_folder(Path(obj), "recon folder (data.records)")

    all_outcomes: list[FrameOutcome] = []
    t_run = time.perf_counter()
    with contextlib.ExitStack() as held:
        for name in names:  # one recon per subject folder at a time
            held.enter_context(RunLock(prepare_folder(Path(obj) / name, "recon folder")))
        factory = configured_factory(cfg.runtime, cfg.recon.workers, isolate=True)
        executor = factory(partial(start_frame_processor, cfg), workers, env=BLAS_ENV)
        with executor, Interrupt() as stop:
            for name in names:
                all_outcomes.extend(_recon_subject(cfg, dataset, name, Path(obj), limit, force, executor, stop))
    print(summarize(all_outcomes, time.perf_counter() - t_run))
    ok = sum(o.status in ("ok", "cached") for o in all_outcomes)
    return 0 if ok > 0 or not all_outcomes else 1


def _recon_subject(
    cfg: Config,
    dataset: Dataset,
    subject: str,
    obj: Path,
    limit: int | None,
    force: bool,
    executor: Executor,
    stop: Interrupt,
) -> list[FrameOutcome]:
    """One subject's frames: cached ones read, the others through the executor; its manifest written."""
    samples = list(dataset.samples(subject, limit))
    _clean_temporary(obj / subject)
    outcomes: list[FrameOutcome] = []
    duplicates = [s for s in samples if s.skip_reason.startswith(DUPLICATE_REASON)]
    if duplicates:  # recorded as skipped below (the frame is kept once, from its first line)
        print(
            f"nvsynth recon: {subject}: {len(duplicates)} duplicate annotation line(s) "
            f"(first: {duplicates[0].skip_reason.removeprefix(DUPLICATE_REASON + ': ')}); each frame is kept once",
            file=sys.stderr,
        )
    tasks: list[FrameTask] = []
    for sample in samples:
        out = record_path(obj, subject, sample.record_name)
        cached = None if force or sample.skip_reason else cached_outcome(sample, out)
        if cached is not None:
            outcomes.append(cached)
        else:
            tasks.append(FrameTask(sample, out, cfg.recon.export_obj))
    results = executor.map(process_frame, tasks)
    bar = progress_bar(len(samples), desc=f"recon {subject}", unit="frame", initial=len(outcomes))
    try:
        with bar, contextlib.closing(results):
            for o in results:
                outcomes.append(o)
                failpoints.reached("recon-frame")
                bar.update(1)
                if o.status == "skipped":
                    bar.set_postfix_str(f"skipped {sum(x.status == 'skipped' for x in outcomes)}")
                stop.check()
    except KeyboardInterrupt:  # the manifest lists the frames done so far
        write_recon_manifest(obj / subject / RECON_MANIFEST, outcomes)
        raise
    except WorkerError:
        write_recon_manifest(obj / subject / RECON_MANIFEST, outcomes)
        if stop.requested:  # a SIGTERM to the whole process group ended the workers
            raise Stopped(stop.signum) from None
        raise
    write_recon_manifest(obj / subject / RECON_MANIFEST, outcomes)
    # the subject's eyeball model (kappa, centre offset) over all its frames, with its residual
    ok = {o.frame_index for o in outcomes if o.status in ("ok", "cached")}
    done = [record_path(obj, subject, s.record_name) for s in samples if not s.skip_reason and s.frame_index in ok]
    model = fit_subject(done, obj / subject)
    if model is not None:
        print(model.report(subject))
    return outcomes


def _clean_temporary(folder: Path) -> None:
    """Remove the temporary record files of frames a kill interrupted (they were never complete)."""
    if folder.is_dir():
        with io_guard(folder, "clean the recon folder"):
            for p in folder.rglob(".*.tmp.*"):
                p.unlink(missing_ok=True)
