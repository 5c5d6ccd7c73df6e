"""``nvsynth render -save OUTDIR``: recon records -> novel views -> one HDF5 file per subject.

See docs/design.md ("Runtime") and docs/reliability.md. The run checks first
(:mod:`nvsynth.runtime.preflight`: the output folder, its lock, free space,
the worker count; :mod:`nvsynth.runtime.render_plan`: subjects, sources,
existing outputs; the background images, each decoded once), so mistakes
raise before anything is written. Then it feeds each subject's sources to one
executor (:mod:`nvsynth.runtime.executor`) running the render stage
(:func:`nvsynth.render.stage.render_item`), and takes the rows as they come
back, in frame order then view order, whatever the number of workers:

* into durable units (:mod:`nvsynth.runtime.units`): every ``render.unit_rows``
  rows (whole sources) are committed to ``OUTDIR/<subject>.h5.parts/`` with
  fsync and an atomic rename (by a background thread, so that rendering goes on
  while the disk works), so a SIGKILL, a power cut or a full disk loses at most
  the unit in flight;
* into the subject's file (:mod:`nvsynth.runtime.subject_file`),
  ``<subject>.h5.partial``, renamed to ``<subject>.h5`` when complete; then
  the units are removed.

* ``--workers N`` (N > 1; ``auto``, the default: one per usable CPU,
  :mod:`nvsynth.runtime.slots`) renders in N 'spawn' processes, started before
  the sources are listed, each with its own renderer; llvmpipe draws in the
  worker's own thread (``LP_NUM_THREADS=0``, unless set: the workers already
  use every core, and a handoff to a second thread only costs); N = 1 renders
  in this process. At most
  ``2 N`` sources are in flight, so memory stays flat however large the subject.
* ``--device auto|cpu|N`` picks the EGL device once, here
  (:mod:`nvsynth.render.egl_devices`); every worker draws on it (several
  workers may share one GPU). The device is printed at start, and
  ``GL_RENDERER``/``GL_VERSION`` when the first source is done; all three go
  to ``manifest.json``.
* SIGINT or SIGTERM (to this process, or to its whole process group, which
  ends the workers at once) commits the sources already rendered as a unit, then
  stops: ``manifest.json`` says ``interrupted`` and
  :class:`~nvsynth.runtime.interrupt.Stopped` propagates (the command prints
  one line naming the ``--resume`` command and exits with 128 + the signal).
* ``--resume`` skips subjects whose final file exists; for the others it keeps
  every committed unit (rebuilding the subject's file from them, byte for byte
  as an uninterrupted run writes it) and renders only the sources after them.
* Skipped sources and views are recorded in the file attribute
  ``skipped_views`` and in ``OUTDIR/manifest.json`` (:mod:`nvsynth.runtime.manifest`),
  with the background images that could not be used.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import h5py

from nvsynth.core.config import Config
from nvsynth.core.errors import ConfigError, WorkerError, io_guard
from nvsynth.core.schema import output_fields
from nvsynth.recon.eyeball import EyeballModel, eyeball_path
from nvsynth.render.egl_devices import select_device
from nvsynth.render.gaze import load_gaze_spec
from nvsynth.render.patterns import load_pattern
from nvsynth.render.stage import RenderSpec, SourceItem, SourceResult, render_item, start_source_renderer
from nvsynth.runtime import failpoints
from nvsynth.runtime.executor import Executor, ExecutorFactory, configured_factory, runs_remotely
from nvsynth.runtime.interrupt import Interrupt, Stopped
from nvsynth.runtime.manifest import RenderLog, SubjectReport
from nvsynth.runtime.preflight import RunLock, check_space, check_workers, prepare_folder, warn
from nvsynth.runtime.progress import progress_bar
from nvsynth.runtime.render_plan import SubjectPlan, file_attrs, plan_subjects, read_attrs, run_hash, skips_of
from nvsynth.runtime.slots import worker_count
from nvsynth.runtime.subject_file import WRITE_ROWS, SubjectFile
from nvsynth.runtime.units import DamagedUnitError, SourceRows, UnitStore, parts_path


def run(
    cfg: Config,
    outdir: Path,
    subjects: str | None = None,
    limit: int | None = None,
    resume: bool = False,
    executor_factory: ExecutorFactory | None = None,
) -> int:
    """Render every selected subject's sources into ``OUTDIR/<subject>.h5``; returns the exit code.

    ``executor_factory(setup, workers, env=...)`` makes the executor (default: the one ``runtime.executor``
    names; ``process``: in-process for one worker, else a process pool); benchmarks pass another
    implementation of the same interface.
    """
    if cfg.data.records is None:
        raise ConfigError("data.records is not set: point it at the folder `nvsynth recon` wrote")
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be at least 1")
    obj_root, outdir = Path(cfg.data.records), Path(outdir)
    local = executor_factory is not None or not runs_remotely(cfg.runtime)
    if executor_factory is None:
        executor_factory = configured_factory(cfg.runtime, cfg.render.workers)
    workers = worker_count(cfg.render.workers, "render", local)
    if local:
        warn(check_workers(workers))
    prepare_folder(outdir)
    with RunLock(outdir):
        return _run_locked(cfg, obj_root, outdir, subjects, limit, resume, workers, executor_factory)


def _run_locked(
    cfg: Config,
    obj_root: Path,
    outdir: Path,
    subjects: str | None,
    limit: int | None,
    resume: bool,
    workers: int,
    executor_factory: ExecutorFactory,
) -> int:
    log = RenderLog(cfg, outdir, load_pattern(cfg))  # the pattern is read once per run
    from nvsynth.render.backgrounds import BackgroundSource

    backgrounds = BackgroundSource(cfg.data.background_path)  # listed once per run
    checked = backgrounds.validate()  # each image decoded once; unusable ones leave the listing
    if checked is not None:
        log.backgrounds = checked.as_json()
        print(checked.summary(), file=sys.stderr)
    device = select_device(cfg.render.device)  # one line naming the devices when there is none to match
    log.device, log.workers = device.describe(), workers
    gaze = load_gaze_spec(cfg)  # a gaze file is read once per run
    spec = RenderSpec(
        cfg=cfg, seed=int(cfg.render.seed), pattern=log.pattern, image_root=input_root(cfg), device=device, gaze=gaze
    )
    # the workers already use every core: llvmpipe draws in each worker's own thread (a user setting wins);
    # measured on 2 cores, 3% faster end to end than one llvmpipe thread per worker, the same bytes
    env = {"LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS", "0")}
    with executor_factory(partial(start_source_renderer, spec, backgrounds), workers, env=env) as executor:
        executor.start()  # worker imports overlap with the planning below
        workers = log.workers = executor.slots  # e.g. one in-process slot, or a Ray cluster's CPUs
        plans, empty = plan_subjects(cfg, obj_root, outdir, subjects, limit, resume)
        images = sum(len(p.sources) for p in plans) * cfg.render.views
        warn(check_space(outdir, images, max((len(p.sources) for p in plans), default=0) * cfg.render.views))
        print(f"nvsynth render: {workers} worker(s) on {log.device} (device: {cfg.render.device})", file=sys.stderr)
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
                _save_quietly(log)
                raise
            except BaseException:
                log.status = "failed"
                _save_quietly(log)
                raise
    done = log.rows_this_run
    elapsed = time.perf_counter() - log.t0
    print(
        f"rendered {done} images for {len(plans)} subject(s) in {elapsed:.1f} s "
        f"({done / elapsed if elapsed > 0 else 0.0:.1f} images/s) -> {outdir}"
    )
    return 0


def input_root(cfg: Config) -> Path | None:
    """Where source images are when a record's own ``image_root`` has moved: ``data.input`` (a file: its folder)."""
    path = cfg.data.input
    if path is None:
        return None
    return Path(path).parent if Path(path).is_file() else Path(path)


def _save_quietly(log: RenderLog) -> None:
    """Save the manifest on the way out; a second failure (the disk is still full) must not hide the first."""
    with contextlib.suppress(Exception):
        log.save()


def _finished_before(report: SubjectReport, final: Path, store: UnitStore) -> None:
    attrs = read_attrs(final)
    with io_guard(final, "read the finished output file"), h5py.File(final, "r") as f:
        report.rows = int(f["view_index"].shape[0]) if "view_index" in f else 0
    report.status = "finished-before"
    report.skips = skips_of(attrs)
    store.remove()  # left by a kill between the file's rename and the units' removal


class _UnitBuffer:
    """Sources received since the last committed unit; commits them at ``unit_rows`` rows.

    Units are written (and fsynced) by one background thread, in order, so that the main loop
    keeps taking results while the disk works; at most one unit is on its way while the next
    fills, and an error of that write comes back from the next :meth:`commit`.
    """

    def __init__(self, store: UnitStore, number: int, unit_rows: int, report: SubjectReport) -> None:
        self.store, self.number, self.unit_rows, self.report = store, number, int(unit_rows), report
        self.sources: list[tuple[SourceRows, dict[str, Any] | None]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nvsynth-units")
        self._last: Future[None] | None = None

    def add(self, result: SourceResult) -> None:
        self.sources.append((SourceRows(result.frame_index, result.rows, tuple(result.skips)), result.columns))
        if sum(s.rows for s, _ in self.sources) >= self.unit_rows:
            self.commit()

    def commit(self, wait: bool = False) -> None:
        """Hand the sources received so far to the writer; with ``wait``, return once every unit is on disk."""
        if self.sources:
            sources, self.sources = self.sources, []
            number, self.number = self.number, self.number + 1
            self._wait()
            self._last = self._pool.submit(self._write, number, sources)
        if wait:
            self._wait()

    def _wait(self) -> None:
        last, self._last = self._last, None
        if last is not None:
            last.result()

    def _write(self, number: int, sources: list[tuple[SourceRows, dict[str, Any] | None]]) -> None:
        self.store.write(number, sources)
        self.report.units_written += 1
        failpoints.reached("unit")

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def subject_eyeball(obj_root: Path, subject: str, cfg: Config) -> EyeballModel:
    """The subject's eyeball model (``nvsynth recon`` with the mediapipe backend writes it); one line if missing."""
    path = eyeball_path(obj_root / subject)
    if not path.is_file():
        raise ConfigError(
            f"render.gaze '{cfg.render.gaze}' needs the eyeball model of {subject} ({path}): "
            "run `nvsynth recon` with recon.detector: mediapipe"
        )
    return EyeballModel.load(path)


def _render_subject(
    log: RenderLog,
    plan: SubjectPlan,
    resume: bool,
    executor: Executor,
    stop: Interrupt,
    eyeball: EyeballModel | None = None,
) -> None:
    cfg = log.cfg
    subject = plan.subject
    final = log.outdir / f"{subject}.h5"
    fields = output_fields(cfg.render.gaze != "follow-head")
    store = UnitStore(parts_path(final), subject, run_hash(cfg), fields)
    report = SubjectReport(status="written", file=final.name, sources=len(plan.sources))
    log.reports[subject] = report
    if final.exists():  # only reachable with --resume
        _finished_before(report, final, store)
        return

    store.clean_temporary()
    frames = [s.frame_index for s in plan.sources]
    kept, notes = store.committed(frames) if resume else ([], [])
    for note in notes:
        print(f"nvsynth render: {subject}: {note}", file=sys.stderr)
    out = SubjectFile(final, file_attrs(cfg, subject), plan.unreadable, fields)
    units = _UnitBuffer(store, 0, cfg.render.unit_rows, report)
    try:
        # the subject's file is rebuilt from the committed units, never read back from a partial file
        for i, unit in enumerate(kept):
            try:
                rows = list(store.read(unit))
            except DamagedUnitError as err:  # its header was sound, its rows are not: redo it and the rest
                print(f"nvsynth render: {subject}: {err}", file=sys.stderr)
                kept = kept[:i]
                store.drop_from(i)
                break
            for src, columns in rows:
                out.add(src.frame, columns, src.skips, src.rows)
            failpoints.reached("merge")
        done = sum(len(u.sources) for u in kept)
        report.units_kept, report.rows_kept = len(kept), sum(u.rows for u in kept)
        report.rows = report.rows_kept
        report.skips = list(out.skips.values())
        if kept:
            report.status = "resumed"
            print(
                f"nvsynth render: {subject}: resuming: kept {len(kept)} committed unit(s), {report.rows_kept} rows "
                f"(sources up to frame {frames[done - 1]}); {len(frames) - done} source(s) left",
                file=sys.stderr,
            )
        todo = plan.sources[done:]
        units.number = len(kept)
        views = cfg.render.views
        bar = progress_bar(len(plan.sources) * views, desc=subject, unit="img", initial=done * views)
        results = executor.map(render_item, (SourceItem(subject, s, eyeball) for s in todo))
        with bar, contextlib.closing(results):
            t_wait = time.perf_counter()
            for result in results:
                t_got = time.perf_counter()
                if log.first_result_s is None:
                    log.first_result_s = t_got - log.t0
                log.charge({"main_wait": t_got - t_wait, **{f"worker_{k}": v for k, v in result.seconds.items()}})
                if result.gl is not None and log.gl is None:
                    log.gl = result.gl
                    bar.write(f"nvsynth render: {result.gl.renderer} ({result.gl.version})", file=sys.stderr)
                out.add(result.frame_index, result.columns, result.skips, result.rows)
                units.add(result)
                report.rows_this_run += result.rows
                report.rows = out.rows
                report.skips = list(out.skips.values())
                if stop.requested:
                    units.commit(wait=True)  # what is rendered is kept
                bar.update(cfg.render.views)
                t_wait = time.perf_counter()
                log.charge({"main_write": t_wait - t_got})
                stop.check()
        units.commit(wait=True)  # the last unit too: a kill before the rename below then redoes nothing
        out.commit()
        store.remove()
    except BaseException as err:
        stopped = isinstance(err, KeyboardInterrupt) or (isinstance(err, WorkerError) and stop.requested)
        report.status = "interrupted" if stopped else "failed"
        with contextlib.suppress(Exception):  # what was rendered is kept (a full disk may refuse it)
            units.commit(wait=True)
        out.discard()
        if isinstance(err, WorkerError) and stop.requested:  # a SIGTERM to the whole group ended the workers
            raise Stopped(stop.signum) from None
        raise
    finally:
        units.close()


__all__ = ["WRITE_ROWS", "run"]
