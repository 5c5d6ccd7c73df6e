"""The three hand-labelled faces of ``../shared/faces`` (photo + iBUG-68 ``.pts``), for landmark and fit tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nvsynth.recon.landmarks import read_pts

#: Face name -> photo file in ``shared/faces`` (the labels are ``<name>.pts`` beside it).
FACES = {"breakingbad": "breakingbad.jpg", "einstein": "einstein.jpg", "takeo": "takeo.ppm"}


def load_face(shared: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The BGR photo and its (68, 2) labelled landmarks."""
    img = cv2.imread(str(shared / "faces" / FACES[name]), cv2.IMREAD_COLOR)
    assert img is not None, name
    return img, read_pts(shared / "faces" / f"{name}.pts")
