"""Property-based tests (hypothesis): any input to a parser gives a result or one line, never a traceback.

Three parsers read what users hand nvsynth: the MPIIFaceGaze annotation (``pXX.txt``), the
configuration (YAML) and pose-pattern files (``.txt``/``.npy``). Each gets at least
:data:`EXAMPLES` inputs, from raw bytes to near-valid files with one field broken; the only
exception allowed out is the layer's own :class:`~nvsynth.core.errors.NvsynthError`, in one line.
"""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nvsynth.core.config import Config, loads
from nvsynth.core.errors import AssetError, ConfigError, DatasetError
from nvsynth.datasets.mpii import Duplicate, Frame, Subject
from nvsynth.render.patterns import load_pose_file

EXAMPLES = 500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORK = Path(tempfile.mkdtemp(prefix="nvsynth-fuzz-"))

REPO = Path(__file__).resolve().parents[1]
GOOD_LINE = (REPO / "supplementary" / "sample" / "p00" / "p00.txt").read_text().splitlines()[0]


def _one_line(err: Exception) -> None:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


# --- the annotation parser ------------------------------------------------------------------------

_ODD = ["nan", "inf", "-inf", "1e999", "0x10", "1_0", "", "--", "day01/0001.jpg", "/abs.jpg", "../up.jpg",
        "a.txt", "left", "right", "\x00", "é", "١٢"]  # fmt: skip
_token = st.one_of(st.from_regex(r"-?\d{1,4}(\.\d{1,6})?", fullmatch=True), st.sampled_from(_ODD), st.text(max_size=8))


@st.composite
def _annotation_line(draw: st.DrawFn) -> bytes:
    """A valid line with some columns replaced, removed or added, or arbitrary bytes."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    cols = GOOD_LINE.split()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(cols) - 1))
        op = draw(st.integers(0, 2))
        if op == 0:
            cols[i] = draw(_token)
        elif op == 1 and len(cols) > 1:
            del cols[i]
        else:
            cols.insert(i, draw(_token))
    sep = draw(st.sampled_from([" ", "\t", "  ", "\u00a0", "\x0b"]))
    return sep.join(cols).encode("utf-8", "surrogatepass") if kind < 3 else GOOD_LINE.encode()


@FUZZ
@given(st.lists(_annotation_line(), min_size=1, max_size=6), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_annotation_parser(lines: list[bytes], newline: bytes) -> None:
    sdir = WORK / "p00"
    sdir.mkdir(exist_ok=True)
    ann = sdir / "p00.txt"
    ann.write_bytes(newline.join(lines))
    subj = Subject("p00", sdir, None, ann)  # type: ignore[arg-type]  # the parser does not read calibration
    try:
        items = list(subj.scan())
    except DatasetError as err:
        _one_line(err)
        assert str(err).startswith(f"{ann}:")  # names file:line
        event("one-line error")
        return
    event("frames read")
    seen = set()
    for item in items:
        assert isinstance(item, (Frame, Duplicate))
        if isinstance(item, Frame):
            assert item.relative_path not in seen and np.all(np.isfinite(item.landmarks_6))
            seen.add(item.relative_path)


# --- the configuration loader ---------------------------------------------------------------------

_KEYS = ["data", "mpii", "raw", "obj", "background_path", "assets", "recon", "render", "views", "seed", "workers",
         "pattern", "light", "ambient", "probability", "max_pose_deg", "unit_rows", "face_gate", "detector",
         "gaussian_sigma_deg", "export_obj", "cache_dir", "pattern_file", "x"]  # fmt: skip
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**62, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["gaussian", "dlib", "~nobody/x", "a\x00b", "2001-13-45", "..", "/proc/self"]),
)  # fmt: skip
_tree = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=6), st.integers()), inner, max_size=4),
    ),
    max_leaves=12,
)


def _leaves(node: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, v in node.items():
        out += _leaves(v, (*prefix, k)) if isinstance(v, dict) else [(*prefix, k)]
    return out


_DEFAULTS = Config().model_dump(mode="json")
_LEAVES = _leaves(_DEFAULTS)


@st.composite
def _config_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind >= 4:  # the full default config with one to three values replaced
        tree = yaml.safe_load(yaml.safe_dump(_DEFAULTS))
        for _ in range(draw(st.integers(1, 3))):
            *path, key = draw(st.sampled_from(_LEAVES))
            node = tree
            for k in path:
                node = node[k]
            node[key] = draw(_scalar)
        try:
            return yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
        except (yaml.YAMLError, UnicodeEncodeError):
            return b"{}"
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:  # YAML-looking text: keys, colons, indentation, flow collections, tags
        parts = st.sampled_from(["render:", "  seed:", " views: 3", "data:\n  mpii:\n    raw: ", "[", "]", "{", "}",
                                 "- ", "!!python/object:os.system", "&a", "*a", "? ", "\t", "\n", ": ", "'", '"',
                                 "2001-13-45", "0o777", ".inf", "~"])  # fmt: skip
        return "".join(draw(st.lists(st.one_of(parts, st.text(max_size=5)), max_size=20))).encode("utf-8", "replace")
    tree = draw(st.dictionaries(st.sampled_from(_KEYS), _tree, max_size=4) if kind == 2 else _tree)
    try:
        return yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, UnicodeEncodeError):
        return b"{}"


@FUZZ
@given(_config_bytes())
def test_config_loader(data: bytes) -> None:
    try:
        cfg = loads(data, WORK / "config.yaml")
    except ConfigError as err:
        _one_line(err)
        assert str(err).startswith("config: ")
        event("one-line error")
        return
    event("valid config")
    assert isinstance(cfg, Config)
    assert 0 <= cfg.render.seed < 2**32 and cfg.render.views >= 1 and not isinstance(cfg.render.seed, bool)


# --- the pose-pattern reader ----------------------------------------------------------------------


@st.composite
def _pose_file(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from([".txt", ".npy"])), draw(st.binary(max_size=300))
    if kind == 1:  # text tables, ragged or not
        rows = draw(st.lists(st.lists(st.one_of(st.floats(), st.sampled_from(["x", "nan", "#", ","])),
                                      min_size=0, max_size=3), max_size=6))  # fmt: skip
        return ".txt", "\n".join(" ".join(str(v) for v in r) for r in rows).encode()
    # a real .npy of any dtype and shape, sometimes truncated
    dtype = draw(st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.complex_number_dtypes(),
                           hnp.unicode_string_dtypes(), hnp.datetime64_dtypes(), st.just(np.dtype(bool))))  # fmt: skip
    arr = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    raw = buf.getvalue()
    if kind == 3:
        raw = raw[: draw(st.integers(0, len(raw)))]
    return ".npy", raw


@FUZZ
@given(_pose_file())
def test_pattern_file_reader(case: tuple[str, bytes]) -> None:
    suffix, data = case
    path = WORK / f"poses{suffix}"
    path.write_bytes(data)
    try:
        poses = load_pose_file(path)
    except AssetError as err:
        _one_line(err)
        assert str(path) in str(err)
        event("one-line error")
        return
    event("poses read")
    assert poses.dtype == np.float64 and poses.ndim == 2 and poses.shape[1] == 2 and len(poses)
    assert np.all(np.isfinite(poses)) and np.abs(poses).max() <= math.pi
