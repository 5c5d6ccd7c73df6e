"""Head-pose patterns: where the target poses of the novel views come from.

``xgaze-train``, ``eyediap-cs``, ``eyediap-ft`` and ``file`` draw a uniformly
random row of an empirical (pitch, yaw) list in radians; ``gaussian`` draws
both angles from N(0, sigma) for the head, or, with ``gaussian_on: gaze``, for
the gaze, choosing the zero-roll head pose that puts the gaze there;
``source`` re-renders the source pose (rotation = identity). Pattern files are
read once per run by :func:`load_pattern`; the resulting :class:`Pattern` is
small enough to hand to worker processes.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from nvsynth.core import geometry
from nvsynth.core.assets import EYEDIAP_CS, EYEDIAP_FT, XGAZE_TRAIN, AssetSpec, resolve
from nvsynth.core.config import Config
from nvsynth.core.errors import AssetError, ConfigError
from nvsynth.render.views import NormalizedSource

_ASSET_PATTERNS: dict[str, AssetSpec] = {
    "xgaze-train": XGAZE_TRAIN,
    "eyediap-cs": EYEDIAP_CS,
    "eyediap-ft": EYEDIAP_FT,
}


@dataclass(frozen=True)
class Pattern:
    """A pose sampler (see :data:`render.views.PoseSampler`)."""

    name: str
    poses: NDArray[np.float64] | None = None  # (N, 2) for the empirical patterns
    sigma: float = np.radians(20.0)  # radians, for 'gaussian'
    on: str = "head"  # 'head' or 'gaze', for 'gaussian'
    origin: str = ""  # the file the poses came from, for the manifest

    def __call__(self, rng: np.random.Generator, source: NormalizedSource) -> NDArray[np.float64] | None:
        """A target head pose (pitch, yaw); ``None`` when the draw cannot be reached (gaze mode)."""
        if self.name == "source":
            return source.pose.copy()
        if self.poses is not None:
            return self.poses[int(rng.integers(len(self.poses)))].copy()
        draw = rng.normal(0.0, self.sigma, size=2)
        if self.on == "gaze":
            if abs(draw[0]) >= np.pi / 2:
                return None
            return geometry.head_pitchyaw_for_gaze(source.gaze_in_head, draw)
        return draw


def load_pose_file(path: Path) -> NDArray[np.float64]:
    """An (N, 2) array of (pitch, yaw) radians from ``.npy`` or text; ``AssetError`` if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"pose file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns about an empty file; the shape check below reports it
            if path.suffix == ".npy":
                arr = np.load(path, allow_pickle=False)
                if not isinstance(arr, np.ndarray):  # an .npz (a zip file) under the .npy name
                    arr.close()
                    raise ValueError("not a .npy array (an .npz archive?)")
            else:
                arr = np.loadtxt(path, dtype=np.float64, ndmin=2)
            arr = np.asarray(arr, dtype=np.float64)
    except (OSError, ValueError, TypeError, EOFError, MemoryError, zipfile.BadZipFile) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise AssetError(f"pose file {path}: cannot read ({reason[:200]})") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise AssetError(f"pose file {path}: expected an (N, 2) array of (pitch, yaw), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AssetError(f"pose file {path}: non-finite values")
    if np.abs(arr).max() > np.pi:
        raise AssetError(f"pose file {path}: values beyond pi; poses must be in radians")
    return arr


def load_pattern(cfg: Config) -> Pattern:
    """Resolve and load the configured pattern (files are read here, once)."""
    r = cfg.render
    if r.pattern == "source":
        return Pattern("source")
    if r.pattern == "gaussian":
        return Pattern("gaussian", sigma=float(np.radians(r.gaussian_sigma_deg)), on=r.gaussian_on)
    if r.pattern == "file":
        if r.pattern_file is None:
            raise ConfigError("config: render.pattern 'file' needs render.pattern_file")
        path = Path(r.pattern_file)
    elif r.pattern in _ASSET_PATTERNS:
        path = resolve(_ASSET_PATTERNS[r.pattern], cfg.assets.targets_dir, cfg.assets.cache_dir, is_dir_key=True)
    else:  # pragma: no cover - config validation rejects other names
        raise ConfigError(f"config: unknown render.pattern '{r.pattern}'")
    return Pattern(r.pattern, poses=load_pose_file(path), origin=str(path))
