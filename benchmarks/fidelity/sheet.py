"""Contact sheet: truth | nvsynth | flow magnitude, one triplet per scored row."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from .score import RowScore

#: Flow magnitudes from 0 to this many pixels span the colour map.
FLOW_SCALE_PX = 12.0


def flow_image(mag: NDArray[np.float32], mask: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """|flow| in the turbo colour map (0 .. FLOW_SCALE_PX), dimmed outside the scored mask."""
    v = np.clip(mag / FLOW_SCALE_PX * 255.0, 0, 255).astype(np.uint8)
    img = cv2.applyColorMap(v, cv2.COLORMAP_TURBO)
    img[~mask] = (img[~mask] * 0.25).astype(np.uint8)
    return img


def _label(img: NDArray[np.uint8], text: str) -> NDArray[np.uint8]:
    out = img.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def triplet(s: RowScore) -> NDArray[np.uint8]:
    im = s.images
    med = float(np.median(s.flow)) if s.flow.size else float("nan")
    outline = cv2.morphologyEx(im["mask"].astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    nv = im["nvsynth"].copy()
    nv[im["bg"]] = (0.5 * nv[im["bg"]] + [0, 0, 127]).astype(np.uint8)  # background texels tinted red
    truth = im["truth"].copy()
    truth[outline] = (0, 255, 0)
    tiles = [
        _label(truth, f"{s.subject} {s.pattern} f{s.frame} v{s.view} truth"),
        _label(nv, "nvsynth (red: bg texels)"),
        _label(flow_image(im["flow"], im["mask"]), f"|flow| med {med:.1f}px"),
    ]
    return np.concatenate(tiles, axis=1)


def contact_sheet(scores: Sequence[RowScore], path: Path, columns: int = 2, limit: int = 24) -> Path | None:
    """Write the triplets of the scored rows that kept their images; returns the path (None if none)."""
    rows = [s for s in scores if s.images][:limit]
    if not rows:
        return None
    tiles = [triplet(s) for s in rows]
    blank = np.zeros_like(tiles[0])
    while len(tiles) % columns:
        tiles.append(blank)
    sep = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    lines = [
        np.concatenate([x for t in tiles[i : i + columns] for x in (t, sep)][:-1], axis=1)
        for i in range(0, len(tiles), columns)
    ]
    hsep = np.full((6, lines[0].shape[1], 3), 255, np.uint8)
    sheet = np.concatenate([x for ln in lines for x in (ln, hsep)][:-1], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet)
    return path
