"""The figures of ``nvsynth inspect`` (matplotlib, Agg): contact sheet, mask overlays, pose histograms.

Drawing conventions: the gaze arrow and the head axes are drawn from the face centre (the
normalized camera's principal point) with the labels' pitch/yaw (:mod:`nvsynth.core.geometry`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from nvsynth.core import geometry
from nvsynth.core.atomic import atomic_path

ARROW = 0.4 * geometry.NORM_PATCH_SIZE  # gaze arrow length, patch pixels
AXIS = 0.25 * geometry.NORM_PATCH_SIZE  # head-axis length, patch pixels
#: Where the face centre lies in the stored patch (the normalized camera's principal point).
CENTER = float(geometry.normalized_camera_matrix(geometry.NORM_PATCH_SIZE)[0, 2])


# --- drawing conventions ---------------------------------------------------------------------


def image_offset(directions: ArrayLike, length: float) -> NDArray[np.float64]:
    """Image-plane offset (dx, dy) of camera-space direction(s) (..., 3), drawn from the face centre.

    The orthographic projection L * (v_x, v_y) onto the image (x right, y down).
    For the gaze v = :func:`geometry.vector_from_pitchyaw` this is
    dx = -L sin(yaw) cos(pitch), dy = -L sin(pitch), the arrow of ETH-XGaze's
    ``draw_gaze``; positive yaw points to image-left, positive pitch up.
    """
    return length * np.asarray(directions, dtype=np.float64)[..., :2]


def gaze_arrow(pitchyaw: ArrayLike, length: float = ARROW) -> NDArray[np.float64]:
    """(dx, dy) of the gaze arrow for labels (pitch, yaw) in radians."""
    return image_offset(geometry.vector_from_pitchyaw(pitchyaw), length)


def head_axes(pitchyaw: ArrayLike, length: float = AXIS) -> NDArray[np.float64]:
    """(3, 2) offsets of the head's x axis, y axis and facing direction (-z) for head labels (pitch, yaw)."""
    H = geometry.head_rotation_from_pitchyaw(*np.asarray(pitchyaw, dtype=np.float64))
    return image_offset(np.stack([H[:, 0], H[:, 1], -H[:, 2]]), length)


# --- reading and validation --------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One row picked for the figures."""

    name: str  # "file:row"
    patch_bgr: NDArray[np.uint8]
    mask: NDArray[np.uint8] | None
    gaze: NDArray[np.float64] | None
    head: NDArray[np.float64] | None


def _grid(n: int, cell: float) -> tuple[Figure, list]:
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cell * cols, cell * rows + 0.4), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes:
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / (cell * rows + 0.4), wspace=0.04, hspace=0.12)
    return fig, axes


def contact_sheet(samples: list[Sample], path: Path) -> None:
    fig, axes = _grid(len(samples), 2.3)
    fig.suptitle("gaze: red arrow | head: facing gold, x blue, y green | labels pitch/yaw deg", fontsize=9)
    for ax, s in zip(axes, samples, strict=False):
        ax.imshow(s.patch_bgr[:, :, ::-1])
        ax.set_title(s.name, fontsize=7, pad=2)
        text = []
        if s.head is not None and np.isfinite(s.head).all():
            for (dx, dy), color in zip(head_axes(s.head), ("deepskyblue", "lime", "gold"), strict=True):
                ax.plot([CENTER, CENTER + dx], [CENTER, CENTER + dy], color=color, lw=1.6)
            text.append("h {:+.0f}/{:+.0f}".format(*np.degrees(s.head)))
        if s.gaze is not None and np.isfinite(s.gaze).all():
            dx, dy = gaze_arrow(s.gaze)
            ax.annotate(
                "",
                xy=(CENTER + dx, CENTER + dy),
                xytext=(CENTER, CENTER),
                arrowprops={"arrowstyle": "-|>", "color": "red", "lw": 2.0},
            )
            text.insert(0, "g {:+.0f}/{:+.0f}".format(*np.degrees(s.gaze)))
        ax.text(
            3,
            220,
            "  ".join(text),
            color="white",
            fontsize=7,
            va="bottom",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "lw": 0},
        )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def mask_sheet(samples: list[Sample], path: Path) -> None:
    fig, axes = _grid(len(samples), 2.0)
    fig.suptitle("face_mask over the face (magenta fill, cyan outline)", fontsize=9)
    for ax, s in zip(axes, samples, strict=False):
        ax.imshow(s.patch_bgr[:, :, ::-1])
        ax.set_title(s.name, fontsize=7, pad=2)
        if s.mask is None:
            ax.text(112, 112, "no mask", color="red", ha="center")
            continue
        overlay = np.zeros((*s.mask.shape, 4))
        overlay[s.mask > 127] = (1.0, 0.0, 1.0, 0.35)
        ax.imshow(overlay)
        if s.mask.max() > 127:
            ax.contour(s.mask, levels=[127.5], colors="cyan", linewidths=0.8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def pose_histograms(head: NDArray[np.float64], gaze: NDArray[np.float64], path: Path) -> None:
    fig = Figure(figsize=(10, 4.4), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, (vals, title) in zip(axes, ((head, "head pose"), (gaze, "gaze")), strict=True):
        deg = np.degrees(vals[np.isfinite(vals).all(axis=1)])
        lim = float(min(90.0, 5.0 + np.abs(deg).max(initial=10.0)))
        _, _, _, img = ax.hist2d(
            deg[:, 1], deg[:, 0], bins=36, range=[[-lim, lim], [-lim, lim]], cmin=1, cmap="viridis"
        )
        fig.colorbar(img, ax=ax, label="rows")
        ax.set_aspect("equal")
        ax.set_xlabel("yaw (deg, + = toward image-left)")
        ax.set_ylabel("pitch (deg, + = up)")
        std = deg.std(axis=0) if len(deg) else np.full(2, np.nan)
        ax.set_title(f"{title}: {len(deg)} rows, std pitch {std[0]:.1f}, yaw {std[1]:.1f}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# --- the command ----------------------------------------------------------------------------------------
