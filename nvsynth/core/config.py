"""Configuration: one YAML file (``config_path.yaml``), validated once.

Unknown keys and wrong types end the program with exit code 2 and one line
naming the key. Relative paths resolve against the config file's folder.
CLI options override the file through :func:`with_overrides`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator

from nvsynth.core.errors import ConfigError, io_guard

DEFAULT_CONFIG_NAME = "config_path.yaml"

# Numbers and switches are taken as written: `seed: true` or `views: 16.0` is a mistake, not 1 or 16
# (pydantic's lax mode would convert them). A float key accepts an integer.
Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
#: The seed is 32-bit (nvsynth.core.seeding uses its low 32 bits): larger values would repeat smaller ones.
MAX_SEED = 2**32 - 1
#: Rows per durable unit of a render run (nvsynth.runtime.units): a kill loses at most the unit in flight.
DEFAULT_UNIT_ROWS = 256


def _workers(value: object) -> int | str:
    """``workers``: an integer >= 1, or ``"auto"`` (the CPUs this process may use, resolved when a run starts)."""
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError("expected an integer >= 1 or 'auto'")


def _device(value: object) -> int | str:
    """``render.device``: ``"auto"``, ``"cpu"`` (Mesa llvmpipe) or a CUDA device ordinal >= 0."""
    if value in ("auto", "cpu"):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError("expected 'auto', 'cpu' or a CUDA device number >= 0")


#: Worker processes: an integer >= 1 or "auto" (see :func:`nvsynth.runtime.slots.worker_count`).
Workers = Annotated[int | str, PlainValidator(_workers)]
#: The render device: "auto", "cpu" or a CUDA ordinal (see :mod:`render.egl_devices`).
Device = Annotated[int | str, PlainValidator(_device)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: ``data.kind``: the dataset readers (nvsynth.datasets.registry); ``auto`` detects one from ``data.input``.
DataKind = Literal["auto", "mpiifacegaze", "xgaze-h5", "folder"]
#: Deprecated ``data.mpii`` keys and the keys that replaced them.
LEGACY_DATA_KEYS = {"raw": "input", "obj": "records"}


class DataConfig(_Section):
    input: Path | None = None  # the dataset: an MPIIFaceGaze root, an ETH-XGaze-layout .h5 (or folder), a folder
    kind: DataKind = "auto"
    records: Path | None = None  # recon output root (one folder per subject)
    background_path: Path | None = None  # folder of background images (optional)


class AssetsConfig(_Section):
    face_template: Path | None = None  # MediaPipe canonical_face_model.obj
    landmark_map: Path | None = None  # dlib 68 -> template vertex map (JSON)
    targets_dir: Path | None = None  # folder with EYEDIAP_*_head_distribution.txt, xgaze_train.npy
    face_landmark_model: Path | None = None  # MediaPipe face_landmark.tflite
    iris_landmark_model: Path | None = None  # MediaPipe iris_landmark.tflite
    cache_dir: Path | None = None  # default platformdirs.user_cache_dir('nvsynth'), ~/.cache/nvsynth on Linux


class ReconConfig(_Section):
    detector: Literal["dlib", "fan", "mediapipe"] = "dlib"
    # mediapipe: frames whose face-presence probability is below this are skipped (no face)
    min_face_presence: Float = Field(0.5, ge=0.0, le=1.0)
    workers: Workers = "auto"
    subdivide: Int = Field(0, ge=0, le=2)  # Loop-style subdivision steps of the template
    export_obj: Bool = False
    face_gate: Bool = True  # reject frames without a usable face (recon/quality.py)
    rotation_prior_deg: Float | None = Field(0.25, gt=0.0)  # fit's rotation prior about the annotation's; null: none
    max_annotation_deg: Float = Field(30.0, gt=0.0)  # skip a frame whose landmark pose is farther from its annotation


class LightConfig(_Section):
    enabled: Bool = True
    probability: Float = Field(0.5, ge=0.0, le=1.0)  # share of views relit
    ambient: tuple[Float, Float] = (0.4, 0.8)  # range of the ambient level
    darken_background: Bool = False


class RenderConfig(_Section):
    pattern: Literal["xgaze-train", "eyediap-cs", "eyediap-ft", "gaussian", "file", "source"] = "gaussian"
    pattern_file: Path | None = None  # for pattern 'file'
    gaussian_sigma_deg: Float = Field(20.0, gt=0.0, allow_inf_nan=False)
    gaussian_on: Literal["head", "gaze"] = "head"
    views: Int = Field(16, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    workers: Workers = "auto"
    device: Device = "auto"
    max_pose_deg: Float = Field(80.0, gt=0.0, le=90.0)  # head-pose norm; see nvsynth.core.limits
    max_attempts: Int = Field(20, ge=1)
    unit_rows: Int = Field(DEFAULT_UNIT_ROWS, ge=1)  # rows per durable unit (output does not depend on it)
    appearance: Literal["mpii-nv", "plain"] = "mpii-nv"
    # output normalization constants (nvsynth.core.geometry.NORM_SPECS): mpii-nv (focal 960 at 448 px, 300 mm)
    # or eth-xgaze (focal 960 at 224 px, 600 mm); patches are stored at 224 either way
    normalization: Literal["mpii-nv", "eth-xgaze"] = "mpii-nv"
    # views are drawn at render_size px (the normalized camera scaled to it) and reduced to the 224 patch:
    # 448 is 2 x 2 supersampling; 320 (1.43 x 1.43) scores the same on the fidelity benchmark and draws 1.5x faster
    # on llvmpipe (benchmarks/bench_supersample.py)
    render_size: Int = Field(320, ge=224, le=896)  # 1 to 4 render pixels per patch pixel along a side
    light: LightConfig = LightConfig()
    # gaze of the views: follow-head (eyes turn with the head, MPII-NV), or redirected eyeballs (render.gaze)
    gaze: Literal["follow-head", "gaussian", "file"] = "follow-head"
    gaze_sigma_deg: float = Field(15.0, gt=0.0)  # 'gaussian': sigma of the eye-in-head pitch and yaw
    gaze_file: Path | None = None  # 'file': .npy/.txt of normalized-camera gaze (pitch, yaw) radians
    gaze_max_deg: float = Field(35.0, gt=0.0, le=60.0)  # bound of the eye-in-head rotation (resampled beyond)
    gaze_distance_mm: tuple[float, float] = (300.0, 1000.0)  # face centre -> gaze target, drawn uniformly

    @field_validator("gaze_distance_mm")
    @classmethod
    def _distance_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1]:
            raise ValueError("must be [near, far] with 0 < near <= far (mm)")
        return v


class RuntimeConfig(_Section):
    """Where the work runs (nvsynth.runtime.executor); the output never depends on it."""

    executor: Literal["local", "process", "ray"] = "process"  # this process | local worker processes | Ray actors
    ray_address: str | None = None  # a Ray cluster (e.g. "auto", "10.0.0.1:6379"); null: $RAY_ADDRESS, else local


class Config(_Section):
    data: DataConfig = DataConfig()
    assets: AssetsConfig = AssetsConfig()
    recon: ReconConfig = ReconConfig()
    render: RenderConfig = RenderConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    def digest(self) -> str:
        """A short stable hash of the effective configuration."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_PATH_FIELDS = (
    ("data", "input"),
    ("data", "records"),
    ("data", "mpii", "raw"),
    ("data", "mpii", "obj"),
    ("data", "background_path"),
    ("assets", "face_template"),
    ("assets", "landmark_map"),
    ("assets", "targets_dir"),
    ("assets", "face_landmark_model"),
    ("assets", "iris_landmark_model"),
    ("assets", "cache_dir"),
    ("render", "pattern_file"),
    ("render", "gaze_file"),
)


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    for keys in _PATH_FIELDS:
        node: Any = raw
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            p = Path(node[keys[-1]]).expanduser()
            node[keys[-1]] = str(p if p.is_absolute() else (base / p).resolve())


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(str(x) for x in e["loc"])
    if e["type"] == "extra_forbidden":
        return f"config: unknown key '{_short(key)}'"
    return f"config: key '{_short(key)}': {e['msg']} (got {_short(repr(e.get('input')))})"


def _short(text: str, n: int = 120) -> str:
    """One line of at most ``n`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _legacy_data_keys(raw: dict[str, Any]) -> None:
    """Move the deprecated ``data.mpii.raw`` / ``data.mpii.obj`` to ``data.input`` / ``data.records``, saying so."""
    data = raw.get("data")
    if not isinstance(data, dict) or "mpii" not in data:
        return
    mpii = data.pop("mpii")
    if mpii is None:
        return
    if not isinstance(mpii, dict):
        raise ConfigError("config: key 'data.mpii': expected a mapping (deprecated: use data.input, data.records)")
    for old, value in mpii.items():
        new = LEGACY_DATA_KEYS.get(old)
        if new is None:
            raise ConfigError(f"config: unknown key 'data.mpii.{old}'")
        if value is None:
            continue
        if data.get(new) is not None and data[new] != value:
            raise ConfigError(f"config: data.mpii.{old} and data.{new} disagree: keep data.{new} only")
        data[new] = value
    print(
        "nvsynth: config: data.mpii.raw / data.mpii.obj are deprecated: use data.input / data.records",
        file=sys.stderr,
    )


def from_dict(raw: dict[str, Any], base: Path | None = None) -> Config:
    """Validate a config mapping; relative paths resolve against ``base``.

    The deprecated ``data.mpii.raw`` / ``data.mpii.obj`` still work (one line on stderr).
    """
    try:
        raw = json.loads(json.dumps(raw, default=str))  # deep copy, plain types
    except (TypeError, ValueError, RecursionError) as err:  # e.g. a key that is a date, or nesting too deep
        raise ConfigError(f"config: not a plain mapping of keys to values ({_first_line(err)})") from None
    try:
        _resolve_paths(raw, base or Path.cwd())
    except (ValueError, OSError, RuntimeError) as err:  # a NUL byte, a loop of links, ~nobody
        raise ConfigError(f"config: a path cannot be used ({_first_line(err)})") from None
    _legacy_data_keys(raw)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a config file; ``None`` means ``./config_path.yaml`` if present."""
    if path is None:
        default = Path.cwd() / DEFAULT_CONFIG_NAME
        if not default.exists():
            return Config()
        path = default
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config: {path} is a folder, not a file")
    if not path.is_file():
        raise ConfigError(f"config: file not found: {path}")
    with io_guard(path, "read the config file"):
        data = path.read_bytes()
    return loads(data, path)


def loads(data: bytes | str, path: Path) -> Config:
    """Validate the text of a config file (``path`` names it in errors; relative paths resolve beside it)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1 if isinstance(data, bytes) else 0
        raise ConfigError(f"config: {path}:{line}: not UTF-8 text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config: {path}{where}: not valid YAML") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:  # e.g. a date like 2001-13-45
        raise ConfigError(f"config: {path}: not a valid value ({_first_line(err)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path}: the top level must be a mapping")
    return from_dict(raw, base=path.resolve().parent)


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def with_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply dotted-key overrides from the CLI (``None`` values are ignored)."""
    raw = cfg.model_dump(mode="json")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        keys = dotted.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = str(value) if isinstance(value, Path) else value
    return from_dict(raw, base=Path.cwd())
