"""Eyes with known geometry for the gaze tests and benchmark: closed lids, synthetic irises."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def closed_contour(contour: ArrayLike, eye: int) -> NDArray[np.float32]:
    """The eye contour (2, 71, 2) with ``eye``'s upper lid (points 9-15) lowered onto its lower lid (1-7): a blink."""
    c = np.array(contour, dtype=np.float32)
    c[eye, 9:16] = c[eye, 1:8] + np.array([0.0, -0.3], dtype=np.float32)
    return c
