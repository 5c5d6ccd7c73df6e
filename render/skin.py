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

Deterministic (fixed subsampling, exact nearest neighbours), on blocks of the
atlas's half-resolution grid (:func:`render.atlas.build_atlas`): 4 x 4 blocks
(``SKIN_BLOCK``) first, which also give the face samples (:class:`SkinTest`),
then 2 x 2 blocks (``SKIN_REFINE``) along the border between the coarse
classes (one coarse block on either side), since a coarse block that is half
scene and half face has the colour of neither (``tests/test_render_fill.py``'s
15-pixel scene band kept 1.5-4.9 % of its texels on 4 x 4 blocks alone; judging
fine blocks only where a coarse block's differ in colour kept 0.9 %). On the
sample, whose background is skin-coloured, the atlas took about 35 ms per
source this way against 37 on 2 x 2 blocks throughout and 31 on 4 x 4 blocks
alone (at 512 texels; the atlas has 384 since); the fidelity benchmark's
background share 0.44 % -> 0.39 %, its flow figures unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

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
#: Fidelity benchmark (novel-view background share / flow p90, SAME_COLOUR_LAB 4): 5 mm 0.51% / 3.62 px,
#: 8 mm 0.40% / 3.71, 12 mm 0.2% / 3.77; deeper insets judge more of the face's own rim as scene.
FACE_INSET_MM = 8.0
#: Background samples: frame pixels between these distances (px) outside the projected mesh.
RING_PX = (10.0, 40.0)
#: Face samples within this CIE Lab distance of a background sample are dropped: the scene seen where the
#: interior landmarks themselves lie off the face (a misplaced far brow; about JPEG noise of a flat colour).
#: Fidelity benchmark background share 0.40% at 4.0, 0.43% at 2.0; on the sample, whose background is
#: skin-coloured, 4.0 judged 60% of the rim's own texels as scene, 2.0 36%, none (0) 27%.
SAME_COLOUR_LAB = 2.0
#: Samples per class (evenly strided: deterministic); the test costs ~12 CPU-ms per source (its KD-tree queries).
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


def _distinct_lab(bgr: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """(N, 3) BGR colours -> CIE Lab of each distinct colour (sorted) and each colour's index into them."""
    c = np.asarray(bgr).astype(np.int32)
    key, inverse = np.unique((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2], return_inverse=True)
    return _lab(np.stack([key >> 16, (key >> 8) & 255, key & 255], axis=1)), inverse


def _strided(x: NDArray, n: int) -> NDArray:
    return x if len(x) <= n else x[np.linspace(0, len(x) - 1, n).astype(np.int64)]


@dataclass(frozen=True)
class Silhouette:
    """The projected mesh (``record.uv``'s triangles) rasterised on a box of source pixels around it.

    ``mask`` is 1 inside; ``origin`` is the box's top-left source pixel; the box
    reaches ``margin`` pixels beyond the mesh on every side (it may leave the frame).
    """

    mask: NDArray[np.uint8]
    origin: NDArray[np.int64]  # (x, y)

    @classmethod
    def of(cls, record: ReconRecord, margin: int = int(np.ceil(RING_PX[1])) + 2) -> Silhouette:
        uv = np.asarray(record.uv, dtype=np.float64)
        lo = (np.floor(uv.min(axis=0)) - margin).astype(np.int64)
        size = (np.ceil(uv.max(axis=0)) + margin + 1 - lo).astype(np.int64)
        mask = np.zeros((int(size[1]), int(size[0])), dtype=np.uint8)
        for tri in np.round((uv[np.asarray(record.faces)] - lo) * 16).astype(np.int32):  # fillPoly: even-odd rule
            cv2.fillConvexPoly(mask, tri, 1, cv2.LINE_8, 4)
        return cls(mask, lo)


def ring_colours(
    record: ReconRecord, image: NDArray[np.uint8], silhouette: Silhouette | None = None
) -> NDArray[np.uint8]:
    """(N, 3) BGR pixels of ``image`` between RING_PX[0] and RING_PX[1] outside the projected mesh.

    Computed on the frame's part of the ``silhouette``'s box (it holds every
    pixel within RING_PX[1] of the mesh); row-major order, as over the whole frame.
    """
    sil = Silhouette.of(record) if silhouette is None else silhouette
    h, w = image.shape[:2]
    x0, y0 = (int(c) for c in sil.origin)
    bh, bw = sil.mask.shape
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + bw, w), min(y0 + bh, h)
    if xa >= xb or ya >= yb:
        return np.zeros((0, 3), dtype=np.uint8)
    mask = sil.mask[ya - y0 : yb - y0, xa - x0 : xb - x0]  # the mesh's pixels in the frame (all in this box)
    if not mask.any():  # no mesh pixel in the frame: as over the whole frame, every distance is infinite
        return np.zeros((0, 3), dtype=np.uint8)
    dist = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ring = (dist >= RING_PX[0]) & (dist <= RING_PX[1])
    return image[ya:yb, xa:xb][ring]


@dataclass(frozen=True)
class SkinTest:
    """The samples of one frame's test: face colours and scene colours (CIE Lab), in KD-trees.

    Made once per source (:meth:`of`); :meth:`background` then judges any set of texels,
    e.g. coarse blocks first and finer ones near what the coarse pass found.
    """

    face_lab: NDArray[np.float32]  # (F, 3)
    bg_lab: NDArray[np.float32]  # (B, 3)
    both: cKDTree | None  # face samples, then background samples (None: nothing is judged background)

    @classmethod
    def of(cls, colour: NDArray[np.uint8], usable: NDArray[np.bool_], interior: NDArray[np.float32],
           ring: NDArray[np.uint8]) -> SkinTest:  # fmt: skip
        """Face samples from the usable texels FACE_INSET_MM inside the interior hull; scene samples from ``ring``."""
        none = cls(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), None)
        face = usable & (interior >= FACE_INSET_MM)
        if not face.any() or len(ring) == 0:
            return none
        bg_lab = _lab(_strided(ring, MAX_SAMPLES))
        # face samples: every face texel's colour (each distinct colour converted and tested once), less those
        # within SAME_COLOUR_LAB of a background sample, then evenly strided
        flab, finverse = _distinct_lab(colour[face])
        unlike = cKDTree(bg_lab).query(flab, k=1)[0] >= SAME_COLOUR_LAB
        face_lab = _strided(flab[finverse[unlike[finverse]]], MAX_SAMPLES)
        if len(face_lab) == 0:
            return none
        both = cKDTree(np.concatenate([face_lab, bg_lab])) if BACKGROUND_MARGIN == 1.0 else None
        return cls(face_lab, bg_lab, both)

    def background(
        self, colour: NDArray[np.uint8], usable: NDArray[np.bool_], interior: NDArray[np.float32]
    ) -> NDArray[np.bool_]:
        """Which of the usable texels outside FACE_INSET_MM look like the scene (module docstring)."""
        out = np.zeros(usable.shape, dtype=bool)
        test = usable & (interior < FACE_INSET_MM)
        if len(self.face_lab) == 0 or not test.any():
            return out
        lab, inverse = _distinct_lab(colour[test])
        if self.both is None:  # BACKGROUND_MARGIN != 1
            d_face, _ = cKDTree(self.face_lab).query(lab, k=1)
            d_bg, _ = cKDTree(self.bg_lab).query(lab, k=1)
            out[test] = (d_bg < BACKGROUND_MARGIN * d_face)[inverse]
            return out
        # d_bg < d_face, from one tree of both classes: a face sample nearest makes it face; a background sample
        # strictly nearer than the second nearest makes it background; a tie is settled by the face samples.
        d, nearest = self.both.query(lab, k=2)
        bg = nearest[:, 0] >= len(self.face_lab)
        tie = bg & (d[:, 1] <= d[:, 0] * (1.0 + 1e-9))
        if tie.any():
            near = cKDTree(self.face_lab).query_ball_point(lab[tie], d[tie, 0] * (1.0 + 1e-9), return_length=True)
            bg[tie] = near == 0
        out[test] = bg[inverse]
        return out


def background_texels(
    colour: NDArray[np.uint8],
    usable: NDArray[np.bool_],
    interior: NDArray[np.float32],
    ring: NDArray[np.uint8],
) -> NDArray[np.bool_]:
    """Texels (S, S) whose own ``colour`` (BGR) looks like the scene beside the face (module docstring).

    ``usable``: texels the source saw; ``interior``: their signed distance (mm) to the interior
    landmarks' hull; ``ring``: the frame's colours beside the face (:func:`ring_colours`).
    Each distinct colour is looked up once. The face samples come from these texels.
    """
    return SkinTest.of(colour, usable, interior, ring).background(colour, usable, interior)
