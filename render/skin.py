"""Which of the source's own texels at the edge of the fitted face show the scene behind the face.

The fitted outline follows dlib's jaw points, and on a turned or pitched face
those miss the real outline by 8-24 source pixels (up to 50 where dlib
hallucinates the far jaw over the background): the mesh is then wider than
the face, and its texels there sample the background. Geometry alone cannot
tell (on the fidelity benchmark such texels lie up to 50 px inside the
projected mesh outline and are seen at cos up to 0.7), so the source frame
decides, per frame, by nearest neighbour in CIE Lab:

* *face* samples: the source's usable texels inside the region of the
  interior landmarks (brows, eyes, nose, mouth: dlib places those well),
  shrunk by ``FACE_INSET_MM``, less those of a background sample's colour
  (``SAME_COLOUR_LAB``: the scene, where dlib put even an interior point off the face);
* *background* samples: the frame's pixels in a ring ``RING_PX`` outside the
  projected mesh (the scene beside the face: the fit errors are smaller than
  the ring's inner radius almost everywhere, and a ring that still touches
  the face only makes the test more cautious);
* a texel outside that interior region is *background* when its colour is
  nearer (by ``BACKGROUND_MARGIN``) to a background sample than to any face
  sample. The atlas then treats it as unseen, so it completes from its mirror
  or the fill instead of from the scene.

Deterministic (fixed subsampling, exact nearest neighbours), on the atlas's
half-resolution grid.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from nvsynth.core import ibug68
from nvsynth.recon.record import ReconRecord
from nvsynth.render.regions import head_frame, signed_distance

#: The interior landmarks whose convex hull (head frame) is the part of the face never tested.
INTERIOR = ibug68.INTERIOR
#: Face samples: usable texels at least this far (mm) inside that hull (keeps a misplaced far brow out).
#: Fidelity benchmark (novel-view background share / flow p90): 5 mm 0.51% / 3.62 px, 8 mm 0.40% / 3.71,
#: 12 mm 0.2% / 3.77; deeper insets judge more of the face's own rim as scene (a beige wall costs skin detail).
FACE_INSET_MM = 8.0
#: Background samples: frame pixels between these distances (px) outside the projected mesh.
RING_PX = (10.0, 40.0)
#: Face samples within this CIE Lab distance of a background sample are dropped: the scene seen where the
#: interior landmarks themselves lie off the face (a misplaced far brow; ~2x JPEG noise of a flat colour).
SAME_COLOUR_LAB = 4.0
#: Samples per class (evenly strided: deterministic); the test costs ~10 ms per source.
MAX_SAMPLES = 3000
#: A texel is background when its nearest background sample is closer than this times its nearest face sample.
BACKGROUND_MARGIN = 1.0


def interior_distance(record: ReconRecord) -> NDArray[np.float64]:
    """(V,) signed distance (mm, positive inside) of each vertex to the hull of the interior landmarks."""
    lm = head_frame(record, record.landmarks_3d)[:, :2][INTERIOR]
    hull = cv2.convexHull(lm.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    return signed_distance(head_frame(record, record.vertices)[:, :2], hull)


def _lab(bgr: NDArray) -> NDArray[np.float32]:
    """BGR (..., 3) in 0..255 -> CIE Lab (float32)."""
    a = np.ascontiguousarray(np.asarray(bgr, dtype=np.float32).reshape(-1, 1, 3) * (1.0 / 255.0))
    return cv2.cvtColor(a, cv2.COLOR_BGR2Lab).reshape(-1, 3)


def _strided(x: NDArray, n: int) -> NDArray:
    return x if len(x) <= n else x[np.linspace(0, len(x) - 1, n).astype(np.int64)]


def ring_colours(record: ReconRecord, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(N, 3) BGR pixels of ``image`` between RING_PX[0] and RING_PX[1] outside the projected mesh."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), dtype=np.uint8)
    for tri in np.round(np.asarray(record.uv, np.float64)[np.asarray(record.faces)] * 16).astype(np.int32):
        cv2.fillConvexPoly(mask, tri, 1, cv2.LINE_8, 4)
    dist = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ring = (dist >= RING_PX[0]) & (dist <= RING_PX[1])
    return image[ring]


def background_texels(
    colour: NDArray[np.float32],
    usable: NDArray[np.bool_],
    interior: NDArray[np.float32],
    ring: NDArray[np.uint8],
) -> NDArray[np.bool_]:
    """Texels (S, S) whose own ``colour`` (BGR, 0..255) looks like the scene beside the face (module docstring).

    ``usable``: texels the source saw; ``interior``: their signed distance (mm) to the interior
    landmarks' hull; ``ring``: the frame's colours beside the face (:func:`ring_colours`).
    """
    out = np.zeros(usable.shape, dtype=bool)
    face = usable & (interior >= FACE_INSET_MM)
    test = usable & (interior < FACE_INSET_MM)
    if not face.any() or not test.any() or len(ring) == 0:
        return out
    bg_tree = cKDTree(_strided(_lab(ring), MAX_SAMPLES))
    face_lab = _lab(colour[face])
    face_lab = _strided(face_lab[bg_tree.query(face_lab, k=1)[0] >= SAME_COLOUR_LAB], MAX_SAMPLES)
    if len(face_lab) == 0:
        return out
    lab = _lab(colour[test])
    d_face, _ = cKDTree(face_lab).query(lab, k=1)
    d_bg, _ = bg_tree.query(lab, k=1)
    out[test] = d_bg < BACKGROUND_MARGIN * d_face
    return out
