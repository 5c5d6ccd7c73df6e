"""The iBUG-68 index table (nvsynth/core/ibug68.py) against the markup and the real labelled faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nvsynth.core import geometry, ibug68
from nvsynth.recon.landmarks import read_pts

GROUPS = (
    ibug68.JAW,
    ibug68.RIGHT_BROW,
    ibug68.LEFT_BROW,
    ibug68.NOSE_BRIDGE,
    ibug68.LOWER_NOSE,
    ibug68.RIGHT_EYE,
    ibug68.LEFT_EYE,
    ibug68.OUTER_MOUTH,
    ibug68.INNER_MOUTH,
)


def test_groups_partition_the_68_points_in_markup_order() -> None:
    assert [len(g) for g in GROUPS] == [17, 5, 5, 4, 5, 6, 6, 12, 8]
    np.testing.assert_array_equal(np.concatenate(GROUPS), np.arange(ibug68.N_LANDMARKS))
    np.testing.assert_array_equal(ibug68.INTERIOR, np.concatenate(GROUPS[1:]))
    np.testing.assert_array_equal(ibug68.BROWS, np.r_[ibug68.RIGHT_BROW, ibug68.LEFT_BROW])
    assert ibug68.JAW[8] == ibug68.CHIN and ibug68.NOSE_BRIDGE[-1] == ibug68.NOSE_TIP
    # the corners are the ends of the eye contours and of the outer lip's upper half
    assert (ibug68.RIGHT_EYE[0], ibug68.RIGHT_EYE[3]) == (ibug68.RIGHT_EYE_OUTER, ibug68.RIGHT_EYE_INNER)
    assert (ibug68.LEFT_EYE[0], ibug68.LEFT_EYE[3]) == (ibug68.LEFT_EYE_INNER, ibug68.LEFT_EYE_OUTER)
    assert (ibug68.OUTER_MOUTH[0], ibug68.OUTER_MOUTH[6]) == (ibug68.RIGHT_MOUTH_CORNER, ibug68.LEFT_MOUTH_CORNER)
    np.testing.assert_array_equal(ibug68.MPII_SIX, [36, 39, 42, 45, 48, 54])


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        ibug68.JAW[0] = 3
    with pytest.raises(ValueError, match="read-only"):
        ibug68.MIRROR[:] = 0


def test_mirror_is_an_involution_swapping_sides() -> None:
    m = ibug68.MIRROR
    np.testing.assert_array_equal(m[m], np.arange(ibug68.N_LANDMARKS))
    np.testing.assert_array_equal(m[ibug68.JAW], ibug68.JAW[::-1])
    assert sorted(m[ibug68.RIGHT_EYE]) == sorted(ibug68.LEFT_EYE)
    assert sorted(m[ibug68.RIGHT_BROW]) == sorted(ibug68.LEFT_BROW)
    np.testing.assert_array_equal(m[ibug68.NOSE_BRIDGE], ibug68.NOSE_BRIDGE)  # on the midline
    # the six MPIIGaze points mirror as the face model's x does: (0, 3), (1, 2), (4, 5)
    six = list(ibug68.MPII_SIX)
    partner = [six.index(int(m[i])) for i in six]
    assert partner == [3, 2, 1, 0, 5, 4]
    np.testing.assert_allclose(geometry.FACE_MODEL_6[partner, 0], -geometry.FACE_MODEL_6[:, 0])


@pytest.mark.parametrize("name", ["breakingbad", "einstein", "takeo"])
def test_sides_and_mirror_on_hand_labelled_faces(shared: Path, name: str) -> None:
    """On 300-W-style labels of real faces: the subject's right is on the image's left, and
    flipping the image maps each point onto its MIRROR partner's side."""
    pts = read_pts(shared / "faces" / f"{name}.pts")
    assert pts[ibug68.RIGHT_EYE, 0].mean() < pts[ibug68.LEFT_EYE, 0].mean()
    assert pts[ibug68.RIGHT_BROW, 0].mean() < pts[ibug68.LEFT_BROW, 0].mean()
    assert pts[ibug68.RIGHT_MOUTH_CORNER, 0] < pts[ibug68.LEFT_MOUTH_CORNER, 0]
    assert pts[ibug68.RIGHT_EYE_OUTER, 0] < pts[ibug68.RIGHT_EYE_INNER, 0] < pts[ibug68.LEFT_EYE_INNER, 0]
    assert pts[ibug68.LEFT_EYE_INNER, 0] < pts[ibug68.LEFT_EYE_OUTER, 0]
    # eyes above the nose tip above the mouth above the chin (image y grows downward)
    eyes_y = pts[np.r_[ibug68.RIGHT_EYE, ibug68.LEFT_EYE], 1].mean()
    assert eyes_y < pts[ibug68.NOSE_TIP, 1] < pts[ibug68.OUTER_MOUTH, 1].mean() < pts[ibug68.CHIN, 1]
    # the upper lid points (1, 2 of each contour) lie above the lower ones (4, 5)
    for eye in (ibug68.RIGHT_EYE, ibug68.LEFT_EYE):
        assert pts[eye[[1, 2]], 1].mean() < pts[eye[[4, 5]], 1].mean()
