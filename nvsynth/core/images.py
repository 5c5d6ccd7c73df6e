"""Source images by reference: an image file, or one row of an h5 file's ``face_patch``.

Readers (``nvsynth.datasets``) name each frame's image by a reference relative
to their root, and the recon record keeps that reference (``source_file``),
so that the render stage can read the image back without knowing the dataset:

* ``day01/0001.jpg``: an image file (``cv2.imread``);
* ``p00.h5#17``: row 17 of the dataset ``face_patch`` of ``p00.h5`` (ETH-XGaze
  layout, BGR uint8), read by h5py slicing: the file is never loaded whole.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
from numpy.typing import NDArray

#: The h5 dataset that holds the images of an ETH-XGaze-layout file.
H5_IMAGE_DATASET = "face_patch"
H5_SUFFIXES = (".h5", ".hdf5")


def h5_row_ref(file: str, row: int) -> str:
    """The reference of row ``row`` of ``file``'s ``face_patch`` (``file`` relative to the root)."""
    return f"{file}#{int(row)}"


def split_h5_ref(ref: str) -> tuple[str, int] | None:
    """``("p00.h5", 17)`` for ``"p00.h5#17"``; ``None`` for a plain image path."""
    file, sep, row = ref.rpartition("#")
    if not sep or not row.isdigit() or Path(file).suffix.lower() not in H5_SUFFIXES:
        return None
    return file, int(row)


def read_image(root: Path, ref: str) -> NDArray[np.uint8] | None:
    """The BGR image ``ref`` names under ``root``; ``None`` when it is missing or unreadable."""
    h5 = split_h5_ref(ref)
    if h5 is None:
        return cv2.imread(str(Path(root) / ref), cv2.IMREAD_COLOR)
    file, row = h5
    try:
        with h5py.File(Path(root) / file, "r") as f:
            ds = f[H5_IMAGE_DATASET]
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 4 or ds.shape[3] != 3 or row >= ds.shape[0]:
                return None
            image = np.asarray(ds[row])
    except (OSError, KeyError):
        return None
    return np.ascontiguousarray(image, dtype=np.uint8)


def image_exists(root: Path, ref: str) -> bool:
    """Whether the file behind ``ref`` exists (the row itself is not checked)."""
    h5 = split_h5_ref(ref)
    return (Path(root) / (ref if h5 is None else h5[0])).is_file()
