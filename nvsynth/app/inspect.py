"""``nvsynth inspect``: summarize, validate and plot rendered HDF5 files.

For each ``.h5`` file (PATH is a file or a folder of them) the terminal gets a
summary: rows, datasets with shapes and dtypes, label ranges in degrees, and
the mix of render parameters (variant shares, pattern, seed). Problems -- schema
(:mod:`nvsynth.core.schema`), NaN/inf values, labels outside the limits the view
sampler draws within (:mod:`nvsynth.core.limits`: every angle within +-90 degrees,
the head-pose norm within the file's ``render.max_pose_deg``), empty masks,
mismatched row counts, unreadable files -- go to stderr, one line each, and make
the exit code 1.

With ``-o OUT`` three figures are written (matplotlib, Agg): ``contact_sheet.png``
(samples with the gaze arrow and head axes), ``masks.png`` (masks over the
faces) and ``pose_hist.png`` (2D histograms of head pose and gaze).
Foreign ETH-XGaze files (no render parameters, no file attributes) are read too: the
schema's ETH-XGaze datasets are required, its render parameters checked where present.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
from numpy.typing import NDArray

from nvsynth.app.inspect_plots import Sample, contact_sheet, mask_sheet, pose_histograms
from nvsynth.core import h5io, schema
from nvsynth.core.atomic import write_bytes
from nvsynth.core.errors import ConfigError, NvsynthError, OutputError, io_guard
from nvsynth.core.limits import LabelLimits

LABELS = (("face_gaze", "gaze"), ("face_head_pose", "head"))
FIRST = 5  # rows listed in a problem line
BLOCK = 256  # rows per read when scanning masks
PNG_NAMES = ("contact_sheet.png", "masks.png", "pose_hist.png")


def find_files(path: Path) -> list[Path]:
    """The h5 files at PATH (a file, or the ``*.h5`` files of a folder)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.glob("*.h5"))
        if not files:
            raise OutputError(f"{path}: no .h5 files in this folder")
        partial = sorted(path.glob("*.h5" + h5io.PARTIAL_SUFFIX))
        if partial:
            print(f"note: {len(partial)} unfinished {h5io.PARTIAL_SUFFIX} file(s) ignored (resume the render)")
        parts = sorted(p for p in path.glob("*.h5.parts") if p.is_dir())
        if parts:
            print(f"note: {len(parts)} unfinished subject(s) with committed units ignored (resume the render)")
        return files
    raise OutputError(f"{path}: no such file or folder")


def _rows(where: NDArray[np.bool_]) -> str:
    idx = np.flatnonzero(where)
    more = ", ..." if idx.size > FIRST else ""
    return f"{idx.size} row(s) (first: {', '.join(str(i) for i in idx[:FIRST])}{more})"


def _per_row(f: h5py.File) -> dict[str, h5py.Dataset]:
    return {k: v for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim >= 1}


def validate(f: h5py.File) -> list[str]:
    """Every problem of an open file, one line each (empty when it is sound)."""
    problems = h5io.validate_schema(f, schema.REQUIRED_FIELDS, optional=schema.ALL_FIELDS)
    data = _per_row(f)
    if data and max(ds.shape[0] for ds in data.values()) == 0:
        problems.append("no rows")
    committed = f.attrs.get(schema.ROWS_ATTR)
    if committed is not None and "face_patch" in data and int(committed) != data["face_patch"].shape[0]:
        problems.append(
            f"attribute {schema.ROWS_ATTR}={int(committed)} but face_patch has {data['face_patch'].shape[0]} rows"
        )
    for name, ds in data.items():
        if ds.dtype.kind == "f" and ds.ndim <= 3 and ds.shape[0]:
            vals = ds[()].reshape(ds.shape[0], -1)
            bad = ~np.isfinite(vals).all(axis=1)
            if bad.any():
                problems.append(f"'{name}': NaN/inf in {_rows(bad)}")
    # the limits the view sampler drew within (nvsynth.core.limits), on the stored float32 values
    limits = LabelLimits.of_file_attrs(f.attrs)
    labels = {key: data[key][()] for key, _ in LABELS if key in data and data[key].shape[1:] == (2,)}
    if len({len(v) for v in labels.values()}) > 1:  # mismatched row counts: reported above
        labels = {}
    n = max((len(v) for v in labels.values()), default=0)
    blank = np.zeros((n, 2), np.float32)
    bad = limits.violations(labels.get("face_gaze", blank), labels.get("face_head_pose", blank))
    for key, what in (("face_gaze", "gaze_angle"), ("face_head_pose", "head_angle")):
        if key in labels and bad[what].any():
            problems.append(f"'{key}': label outside +-{limits.angle_deg:g} degrees in {_rows(bad[what])}")
    if "face_head_pose" in labels and bad["head_norm"].any():
        problems.append(f"'face_head_pose': {limits.describe('head_norm')} in {_rows(bad['head_norm'])}")
    mask = data.get("face_mask")
    if mask is not None and mask.ndim == 3:
        empty = np.concatenate(
            [
                mask[i : i + BLOCK].reshape(-1, mask.shape[1] * mask.shape[2]).max(axis=1) == 0
                for i in range(0, mask.shape[0], BLOCK)
            ]
            or [np.zeros(0, bool)]
        )
        if empty.any():
            problems.append(f"'face_mask': empty mask in {_rows(empty)}")
    return problems


def _attr(f: h5py.File, key: str) -> str | None:
    v = f.attrs.get(key)
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def _names(ds: h5py.Dataset) -> list[str] | None:
    names = ds.attrs.get("names")
    return None if names is None else [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def summary(f: h5py.File, path: Path) -> list[str]:
    """The terminal summary of one open file."""
    data = _per_row(f)
    rows = max((ds.shape[0] for ds in data.values()), default=0)
    attrs = [
        (k, _attr(f, k)) for k in ("nvsynth_version", "subject", "pattern", "seed", "views_per_source", "config_hash")
    ]
    head = ", ".join(f"{k} {v}" for k, v in attrs if v is not None) or "no nvsynth attributes"
    out = [f"== {path}: {rows} rows ({head})", "  datasets:"]
    for name, ds in data.items():
        dtype = "str (utf-8)" if h5py.check_string_dtype(ds.dtype) else str(ds.dtype)
        out.append(f"    {name:<18} {ds.shape!s:<22} {dtype}")
    out.append(f"  labels (degrees)  {'min':>8} {'median':>8} {'max':>8}")
    for key, label in LABELS:
        if key not in data or data[key].shape[1:] != (2,):
            continue
        vals = np.degrees(data[key][()].astype(np.float64))
        for col, part in enumerate(("pitch", "yaw")):
            v = vals[:, col][np.isfinite(vals[:, col])]
            stats = np.array([v.min(), np.median(v), v.max()]) if v.size else np.full(3, np.nan)
            out.append(f"    {label} {part:<6}      {stats[0]:8.1f} {stats[1]:8.1f} {stats[2]:8.1f}")
    if "variant" in data and data["variant"].shape[0]:
        codes = data["variant"][()].astype(np.int64).ravel()
        names = _names(data["variant"]) or [str(i) for i in range(int(codes.max()) + 1)]
        shares = [f"{n} {np.mean(codes == i):.0%}" for i, n in enumerate(names)]
        out.append(f"  variants: {', '.join(shares)}")
    if "relit" in data and data["relit"].shape[0]:
        out.append(f"  relit: {np.mean(data['relit'][()] > 0):.0%}")
    extra = [n for n in data if n not in schema.CORE_NAMES]
    out.append(f"  render parameters: {', '.join(extra) if extra else 'none recorded'}")
    return out


def describe_row(f: h5py.File, index: int) -> list[str]:
    """One row's labels and render parameters (everything but images and landmarks)."""
    out = [f"  row {index}:"]
    for name, ds in _per_row(f).items():
        if int(np.prod(ds.shape[1:], dtype=np.int64)) > 9:
            continue
        v = ds[index]
        if h5py.check_string_dtype(ds.dtype):
            text = v.decode() if isinstance(v, bytes) else str(v)
        elif name in dict(LABELS):
            deg = np.degrees(v).round(2).tolist()
            text = f"{np.array2string(np.asarray(v), precision=4)} rad = {deg} deg (pitch, yaw)"
        else:
            text = np.array2string(np.asarray(v), precision=4).replace("\n", "")
            names = _names(ds)
            if names is not None and 0 <= int(v) < len(names):
                text += f" ({names[int(v)]})"
        out.append(f"    {name:<18} {text}")
    return out


def _sample(f: h5py.File, path: Path, row: int) -> Sample:
    def get(key: str) -> NDArray | None:
        return np.asarray(f[key][row]) if key in f and f[key].shape[0] > row else None

    gaze, head = get("face_gaze"), get("face_head_pose")
    return Sample(
        f"{path.stem}:{row}",
        np.asarray(f["face_patch"][row]),
        get("face_mask"),
        None if gaze is None else gaze.astype(np.float64),
        None if head is None else head.astype(np.float64),
    )


# --- figures -----------------------------------------------------------------------------------------


def _save_patch(f: h5py.File, path: Path, index: int, folder: Path) -> Path:
    out = folder / f"{path.stem}_row{index}.png"
    ok, png = cv2.imencode(".png", np.asarray(f["face_patch"][index]))  # stored BGR, as cv2 expects
    if not ok:
        raise OutputError(f"{path}: cannot encode row {index} as PNG")
    write_bytes(out, png.tobytes())
    return out


def run(path: Path, out: Path | None = None, num: int = 16, index: int | None = None) -> int:
    """Summarize and validate PATH, optionally plot into OUT; 0 when every file is sound, else 1."""
    if num < 1:
        raise ConfigError("--num must be at least 1")
    files = find_files(Path(path))
    if out is not None:
        with io_guard(out, "create the folder for the figures"):
            Path(out).mkdir(parents=True, exist_ok=True)
    failed = 0
    picks: list[tuple[Path, int]] = []  # (file, rows) usable for the figures
    heads: list[NDArray[np.float64]] = []
    gazes: list[NDArray[np.float64]] = []
    for fpath in files:
        try:
            with h5io.open_h5(fpath) as f:
                print("\n".join(summary(f, fpath)))
                problems = validate(f)
                if index is not None:
                    n = f["face_patch"].shape[0] if "face_patch" in f else 0
                    if not 0 <= index < n:
                        problems.append(f"--index {index}: out of range ({n} rows)")
                    else:
                        print("\n".join(describe_row(f, index)))
                        print(f"  patch saved: {_save_patch(f, fpath, index, Path(out or '.'))}")
                if "face_patch" in f and f["face_patch"].ndim == 4:
                    picks.append((fpath, f["face_patch"].shape[0]))
                for key, sink in (("face_head_pose", heads), ("face_gaze", gazes)):
                    if key in f and f[key].shape[1:] == (2,):
                        sink.append(f[key][()].astype(np.float64))
        except NvsynthError as err:
            problems = [str(err)]
        except (OSError, RuntimeError, KeyError) as err:
            problems = [f"{fpath}: unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__})"]
        for p in problems:
            print(p if p.startswith(str(fpath)) else f"{fpath}: {p}", file=sys.stderr)
        failed += bool(problems)
    if out is not None and picks:
        try:
            _figures(picks, heads, gazes, num, Path(out))
        except (OSError, RuntimeError, KeyError) as err:
            print(f"{out}: figures failed ({str(err).splitlines()[0]})", file=sys.stderr)
            failed += 1
    print(f"inspect: {len(files)} file(s), {failed} with problems")
    return 1 if failed else 0


def _figures(
    picks: list[tuple[Path, int]],
    heads: list[NDArray[np.float64]],
    gazes: list[NDArray[np.float64]],
    num: int,
    out: Path,
) -> None:
    """The three PNGs: ``num`` rows spread evenly over all files, histograms of every row."""
    offsets = np.cumsum([0] + [n for _, n in picks])
    total = int(offsets[-1])
    chosen = np.unique(np.linspace(0, total - 1, min(num, total)).round().astype(int)) if total else []
    samples: list[Sample] = []
    for g in chosen:
        k = int(np.searchsorted(offsets, g, side="right") - 1)
        with h5io.open_h5(picks[k][0]) as f:
            samples.append(_sample(f, picks[k][0], int(g - offsets[k])))
    written = []
    if samples:
        contact_sheet(samples, out / PNG_NAMES[0])
        mask_sheet(samples, out / PNG_NAMES[1])
        written += PNG_NAMES[:2]
    empty = np.zeros((0, 2))
    pose_histograms(np.concatenate(heads or [empty]), np.concatenate(gazes or [empty]), out / PNG_NAMES[2])
    written.append(PNG_NAMES[2])
    print(f"figures: {', '.join(str(out / n) for n in written)}")
