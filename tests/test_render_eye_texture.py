"""Eye textures: the distortion model, push-pull, and the unwrap of a known eyeball painted into a sample frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nvsynth.core import geometry
from nvsynth.recon.eyeball import FORWARD, EyeballModel, source_eyes
from nvsynth.recon.record import ReconRecord
from nvsynth.render.eye_texture import (
    THETA_MAX,
    direction_texcoords,
    project_distorted,
    push_pull,
    texel_grid,
    unwrap_eyes,
)
from tests.eye_scenes import procedural_eye, with_known_eyes

REPO_SAMPLE = "supplementary/sample"


def test_project_distorted_matches_opencv() -> None:
    rng = np.random.default_rng(0)
    K = np.array([[1000.0, 0.0, 640.0], [0.0, 990.0, 360.0], [0.0, 0.0, 1.0]])
    pts = np.c_[rng.uniform(-200, 200, (500, 2)), rng.uniform(300, 900, 500)]
    for d in (np.array([-0.1, 0.08, 0.0, 0.0, 0.0]), np.array([-0.2, 0.1, 0.002, -0.001, 0.01]), np.zeros(4)):
        ref, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, d)
        np.testing.assert_allclose(project_distorted(K, d, pts), ref.reshape(-1, 2), atol=1e-6)


def test_texture_coordinates_invert_the_texel_grid() -> None:
    theta, dirs = texel_grid(64)
    st = direction_texcoords(dirs)
    n = 64
    expect = (np.stack(np.meshgrid(np.arange(n), np.arange(n)), axis=-1) + 0.5) / n
    inside = theta < THETA_MAX * 0.99
    np.testing.assert_allclose(st[inside], expect[inside], atol=1e-9)


def test_push_pull_continues_known_texels() -> None:
    n = 64
    x = np.linspace(0, 255, n)
    img = np.repeat(np.repeat(x[None, :, None], n, axis=0), 3, axis=2)  # a horizontal ramp
    known = np.zeros((n, n), dtype=bool)
    known[:, :20] = True
    known[:, 44:] = True
    out = push_pull(img * known[..., None], known.astype(np.float32))
    np.testing.assert_allclose(out[known], img[known], atol=1e-3)  # saturated known texels keep their colour
    hole = out[:, 20:44, 0]
    assert np.all(np.diff(hole.mean(axis=0)) > 0)  # the gap is bridged monotonically, from one side to the other
    assert hole.min() >= img[:, 19, 0].min() - 5 and hole.max() <= img[:, 44, 0].max() + 5


@pytest.fixture(scope="module")
def known_eye(sample_records: list[ReconRecord]):
    rec = sample_records[0]
    image = cv2.imread(f"{REPO_SAMPLE}/{rec.source_file}", cv2.IMREAD_COLOR)
    model = EyeballModel(kappa_deg=(1.0, 4.0), offset_mm=(1.0, -3.0, 6.5))
    return (model, *with_known_eyes(rec, image, model, (-3.0, 8.0), highlight=True))


def test_iris_of_a_known_eyeball_gives_its_orientation(known_eye) -> None:
    model, rec, _image, orient = known_eye
    eyes = source_eyes(rec, model)
    # the iris centre is read as the midpoint of the projected limbus's horizontal ends: exact to perspective
    assert geometry.angular_error_deg(eyes.optical, orient @ FORWARD).max() < 0.2
    np.testing.assert_allclose(eyes.orientation, orient, atol=5e-3)


def test_unwrap_of_a_known_eyeball(known_eye) -> None:
    model, rec, image, _orient = known_eye
    eyes = source_eyes(rec, model)
    tex = unwrap_eyes(image, rec, eyes, model)
    theta, dirs = texel_grid()
    truth = procedural_eye(theta, np.arctan2(dirs[..., 1], dirs[..., 0]), model.iris_angle)
    # the measured iris angle (from the iris points' radius) is the model's
    np.testing.assert_allclose(tex.iris_angle, model.iris_angle, atol=np.radians(1.0))
    iris = theta < 0.9 * model.iris_angle
    away = np.abs(theta - 0.4 * model.iris_angle) > np.radians(2.5)  # not on the pupil's edge
    for e in range(2):
        err = np.abs(tex.image[e].astype(float) - truth).max(axis=-1)
        seen = tex.seen[e] & ~(tex.highlight[e].max(axis=-1) > 0)
        assert seen.sum() > 1000
        # the frame's pixels, resampled: within a few grey levels away from edges
        assert np.median(err[seen & away]) < 6
        # the iris the lids hid, completed from its rings (the known iris depends on theta only)
        hidden = iris & ~tex.seen[e] & away
        assert hidden.sum() > 50
        assert np.median(err[hidden]) < 12
        # the specular highlight: taken out of the iris and kept as an additive layer
        spec = tex.highlight[e].max(axis=-1) > 0
        assert 0 < spec.sum() < 200 and np.all(theta[spec] < model.iris_angle)
        assert np.median(err[spec]) < 30 and tex.image[e][spec].mean() < 120  # the iris under it, not white
