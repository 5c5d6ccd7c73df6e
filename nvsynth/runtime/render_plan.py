"""What a render run will do, decided before anything is written. See docs/design.md ("Runtime").

* Subjects: ``--subjects p00,p03``, or every folder under ``data.records``
  (one per subject, named as its reader names it); those without records are
  skipped with a message.
* Sources: a subject's recon records (``<obj>/<subject>/**.npz``) in frame
  order, the first ``--limit``; only each record's ``frame_index`` is read.
  Unreadable records become skips; two records with one frame index are an
  error (the folder mixes two recon runs).
* Output: an existing final ``<subject>.h5``, or committed units of an
  interrupted run (``<subject>.h5.parts``), are an error without ``--resume``
  (nothing committed is thrown away unasked); with it, a final file made with
  another seed, pattern, view count or configuration is refused
  (:func:`check_compatible`; units carry the config hash too,
  :mod:`nvsynth.runtime.units`). A ``<subject>.h5.partial`` file is never
  read: a resume rebuilds it from the committed units.
* File attributes (:func:`file_attrs`, names in :data:`nvsynth.core.schema.FILE_ATTRS`)
  depend on the configuration but never on the number of workers; they include
  the normalization constants (``render.normalization``), so that the file can
  be read back as input (``data.kind: xgaze-h5``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nvsynth import __version__
from nvsynth.core import geometry
from nvsynth.core.config import DEFAULT_UNIT_ROWS, Config
from nvsynth.core.errors import ConfigError, OutputError, RenderError, io_guard
from nvsynth.core.schema import NORM_ATTRS, SKIPS_ATTR
from nvsynth.render.stage import Skip, Source
from nvsynth.runtime.units import parts_path

#: What reading a damaged recon record raises (a truncated .npz is a bad zip file).
RECORD_ERRORS = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
RECON_MANIFEST = "manifest.csv"

@dataclass(frozen=True)
class SubjectPlan:
    """One subject to render: its sources in frame order and the records that could not be read."""

    subject: str
    sources: tuple[Source, ...]
    unreadable: tuple[Skip, ...]


def list_sources(obj_root: Path, subject: str, limit: int | None = None) -> tuple[list[Source], list[Skip]]:
    """The subject's recon records in frame order (the first ``limit``), and skips for unreadable ones."""
    folder = Path(obj_root) / subject
    with io_guard(folder, "list the recon records"):
        found = folder.rglob("*.npz") if folder.is_dir() else ()
        paths = sorted(p for p in found if not p.name.endswith(".tmp.npz"))
    sources: list[Source] = []
    bad: list[Skip] = []
    for p in paths:
        try:
            with np.load(p, allow_pickle=False) as z:
                frame = int(z["frame_index"])
        except RECORD_ERRORS as err:
            reason = (
                f"unreadable recon record {p} ({(str(err).splitlines() or [type(err).__name__])[0]}); "
                "`nvsynth recon` redoes it"
            )
            bad.append(Skip(subject, -1, -1, str(p.relative_to(obj_root)), reason))
            continue
        sources.append(Source(p, frame))
    sources.sort(key=lambda s: (s.frame_index, str(s.path)))
    for a, b in itertools.pairwise(sources):
        if a.frame_index == b.frame_index:
            raise RenderError(f"recon records {a.path} and {b.path} have the same frame index {a.frame_index}")
    return (sources if limit is None else sources[: max(0, limit)]), bad


def select_subjects(obj_root: Path, wanted: str | None) -> list[str]:
    """``--subjects p00,p03`` (validated), or every subject folder that holds recon records."""
    if wanted:
        names = [s.strip() for s in wanted.split(",") if s.strip()]
        for n in names:
            if n in (".", "..") or "/" in n or "\\" in n:
                raise ConfigError(f"--subjects: '{n}' is not a subject name like p00")
        return list(dict.fromkeys(names))  # each once, in the order given
    root = Path(obj_root)
    with io_guard(root, "list the recon folder (data.records)"):
        found = root.iterdir() if root.is_dir() else ()
        names = sorted(p.name for p in found if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise RenderError(f"no recon records under {root}: run `nvsynth recon` first")
    return names


def run_hash(cfg: Config) -> str:
    """The config digest that decides whether outputs are compatible (where and how the run ran is excluded)."""
    blob = json.dumps(_canonical(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _canonical(cfg: Config) -> dict[str, Any]:
    """The configuration without what the output does not depend on: worker counts (as 1), the render
    device and the runtime section (left out) and the durable units' size (its default)."""
    same = {"workers": 1, "unit_rows": DEFAULT_UNIT_ROWS}
    canon = cfg.model_copy(
        update={"render": cfg.render.model_copy(update=same), "recon": cfg.recon.model_copy(update={"workers": 1})}
    )
    return canon.model_dump(mode="json", exclude={"render": {"device"}, "runtime": True})


def file_attrs(cfg: Config, subject: str) -> dict[str, Any]:
    """The file attributes of a subject's h5, identical for any worker count."""
    norm = geometry.NORM_SPECS[cfg.render.normalization]
    return {
        **dict(zip(NORM_ATTRS, (norm.name, float(norm.focal), float(norm.distance), int(norm.size)), strict=True)),
        "nvsynth_version": __version__,
        "config_hash": run_hash(cfg),
        "seed": int(cfg.render.seed),
        "pattern": cfg.render.pattern,
        "subject": subject,
        "views_per_source": int(cfg.render.views),
        "config_json": json.dumps(_canonical(cfg), sort_keys=True),
    }


def read_attrs(path: Path) -> dict[str, Any]:
    """The file attributes of an h5 file, or ``{}`` when it cannot be read."""
    try:
        with h5py.File(path, "r") as f:
            return {k: f.attrs[k] for k in f.attrs}
    except OSError:
        return {}


def skips_of(attrs: dict[str, Any]) -> list[Skip]:
    """The skips recorded in a file's attributes."""
    raw = attrs.get(SKIPS_ATTR)
    return [Skip.from_json(d) for d in json.loads(raw)] if raw else []


def check_compatible(path: Path, want: dict[str, Any]) -> None:
    """Refuse to resume a file made with another seed, pattern, view count or configuration."""
    have = read_attrs(path)
    if not have:
        raise OutputError(f"{path}: not a readable nvsynth output file: remove it, then run again with --resume")
    for key in ("seed", "pattern", "views_per_source", "config_hash"):
        a, b = have.get(key), want[key]
        if key in have and str(a) != str(b):
            raise OutputError(
                f"{path}: made with {key}={a}, this run has {key}={b}; "
                "rerun with the same configuration or remove the file"
            )


def plan_subjects(
    cfg: Config, obj_root: Path, outdir: Path, subjects: str | None, limit: int | None, resume: bool
) -> tuple[list[SubjectPlan], list[str]]:
    """The subjects to render with their sources, and those skipped for having no records.

    User mistakes raise here, before anything is written.
    """
    plans: list[SubjectPlan] = []
    empty: list[str] = []
    for name in select_subjects(obj_root, subjects):
        sources, bad = list_sources(obj_root, name, limit)
        if not sources:
            message = f"subject {name}: {_why_no_records(Path(obj_root) / name, bad)}"
            if subjects:  # named on the command line: an error
                raise RenderError(message)
            print(f"nvsynth render: skipping {message}", file=sys.stderr)
            empty.append(name)
            continue
        final = outdir / f"{name}.h5"
        if final.exists() and not resume:
            raise OutputError(f"{final} exists: pass --resume to skip finished subjects, or remove it")
        parts = parts_path(final)
        if parts.is_dir() and not final.exists() and not resume:
            raise OutputError(
                f"{parts} holds the committed rows of an interrupted run: pass --resume to keep them "
                "and finish, or remove the folder to start over"
            )
        if resume and final.exists():
            check_compatible(final, file_attrs(cfg, name))
        plans.append(SubjectPlan(name, tuple(sources), tuple(bad)))
    if not plans:
        raise RenderError(f"no recon records under {obj_root}: run `nvsynth recon` first")
    return plans, empty


def _why_no_records(folder: Path, bad: list[Skip]) -> str:
    """Why a subject folder yields no sources: unreadable records, a recon that skipped every frame, or no recon."""
    if bad:
        return f"{len(bad)} recon record(s) under {folder} cannot be read: run `nvsynth recon` again to redo them"
    manifest = folder / RECON_MANIFEST
    if manifest.is_file():
        try:
            rows = max(0, len(manifest.read_text(encoding="utf-8", errors="replace").splitlines()) - 1)
        except OSError:
            rows = 0
        return (
            f"recon kept no frame under {folder} ({rows} frame(s) skipped; the reasons are in {manifest}): "
            "nothing to render"
        )
    return f"no recon records under {folder}: run `nvsynth recon` first"
