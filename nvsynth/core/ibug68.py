"""The 68-point iBUG face markup: its index groups, 0-based, in one place.

Source: the iBUG 300-W markup (C. Sagonas, G. Tzimiropoulos, S. Zafeiriou,
M. Pantic, "300 Faces in-the-Wild Challenge: The first facial landmark
localization Challenge", ICCV Workshops 2013; figure of the 68 points at
https://ibug.doc.ic.ac.uk/resources/facial-point-annotations/). The markup
numbers the points 1-68; here they are 0-67, the order in which dlib's
``shape_predictor_68_face_landmarks`` and face-alignment's 2D-FAN return them.

"Right" and "left" are the subject's, as iBUG numbers them: the right eye
(36-41) and right brow (17-21) are on the image's left for a frontal face.

Every group is a read-only ``numpy`` index array, so ``points[RIGHT_EYE]``
selects rows directly (a plain tuple would index dimensions instead).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def _index(*parts: int | range | NDArray[np.intp]) -> NDArray[np.intp]:
    """The parts (points, ranges, other groups) concatenated into one read-only index array."""
    arr = np.concatenate([np.atleast_1d(np.asarray(p, dtype=np.intp)) for p in parts])
    arr.flags.writeable = False
    return arr


N_LANDMARKS = 68

#: Jaw line, from the subject's right (0) over the chin (8) to the left (16).
JAW = _index(range(0, 17))
#: The chin point, the middle of the jaw line.
CHIN = 8
#: Eyebrows, each from its image-left end (right brow: outer end, left brow: inner end).
RIGHT_BROW = _index(range(17, 22))
LEFT_BROW = _index(range(22, 27))
BROWS = _index(RIGHT_BROW, LEFT_BROW)
#: Nose bridge (27) down to the tip (30).
NOSE_BRIDGE = _index(range(27, 31))
NOSE_TIP = 30
#: Lower nose, right ala (31) over the columella (33) to the left ala (35).
LOWER_NOSE = _index(range(31, 36))
#: Eye contours from the image-left corner over the upper lid (right eye: outer corner, left eye: inner).
RIGHT_EYE = _index(range(36, 42))
LEFT_EYE = _index(range(42, 48))
#: Outer lip contour from the right mouth corner (48), inner lip contour from the right corner (60).
OUTER_MOUTH = _index(range(48, 60))
INNER_MOUTH = _index(range(60, 68))

#: The eye and mouth corners.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 36, 39, 42, 45
RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER = 48, 54

#: Every point but the jaw line (brows, nose, eyes, mouth): the 51 that do not slide with the pose.
INTERIOR = _index(range(17, 68))
#: The face outline: the jaw line, then the brows back from the left end (26) to the right end (17).
FACE_OUTLINE = _index(JAW, range(26, 16, -1))
#: Outer eye corners (right, left), whose distance normalizes landmark errors.
OUTER_EYE_CORNERS = _index(RIGHT_EYE_OUTER, LEFT_EYE_OUTER)
#: The six points of MPIIGaze's annotation and face model, in their order: right-eye outer,
#: right-eye inner, left-eye inner, left-eye outer, right mouth corner, left mouth corner
#: (Zhang et al., "It's written all over your face", CVPRW 2017; see nvsynth.core.geometry.FACE_MODEL_6).
MPII_SIX = _index(
    RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER, RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER
)
#: Index of each point's left/right mirror partner (midline points map to themselves).
MIRROR = _index(
    range(16, -1, -1),  # jaw
    range(26, 16, -1),  # brows
    range(27, 31),  # nose bridge
    range(35, 30, -1),  # lower nose
    45, 44, 43, 42, 47, 46,  # right eye -> left eye
    39, 38, 37, 36, 41, 40,  # left eye -> right eye
    range(54, 47, -1), range(59, 54, -1),  # outer mouth
    range(64, 59, -1), range(67, 64, -1),  # inner mouth
)  # fmt: skip
