"""External assets the project must not contain, resolved in a fixed order.

Order: the config key, then the environment variable, then the user cache
(``platformdirs.user_cache_dir("nvsynth")``, e.g. ``~/.cache/nvsynth`` or
``$XDG_CACHE_HOME/nvsynth`` on Linux, or ``assets.cache_dir``), then a pinned
download into the cache by ``pooch`` (sha256-verified, placed by an atomic
rename). With ``NVSYNTH_OFFLINE=1`` no download is tried. When nothing works,
or a download does not match its checksum, one line says where to put the
file by hand. Every failure is an :class:`~nvsynth.core.errors.AssetError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import pooch

from nvsynth.core.errors import AssetError


@dataclass(frozen=True)
class AssetSpec:
    """A pinned external file."""

    name: str  # human name for messages
    filename: str  # name inside the cache
    env_var: str
    config_key: str
    url: str | None
    sha256: str | None


FACE_TEMPLATE = AssetSpec(
    name="MediaPipe canonical face mesh (Apache-2.0)",
    filename="canonical_face_model.obj",
    env_var="NVSYNTH_FACE_TEMPLATE",
    config_key="assets.face_template",
    url=(
        "https://raw.githubusercontent.com/google-ai-edge/mediapipe/"
        "a908d668c730da128dfa8d9f6bd25d519d006692/mediapipe/modules/face_geometry/data/"
        "canonical_face_model.obj"
    ),
    sha256="8bac80443397e113f41a8b565ea72c59390bc031d9defab289dba7bc0c54e618",
)

_MP_ASSETS = "https://storage.googleapis.com/mediapipe-assets/"

FACE_LANDMARK_MODEL = AssetSpec(
    name="MediaPipe Face Mesh landmark model (Apache-2.0)",
    filename="face_landmark.tflite",
    env_var="NVSYNTH_FACE_LANDMARK_MODEL",
    config_key="assets.face_landmark_model",
    url=_MP_ASSETS + "face_landmark.tflite",
    sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
)

IRIS_LANDMARK_MODEL = AssetSpec(
    name="MediaPipe Iris landmark model (Apache-2.0)",
    filename="iris_landmark.tflite",
    env_var="NVSYNTH_IRIS_LANDMARK_MODEL",
    config_key="assets.iris_landmark_model",
    url=_MP_ASSETS + "iris_landmark.tflite",
    sha256="d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
)

_NV_TARGETS = (
    "https://raw.githubusercontent.com/ut-vision/Gaze-NV-Rendering/0b8e0c33b14ea5202face972117ac0eca6cb16df/targets/"
)

EYEDIAP_CS = AssetSpec(
    name="EYEDIAP continuous-screen head-pose targets",
    filename="EYEDIAP_CS_head_distribution.txt",
    env_var="NVSYNTH_TARGETS_DIR",
    config_key="assets.targets_dir",
    url=_NV_TARGETS + "EYEDIAP_CS_head_distribution.txt",
    sha256="e6ce119c1d4375dd57104b0ab59e8c51de520b3256b3b8e264b1e6b54a717adc",
)

EYEDIAP_FT = AssetSpec(
    name="EYEDIAP floating-target head-pose targets",
    filename="EYEDIAP_FT_head_distribution.txt",
    env_var="NVSYNTH_TARGETS_DIR",
    config_key="assets.targets_dir",
    url=_NV_TARGETS + "EYEDIAP_FT_head_distribution.txt",
    sha256="570e7c6fb02618b4cebd30a9f8f5968e8c7eec5806f6c9b3456c15079a95911b",
)

XGAZE_TRAIN = AssetSpec(
    name="ETH-XGaze training head poses (make it with `nvsynth targets --from-h5`)",
    filename="xgaze_train.npy",
    env_var="NVSYNTH_TARGETS_DIR",
    config_key="assets.targets_dir",
    url=None,
    sha256=None,
)


def default_cache_dir(configured: Path | None = None) -> Path:
    """``assets.cache_dir`` when set, else the platform's user cache folder for nvsynth."""
    if configured is not None:
        return Path(configured)
    return Path(platformdirs.user_cache_dir("nvsynth", appauthor=False))


class _HashingDownloader:
    """pooch's HTTP downloader that also keeps the sha256 of what it fetched (for the mismatch message)."""

    def __init__(self) -> None:
        self._http = pooch.HTTPDownloader(progressbar=False)
        self.sha256: str | None = None

    def __call__(self, url: str, output_file: str, pooch_obj: pooch.Pooch | None, check_only: bool = False) -> None:
        self._http(url, output_file, pooch_obj, check_only=check_only)
        self.sha256 = pooch.file_hash(output_file, alg="sha256")


def _download(spec: AssetSpec, url: str, cache: Path, where: str) -> Path:
    """Fetch ``url`` (``spec.url``) into ``cache / spec.filename`` with pooch; ``AssetError`` on any failure."""
    fetcher = _HashingDownloader()
    known = None if spec.sha256 is None else f"sha256:{spec.sha256}"
    try:
        pooch.retrieve(url, known, fname=spec.filename, path=cache, downloader=fetcher, progressbar=False)
    except (ValueError, OSError) as err:  # pooch's checksum mismatch; requests' errors are OSErrors too
        if fetcher.sha256 is not None and spec.sha256 is not None and fetcher.sha256 != spec.sha256:
            raise AssetError(
                f"{spec.name}: the download from {url} has sha256 {fetcher.sha256}, expected {spec.sha256}; "
                f"not used: {where} (a copy with sha256 {spec.sha256})"
            ) from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AssetError(
            f"{spec.name} not found and could not be downloaded ({reason}): {where} (source: {url})"
        ) from None
    return cache / spec.filename


def resolve(spec: AssetSpec, configured: Path | None, cache_dir: Path | None = None, is_dir_key: bool = False) -> Path:
    """Find ``spec``'s file: config, environment, cache, then download.

    ``is_dir_key``: the config key and the environment variable name a folder
    that holds ``spec.filename`` rather than the file itself. A file already in
    the cache is used as it is (it was verified when it was downloaded).
    """

    def pick(p: Path) -> Path:
        return p / spec.filename if is_dir_key else p

    if configured is not None:
        p = pick(Path(configured))
        if not p.is_file():
            raise AssetError(f"{spec.config_key}: {p} not found ({spec.name})")
        return p
    env = os.environ.get(spec.env_var)
    if env:
        p = pick(Path(env).expanduser())
        if not p.is_file():
            raise AssetError(f"{spec.env_var}: {p} not found ({spec.name})")
        return p
    cache = default_cache_dir(cache_dir)
    if (cache / spec.filename).is_file():
        return cache / spec.filename
    where = (
        f"put {spec.filename} at {cache / spec.filename}, or set {spec.config_key} in the config "
        f"or the environment variable {spec.env_var}"
    )
    if spec.url is None:
        raise AssetError(f"{spec.name} not found: {where}")
    if os.environ.get("NVSYNTH_OFFLINE") == "1":
        raise AssetError(f"{spec.name} not found and NVSYNTH_OFFLINE=1: {where} (source: {spec.url})")
    return _download(spec, spec.url, cache, where)
