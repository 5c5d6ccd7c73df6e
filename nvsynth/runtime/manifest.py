"""Run records: ``manifest.json`` of a render run, ``manifest.csv`` of a recon subject. See docs/design.md.

``OUTDIR/manifest.json`` (written atomically after every subject, and when a
run finishes or is interrupted) records the configuration, versions,
per-subject counts, skipped views and sources with reasons, and the elapsed
time and its split over the stages. ``<obj>/<subject>/manifest.csv`` lists
every frame of a recon run with its status, in annotation order.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from nvsynth import __version__
from nvsynth.core.atomic import write_text
from nvsynth.core.config import Config
from nvsynth.core.errors import io_guard
from nvsynth.recon.stage import FrameOutcome
from nvsynth.render.egl_devices import GlInfo
from nvsynth.render.patterns import Pattern
from nvsynth.render.stage import Skip
from nvsynth.runtime.render_plan import run_hash

RENDER_MANIFEST = "manifest.json"
RECON_MANIFEST = "manifest.csv"
RECON_MANIFEST_FIELDS = (
    "frame_index",
    "image",
    "status",
    "reason",
    "reprojection_error_px",
    "detector",
    "ms",
    "annotation_deg",  # fitted head rotation vs the annotation's (recon/placement.py)
    "depth_correction_mm",  # how far the mesh was moved in depth onto the annotation's face centre
)


@dataclass
class SubjectReport:
    """What a render run did with one subject (updated as its rows are written)."""

    status: str  # written | resumed | finished-before | interrupted | failed | no-records
    rows: int = 0
    rows_this_run: int = 0
    sources: int = 0
    skips: list[Skip] = field(default_factory=list)
    file: str = ""
    units_kept: int = 0  # committed units of an earlier run that this run kept (nvsynth.runtime.units)
    rows_kept: int = 0  # their rows
    units_written: int = 0  # units this run committed

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "file": self.file,
            "rows": self.rows,
            "rows_this_run": self.rows_this_run,
            "rows_kept": self.rows_kept,
            "units_kept": self.units_kept,
            "units_written": self.units_written,
            "sources": self.sources,
            "views_skipped": sum(1 for s in self.skips if s.view_index >= 0),
            "sources_skipped": sum(1 for s in self.skips if s.view_index < 0),
        }


def versions(gl: GlInfo | None) -> dict[str, str | None]:
    import moderngl

    return {
        "nvsynth": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "moderngl": getattr(moderngl, "__version__", None),
        "gl_renderer": None if gl is None else gl.renderer,
        "gl_version": None if gl is None else gl.version,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "cv2": cv2.__version__,
    }


class RenderLog:
    """The state of a render run that ``manifest.json`` reports."""

    def __init__(self, cfg: Config, outdir: Path, pattern: Pattern | None) -> None:
        self.cfg = cfg
        self.outdir = Path(outdir)
        self.pattern = pattern
        self.t0 = time.perf_counter()
        self.reports: dict[str, SubjectReport] = {}
        self.gl: GlInfo | None = None  # what the first worker reported
        self.device = ""  # the EGL device chosen (render.egl_devices.EglDevice.describe())
        self.workers = 0
        self.status = "running"
        self.timing: dict[str, float] = {}  # worker stages (summed over workers), main-side write/wait
        self.first_result_s: float | None = None
        self.backgrounds: dict[str, Any] | None = None  # the background folder's check (render.backgrounds)

    def charge(self, seconds: dict[str, float]) -> None:
        for k, v in seconds.items():
            self.timing[k] = self.timing.get(k, 0.0) + v

    @property
    def rows_this_run(self) -> int:
        return sum(r.rows_this_run for r in self.reports.values())

    def manifest(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.t0
        rendered = self.rows_this_run
        pat = self.pattern
        subjects = {k: r.as_json() for k, r in self.reports.items()}
        return {
            "status": self.status,
            "config": self.cfg.model_dump(mode="json"),
            "config_hash": run_hash(self.cfg),
            "pattern": {
                "name": self.cfg.render.pattern,
                "file": pat.origin if pat else None,
                "rows": None if pat is None or pat.poses is None else len(pat.poses),
            },
            "versions": versions(self.gl),
            "device": {
                "requested": self.cfg.render.device,
                "egl_device": self.device,
                "gl_renderer": None if self.gl is None else self.gl.renderer,
                "gl_version": None if self.gl is None else self.gl.version,
                "workers": self.workers,
            },
            "subjects": subjects,
            "totals": {
                "rows": sum(r.rows for r in self.reports.values()),
                "rows_this_run": rendered,
                "views_skipped": sum(s["views_skipped"] for s in subjects.values()),
                "sources_skipped": sum(s["sources_skipped"] for s in subjects.values()),
            },
            "skips": [s.as_json() for r in self.reports.values() for s in r.skips],
            "backgrounds": self.backgrounds,
            "elapsed_s": round(elapsed, 3),
            "images_per_s": round(rendered / elapsed, 2) if elapsed > 0 else None,
            "timing_s": {
                "first_result": None if self.first_result_s is None else round(self.first_result_s, 3),
                **{k: round(v, 3) for k, v in sorted(self.timing.items())},
            },
        }

    def save(self) -> None:
        """Write ``OUTDIR/manifest.json`` atomically."""
        path = self.outdir / RENDER_MANIFEST
        with io_guard(path, "write the run manifest", "free some space, then run the same command with --resume"):
            self.outdir.mkdir(parents=True, exist_ok=True)
            write_text(path, json.dumps(self.manifest(), indent=2, default=str) + "\n")


def write_recon_manifest(path: Path, outcomes: Iterable[FrameOutcome]) -> None:
    """``manifest.csv``: one row per frame, in annotation order (written atomically)."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(RECON_MANIFEST_FIELDS)
    for o in sorted(outcomes, key=lambda o: o.frame_index):
        err = "" if not np.isfinite(o.reprojection_error_px) else f"{o.reprojection_error_px:.3f}"
        status = "ok" if o.status == "cached" else o.status
        reason = "existing record" if o.status == "cached" else o.reason
        placed = ["" if not np.isfinite(v) else f"{v:.3f}" for v in (o.annotation_deg, o.depth_correction_mm)]
        wr.writerow([o.frame_index, o.image, status, reason, err, o.detector, f"{o.ms:.1f}", *placed])
    with io_guard(path, "write the recon manifest"):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, buf.getvalue())
