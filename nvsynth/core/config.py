"""Configuration: one YAML file (``config_path.yaml``), validated once.

Unknown keys and wrong types end the program with exit code 2 and one line
naming the key. Relative paths resolve against the config file's folder.
CLI options override the file through :func:`with_overrides`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nvsynth.core.errors import ConfigError

DEFAULT_CONFIG_NAME = "config_path.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MpiiPaths(_Section):
    raw: Path | None = None  # MPIIFaceGaze root (holds p00 ... p14)
    obj: Path | None = None  # recon output root


class DataConfig(_Section):
    mpii: MpiiPaths = MpiiPaths()
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
    min_face_presence: float = Field(0.5, ge=0.0, le=1.0)
    workers: int = Field(1, ge=1)
    subdivide: int = Field(0, ge=0, le=2)  # Loop-style subdivision steps of the template
    export_obj: bool = False


class LightConfig(_Section):
    enabled: bool = True
    probability: float = Field(0.5, ge=0.0, le=1.0)  # share of views relit
    ambient: tuple[float, float] = (0.4, 0.8)  # range of the ambient level
    darken_background: bool = False


class RenderConfig(_Section):
    pattern: Literal["xgaze-train", "eyediap-cs", "eyediap-ft", "gaussian", "file", "source"] = "gaussian"
    pattern_file: Path | None = None  # for pattern 'file'
    gaussian_sigma_deg: float = Field(20.0, gt=0.0)
    gaussian_on: Literal["head", "gaze"] = "head"
    views: int = Field(16, ge=1)
    seed: int = 0
    workers: int = Field(1, ge=1)
    max_pose_deg: float = Field(80.0, gt=0.0, le=90.0)
    max_attempts: int = Field(20, ge=1)
    appearance: Literal["mpii-nv", "plain"] = "mpii-nv"
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


class Config(_Section):
    data: DataConfig = DataConfig()
    assets: AssetsConfig = AssetsConfig()
    recon: ReconConfig = ReconConfig()
    render: RenderConfig = RenderConfig()

    def digest(self) -> str:
        """A short stable hash of the effective configuration."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_PATH_FIELDS = (
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
        return f"config: unknown key '{key}'"
    return f"config: key '{key}': {e['msg']} (got {e.get('input')!r})"


def from_dict(raw: dict[str, Any], base: Path | None = None) -> Config:
    """Validate a config mapping; relative paths resolve against ``base``."""
    raw = json.loads(json.dumps(raw, default=str))  # deep copy, plain types
    _resolve_paths(raw, base or Path.cwd())
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
    if not path.is_file():
        raise ConfigError(f"config: file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config: {path}{where}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path}: the top level must be a mapping")
    return from_dict(raw, base=path.resolve().parent)


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
