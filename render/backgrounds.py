"""Background images for the composited views.

With ``data.background_path`` set, the folder (e.g. Places365 ``val_256``) is
listed once, recursively and in sorted order, when the :class:`BackgroundSource`
is made, and :meth:`BackgroundSource.validate` decodes every image once at the
start of a run: images that cannot be decoded (corrupt, truncated headers,
unreadable) leave the listing and are reported (:class:`BackgroundCheck`, in
the run's manifest), so ``background_id`` indexes the sorted listing of the
usable images. ``image(i)`` reads the i-th file, resizes it to the render size
and box-blurs it with a 20 x 20 kernel at 448 x 448 (scaled with the size), as
Gaze-NV-Rendering's ``read_resize_blur`` does at 448; the last ``cache_size``
images are kept. Without a folder, ``PROCEDURAL_COUNT`` procedural
backgrounds (colour gradients plus smooth noise and a few soft blobs, box-blurred
to a similar softness) stand in, so everything runs without downloads. A background
is a pure function of its index, so the stored ``background_id`` identifies
it exactly.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.core.config import Config
from nvsynth.core.errors import ConfigError, DatasetError, io_guard
from nvsynth.core.geometry import NORM_RENDER_SIZE

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff"})
#: Box-blur kernel of Gaze-NV-Rendering's backgrounds (at NORM_RENDER_SIZE; scaled with the render size).
BLUR_KERNEL = (20, 20)
#: Number of procedural backgrounds when no folder is configured.
PROCEDURAL_COUNT = 1000
#: Seed of the procedural backgrounds (fixed: a background is a function of its index only).
PROCEDURAL_SEED = 0x6E76_6267  # "nvbg"


def list_images(folder: Path) -> tuple[Path, ...]:
    """Image files under ``folder`` (recursive), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"data.background_path: not a folder: {folder}")
    with io_guard(folder, "list the background images (data.background_path)"):
        files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    files.sort(key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise ConfigError(f"data.background_path: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return tuple(files)


def blur_kernel(size: int) -> tuple[int, int]:
    """:data:`BLUR_KERNEL` scaled from NORM_RENDER_SIZE to a ``size`` render: the same blur in the patch."""
    k = max(1, round(BLUR_KERNEL[0] * size / NORM_RENDER_SIZE))
    return (k, k)


def resize_blur(image: NDArray[np.uint8], size: int = NORM_RENDER_SIZE) -> NDArray[np.uint8]:
    """Resize to ``size`` x ``size`` (area when shrinking, bilinear when enlarging), then box-blur
    (20 x 20 at 448 px, :func:`blur_kernel`)."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if (w > size and h > size) else cv2.INTER_LINEAR
    out = cv2.resize(image, (size, size), interpolation=interp)
    return cv2.blur(out, blur_kernel(size))


def _muted(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    """``n`` random colours pulled halfway towards their grey level (scenes are rarely saturated)."""
    c = rng.uniform(0, 255, size=(n, 3))
    return (0.5 * c + 0.5 * (c.sum(axis=1, keepdims=True) / 3.0)).astype(np.float32)


@lru_cache(maxsize=8)
def _unit_grid(n: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Pixel-centre coordinates of an ``n`` x ``n`` image in [-0.5, 0.5] (x, y), read-only."""
    t = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    xx, yy = np.broadcast_to(t[None, :], (n, n)), np.broadcast_to(t[:, None], (n, n))
    return xx, yy


@lru_cache(maxsize=PROCEDURAL_COUNT)
def _procedural_small(index: int, n: int) -> NDArray[np.uint8]:
    """Background ``index`` drawn at ``n`` x ``n``; the draws do not depend on ``n`` (same scene at any size).

    Colour arithmetic on (3, n, n) planes (a per-channel colour broadcasts
    over whole planes, several times faster than over the last axis).
    """
    rng = np.random.default_rng([PROCEDURAL_SEED, int(index)])
    c0, c1 = _muted(rng, 2)[:, :, None, None]
    angle = float(rng.uniform(0, 2 * np.pi))
    xx, yy = _unit_grid(n)
    ramp = np.clip(0.5 + (np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy) * 1.2, 0.0, 1.0)
    img = c0 + ramp * (c1 - c0)
    grid = int(rng.integers(3, 9))
    noise = rng.normal(0.0, rng.uniform(10, 40), size=(grid, grid, 3)).astype(np.float32)
    img += cv2.resize(noise, (n, n), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1)
    blob = np.empty((n, n), np.float32)
    diff = np.empty_like(img)
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0, 1, size=2) * n - 0.5  # pixel centres: the scene spans the image at any n
        ax, ay = rng.uniform(0.05, 0.35, size=2) * n
        blob.fill(0.0)
        cv2.ellipse(blob, ((float(cx), float(cy)), (2 * float(ax), 2 * float(ay)), rng.uniform(0, 180)), 1.0, -1)
        soft = cv2.GaussianBlur(blob, (0, 0), n * 0.03)
        np.subtract(_muted(rng, 1)[0, :, None, None], img, out=diff)  # img <- img * (1 - soft) + colour * soft
        diff *= soft
        img += diff
    k = max(1, round(BLUR_KERNEL[0] * n / NORM_RENDER_SIZE))
    planes = np.clip(img, 0, 255, out=img).astype(np.uint8)
    small = cv2.blur(cv2.merge(list(planes)), (k, k))
    small.flags.writeable = False
    return small


def procedural_background(index: int, size: int = NORM_RENDER_SIZE) -> NDArray[np.uint8]:
    """Procedural background ``index``: a two-colour linear gradient, smooth noise and soft blobs.

    Drawn at an eighth of ``size`` (it is smooth anyway: the features are
    several render pixels wide) and box-blurred there with the 20 x 20 kernel
    scaled alike, then enlarged bilinearly: about the look of the blurred image
    backgrounds, for ~0.5 ms on first use. The small images are cached (at
    most ``PROCEDURAL_COUNT`` x 9 kB per process), so a repeat costs one resize.
    """
    small = _procedural_small(int(index), max(8, size // 8))
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a background (``None``: it decodes as the renderer will decode it)."""
    try:
        with open(path, "rb") as fh:
            if not fh.read(1):
                return "empty file"
    except OSError as err:
        return f"cannot be read ({os.strerror(err.errno) if err.errno else err})"
    if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
        return "not a decodable image"
    return None


@dataclass(frozen=True)
class BackgroundCheck:
    """The background folder as checked at the start of a run."""

    folder: Path
    listed: int
    unusable: tuple[tuple[str, str], ...]  # (path relative to the folder, reason)

    @property
    def usable(self) -> int:
        return self.listed - len(self.unusable)

    def summary(self) -> str:
        text = f"backgrounds: {self.usable} of {self.listed} images in {self.folder} usable"
        if self.unusable:
            name, why = self.unusable[0]
            text += f"; {len(self.unusable)} skipped and listed in manifest.json (e.g. {name}: {why})"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "listed": self.listed,
            "usable": self.usable,
            "skipped": [{"file": f, "reason": r} for f, r in self.unusable],
        }


class BackgroundSource:
    """Backgrounds of one run: a listed image folder, or the procedural set when ``folder`` is None."""

    def __init__(self, folder: Path | None = None, size: int = NORM_RENDER_SIZE, cache_size: int = 32) -> None:
        self.folder = None if folder is None else Path(folder)
        self.size = int(size)
        self.paths: tuple[Path, ...] = () if self.folder is None else list_images(self.folder)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, NDArray[np.uint8]] = OrderedDict()

    @classmethod
    def from_config(cls, cfg: Config, size: int = NORM_RENDER_SIZE) -> BackgroundSource:
        return cls(cfg.data.background_path, size=size)

    def at_size(self, size: int) -> BackgroundSource:
        """The same listing (validated or not) drawn at ``size`` x ``size``: the same scenes at that render size."""
        if int(size) == self.size:
            return self
        other = copy.copy(self)
        other.size = int(size)
        other._cache = OrderedDict()
        return other

    def validate(self, threads: int | None = None) -> BackgroundCheck | None:
        """Decode every listed image once; drop the unusable ones from the listing. ``None`` when procedural.

        Decoding runs in ``threads`` threads (OpenCV releases the GIL). With no
        usable image left, a :class:`~nvsynth.core.errors.DatasetError`.
        """
        if self.folder is None:
            return None
        n = threads or min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4)
        with ThreadPoolExecutor(max(1, n)) as pool:
            problems = list(pool.map(image_problem, self.paths))
        bad = tuple((p.relative_to(self.folder).as_posix(), why) for p, why in zip(self.paths, problems, strict=True)
                    if why is not None)  # fmt: skip
        check = BackgroundCheck(self.folder, len(self.paths), bad)
        if bad:
            self.paths = tuple(p for p, why in zip(self.paths, problems, strict=True) if why is None)
            self._cache.clear()
        if not self.paths:
            raise DatasetError(f"data.background_path: none of the {check.listed} images in {self.folder} can be "
                               f"decoded (e.g. {bad[0][0]}: {bad[0][1]})")  # fmt: skip
        return check

    @property
    def procedural(self) -> bool:
        return self.folder is None

    def __len__(self) -> int:
        return PROCEDURAL_COUNT if self.procedural else len(self.paths)

    def name(self, index: int) -> str:
        """What background ``index`` is: a path relative to the folder, or ``procedural:<index>``."""
        self._check(index)
        if self.procedural:
            return f"procedural:{index}"
        assert self.folder is not None
        return self.paths[index].relative_to(self.folder).as_posix()

    def _check(self, index: int) -> None:
        if not 0 <= int(index) < len(self):
            raise IndexError(f"background index {index} out of range [0, {len(self)})")

    def image(self, index: int, rng: np.random.Generator | None = None) -> NDArray[np.uint8]:
        """Background ``index`` as a fresh uint8 (size, size, 3) BGR array.

        ``rng`` is accepted for the compositing interface but not drawn from:
        a background depends on its index alone, which is stored per row.
        """
        del rng
        self._check(index)
        index = int(index)
        if self.procedural:
            return procedural_background(index, self.size)
        cached = self._cache.get(index)
        if cached is None:
            cached = self._make(index)
            self._cache[index] = cached
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return cached.copy()

    def _make(self, index: int) -> NDArray[np.uint8]:
        path = self.paths[index]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"background image cannot be read: {path}")
        return resize_blur(img, self.size)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # workers get the listing, not the cached pixels
        return state
