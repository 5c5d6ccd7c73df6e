"""``nvsynth render -save OUTDIR``: recon records -> novel views -> one HDF5 file per subject.

See docs/design.md ("Runtime"). The run plans first (:mod:`nvsynth.runtime.render_plan`:
subjects, sources, existing outputs; mistakes raise before anything is
written), then feeds each subject's sources to one executor
(:mod:`nvsynth.runtime.executor`) running the render stage
(:func:`nvsynth.render.stage.render_item`) and writes the rows as they come
back, in frame order then view order, whatever the number of workers.

* ``--workers N`` (N > 1) renders in N 'spawn' processes, started before the
  sources are listed, each with its own renderer (GL context made in that
  process) and one llvmpipe thread (``LP_NUM_THREADS``, unless set);
  N = 1 renders in this process. At most ``2 N`` sources are in flight, so
  memory stays flat however large the subject.
* Each subject is written to ``<subject>.h5.partial`` and renamed when
  complete. Rows are appended in batches of whole sources (at least
  ``WRITE_ROWS`` rows), each flushed with a progress marker (file attribute
  ``progress_frame``), so an interrupted subject can be finished.
* SIGINT (Ctrl-C) writes the sources already rendered, then stops: the
  partial file stays, no final file appears for that subject,
  ``manifest.json`` says ``interrupted`` and :class:`KeyboardInterrupt`
  propagates (the command exits with 130; a second Ctrl-C stops at once).
* ``--resume`` skips subjects whose final file exists and reopens a partial
  file, keeping its committed rows and continuing with the next source.
* Skipped sources and views are recorded in the file attribute
  ``skipped_views`` and in ``OUTDIR/manifest.json`` (:mod:`nvsynth.runtime.manifest`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from functools import partial
from pathlib import Path

import h5py

from nvsynth.core.config import Config
from nvsynth.core.errors import ConfigError
from nvsynth.core.h5io import H5Writer, concat_rows
from nvsynth.core.schema import PROGRESS_ATTR, SKIPS_ATTR, output_fields
from nvsynth.recon.eyeball import EyeballModel, eyeball_path
from nvsynth.render.gaze import load_gaze_spec
from nvsynth.render.patterns import load_pattern
from nvsynth.render.stage import RenderSpec, Skip, SourceItem, SourceResult, render_item, start_source_renderer
from nvsynth.runtime.executor import Executor, make_executor
from nvsynth.runtime.interrupt import Interrupt
from nvsynth.runtime.manifest import RenderLog, SubjectReport
from nvsynth.runtime.progress import progress_bar
from nvsynth.runtime.render_plan import SubjectPlan, file_attrs, plan_subjects, read_attrs, skips_of

#: Rows buffered before one h5 append (per-append overhead is ~10-20 ms for the 20 datasets).
WRITE_ROWS = 128


def run(cfg: Config, outdir: Path, subjects: str | None = None, limit: int | None = None, resume: bool = False) -> int:
    """Render every selected subject's sources into ``OUTDIR/<subject>.h5``; returns the exit code."""
    if cfg.data.mpii.obj is None:
        raise ConfigError("data.mpii.obj is not set: point it at the folder `nvsynth recon` wrote")
    if cfg.data.mpii.raw is None:
        raise ConfigError("data.mpii.raw is not set: point it at the MPIIFaceGaze root (source images)")
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be at least 1")
    obj_root, outdir = Path(cfg.data.mpii.obj), Path(outdir)
    log = RenderLog(cfg, outdir, load_pattern(cfg))  # the pattern is read once per run
    from nvsynth.render.backgrounds import BackgroundSource

    backgrounds = BackgroundSource(cfg.data.background_path)  # listed once per run
    gaze = load_gaze_spec(cfg)  # a gaze file is read once per run
    spec = RenderSpec(cfg=cfg, seed=int(cfg.render.seed), pattern=log.pattern, image_root=Path(cfg.data.mpii.raw),
                      gaze=gaze)  # fmt: skip
    workers = int(cfg.render.workers)
    # several workers already use every core: one llvmpipe thread each avoids oversubscription (a user setting wins)
    env = {"LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS", "1")}
    with make_executor(partial(start_source_renderer, spec, backgrounds), workers, env=env) as executor:
        executor.start()  # worker imports overlap with the planning below
        plans, empty = plan_subjects(cfg, obj_root, outdir, subjects, limit, resume)
        for name in empty:
            log.reports[name] = SubjectReport(status="no-records")
        with Interrupt() as stop:
            try:
                for plan in plans:
                    eyeball = subject_eyeball(obj_root, plan.subject, cfg) if gaze.redirects else None
                    _render_subject(log, plan, resume, executor, stop, eyeball)
                    log.save()
                log.status = "finished"
                log.save()
            except KeyboardInterrupt:
                log.status = "interrupted"
                log.save()
                raise
    done = log.rows_this_run
    elapsed = time.perf_counter() - log.t0
    print(
        f"rendered {done} images for {len(plans)} subject(s) in {elapsed:.1f} s "
        f"({done / elapsed if elapsed > 0 else 0.0:.1f} images/s) -> {outdir}"
    )
    return 0


def subject_eyeball(obj_root: Path, subject: str, cfg: Config) -> EyeballModel:
    """The subject's eyeball model (``nvsynth recon`` with the mediapipe backend writes it); one line if missing."""
    path = eyeball_path(obj_root / subject)
    if not path.is_file():
        raise ConfigError(
            f"render.gaze '{cfg.render.gaze}' needs the eyeball model of {subject} ({path}): "
            "run `nvsynth recon` with recon.detector: mediapipe"
        )
    return EyeballModel.load(path)


def _render_subject(log: RenderLog, plan: SubjectPlan, resume: bool, executor: Executor, stop: Interrupt,
                    eyeball: EyeballModel | None = None) -> None:  # fmt: skip
    cfg = log.cfg
    fields = output_fields(cfg.render.gaze != "follow-head")
    subject = plan.subject
    final = log.outdir / f"{subject}.h5"
    report = SubjectReport(status="written", file=final.name, sources=len(plan.sources))
    log.reports[subject] = report
    if final.exists():  # only reachable with --resume
        attrs = read_attrs(final)
        with h5py.File(final, "r") as f:
            report.rows = int(f["view_index"].shape[0]) if "view_index" in f else 0
        report.status = "finished-before"
        report.skips = skips_of(attrs)
        return

    writer = H5Writer(final, fields, attrs=file_attrs(cfg, subject), resume=resume)
    try:
        # A reopened partial file carries the progress marker of the run that made it.
        prev = writer.attrs()
        done_frame = int(prev.get(PROGRESS_ATTR, -1))
        if writer.rows:
            done_frame = max(done_frame, int(writer.read_column("frame_index")[-1]))
        skips: dict[tuple[int, int, str], Skip] = {s.key: s for s in [*skips_of(prev), *plan.unreadable]}
        if done_frame >= 0:
            report.status = "resumed"
        report.rows = writer.rows
        todo = [s for s in plan.sources if s.frame_index > done_frame]
        pending: list[SourceResult] = []

        def write_pending() -> None:
            """One append (with the progress marker) for the buffered sources: fewer, larger h5 writes."""
            if not pending:
                return
            skipped = json.dumps([s.as_json() for s in skips.values()])
            writer.set_attrs({PROGRESS_ATTR: int(pending[-1].frame_index), SKIPS_ATTR: skipped})
            writer.append(concat_rows(fields, [r.columns for r in pending if r.columns is not None]))
            report.rows = writer.rows
            report.skips = list(skips.values())
            pending.clear()

        bar = progress_bar(len(todo) * cfg.render.views, desc=subject, unit="img")
        results = executor.map(render_item, (SourceItem(subject, s, eyeball) for s in todo))
        with bar, contextlib.closing(results):
            t_wait = time.perf_counter()
            for result in results:
                t_got = time.perf_counter()
                if log.first_result_s is None:
                    log.first_result_s = t_got - log.t0
                log.charge({"main_wait": t_got - t_wait, **{f"worker_{k}": v for k, v in result.seconds.items()}})
                if result.gl_renderer and not log.gl_renderer:
                    log.gl_renderer = result.gl_renderer
                for s in result.skips:
                    skips[s.key] = s
                pending.append(result)
                report.rows_this_run += result.rows
                if sum(r.rows for r in pending) >= WRITE_ROWS or stop.requested:
                    write_pending()
                bar.update(cfg.render.views)
                t_wait = time.perf_counter()
                log.charge({"main_write": t_wait - t_got})
                stop.check()
            write_pending()
        report.skips = list(skips.values())
        writer.commit()
    except KeyboardInterrupt:
        report.status = "interrupted"
        writer.close()
        raise
    except BaseException:
        writer.close()
        raise


__all__ = ["WRITE_ROWS", "run"]
