"""Appearance sampling, backgrounds and compositing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nvsynth.core import seeding
from nvsynth.core.config import from_dict
from nvsynth.core.errors import ConfigError, DatasetError
from nvsynth.core.h5io import H5Writer, open_h5
from nvsynth.core.schema import APPEARANCE_FIELDS, DATASET_ATTRS
from nvsynth.recon.template import load_template
from nvsynth.render.appearance import (
    DARKENING_RANGE,
    LIGHT_CONE_DEG,
    MPII_NV_PROBABILITIES,
    VARIANTS,
    AppearanceParams,
    appearance_columns,
    sample_appearance,
)
from nvsynth.render.backgrounds import (
    BLUR_KERNEL,
    PROCEDURAL_COUNT,
    BackgroundSource,
    list_images,
    procedural_background,
)
from nvsynth.render.compose import finish_views
from nvsynth.render.gl import FaceRenderer, RenderBatch
from nvsynth.render.mesh import RenderMesh

N_DRAWS = 20000


def draws(render_cfg: dict | None = None, n: int = N_DRAWS, n_backgrounds: int = 50) -> list[AppearanceParams]:
    cfg = from_dict({"render": render_cfg or {}}).render
    return [
        sample_appearance(seeding.view_rng(7, "p01", i // 16, i % 16, seeding.STREAM_APPEARANCE), cfg, n_backgrounds)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def mpii_nv() -> list[AppearanceParams]:
    return draws()


# -- sampling --------------------------------------------------------------------


def test_mpii_nv_variant_shares(mpii_nv: list[AppearanceParams]) -> None:
    counts = np.bincount([p.variant for p in mpii_nv], minlength=len(VARIANTS))
    shares = counts / len(mpii_nv)
    sigma = np.sqrt(np.array(MPII_NV_PROBABILITIES) * (1 - np.array(MPII_NV_PROBABILITIES)) / len(mpii_nv))
    assert np.all(np.abs(shares - MPII_NV_PROBABILITIES) < 4 * sigma), shares
    assert VARIANTS == ("black", "black-dark", "color", "color-dark", "image", "image-dark")


def test_variants_fix_background_kind_darkening_and_ids(mpii_nv: list[AppearanceParams]) -> None:
    dark = np.array([p.darkening for p in mpii_nv if VARIANTS[p.variant].endswith("-dark")])
    lo, hi = DARKENING_RANGE
    assert (lo, hi) == (0.25, 0.75)
    assert dark.min() >= lo and dark.max() < hi
    assert abs(dark.mean() - 0.5) < 0.01 and dark.min() < 0.27 and dark.max() > 0.73
    for p in mpii_nv:
        name = VARIANTS[p.variant]
        assert p.background_kind == name.split("-")[0]
        if not name.endswith("-dark"):
            assert p.darkening == 1.0
        if p.background_kind == "image":
            assert 0 <= p.background_id < 50
        else:
            assert p.background_id == -1
        if p.background_kind != "color":
            assert not p.background_color.any()
    colors = np.array([p.background_color for p in mpii_nv if p.background_kind == "color"])
    assert colors.dtype == np.uint8 and colors.min() == 0 and colors.max() == 255
    ids = np.array([p.background_id for p in mpii_nv if p.background_kind == "image"])
    assert len(np.unique(ids)) == 50


def test_lights_follow_the_config(mpii_nv: list[AppearanceParams]) -> None:
    lights = [p.light for p in mpii_nv if p.light is not None]
    assert abs(len(lights) / len(mpii_nv) - 0.5) < 0.02  # light.probability default
    d = np.array([li.direction for li in lights])
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    angle = np.degrees(np.arccos(-d[:, 2]))  # from the direction towards the camera
    assert angle.max() <= LIGHT_CONE_DEG + 1e-9 and angle.max() > LIGHT_CONE_DEG - 2
    amb = np.array([li.ambient for li in lights])
    assert amb.min() >= 0.4 and amb.max() <= 0.8
    none = draws({"light": {"enabled": False}}, n=2000)
    assert all(p.light is None for p in none)
    always = draws({"light": {"probability": 1.0, "ambient": [0.1, 0.2], "darken_background": True}}, n=500)
    assert all(p.light is not None and 0.1 <= p.light.ambient <= 0.2 for p in always)
    assert all(p.darken_background for p in always)


def test_plain_preset_and_determinism() -> None:
    plain = draws({"appearance": "plain"}, n=1000)
    assert all(p.variant == 0 and p.darkening == 1.0 and p.background_id == -1 for p in plain)
    a, b = draws(n=300), draws(n=300)
    ca, cb = appearance_columns(a), appearance_columns(b)
    assert all(np.array_equal(ca[k], cb[k]) for k in ca)
    other = [
        sample_appearance(
            seeding.view_rng(8, "p01", i // 16, i % 16, seeding.STREAM_APPEARANCE), from_dict({}).render, 50
        )
        for i in range(300)
    ]
    assert not np.array_equal(appearance_columns(other)["variant"], ca["variant"])


def test_appearance_columns_match_the_fields_and_write_to_h5(tmp_path: Path, mpii_nv: list[AppearanceParams]) -> None:
    params = mpii_nv[:64]
    cols = appearance_columns(params)
    assert set(cols) == {f.name for f in APPEARANCE_FIELDS}
    for f in APPEARANCE_FIELDS:
        assert cols[f.name].shape == (64, *f.shape) and cols[f.name].dtype == np.dtype(f.dtype)
    relit = cols["relit"].astype(bool)
    assert np.array_equal(relit, [p.light is not None for p in params])
    np.testing.assert_allclose(cols["light_direction"][relit], [p.light.direction for p in params if p.light])
    assert not cols["light_direction"][~relit].any()
    np.testing.assert_allclose(cols["darkening"], [p.darkening for p in params], rtol=1e-7)
    with H5Writer(tmp_path / "a.h5", fields=APPEARANCE_FIELDS) as w:
        w.append(cols)
        w.append(appearance_columns(mpii_nv[64:70]))
        w.commit()
    with open_h5(tmp_path / "a.h5") as f:
        assert f["variant"].shape == (70,)
        for name in cols:
            assert np.array_equal(f[name][:64], cols[name])
    assert DATASET_ATTRS["variant"]["names"] == list(VARIANTS)


# -- backgrounds -----------------------------------------------------------------------


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def test_background_folder_is_listed_sorted_and_images_are_resized_and_box_blurred(tmp_path: Path) -> None:
    folder = tmp_path / "bg"
    dot = np.zeros((448, 448, 3), np.uint8)
    dot[100:110, 200:210] = 255
    _write(folder / "b" / "dot.png", dot)
    _write(folder / "a.jpg", np.full((256, 256, 3), 90, np.uint8))
    _write(folder / "c" / "z.PNG", np.full((300, 500, 3), 30, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    src = BackgroundSource(folder)
    assert len(src) == 3 and not src.procedural
    assert [src.name(i) for i in range(3)] == ["a.jpg", "b/dot.png", "c/z.PNG"]
    assert [p.name for p in list_images(folder)] == ["a.jpg", "dot.png", "z.PNG"]
    for i in range(3):
        assert src.image(i).shape == (448, 448, 3) and src.image(i).dtype == np.uint8
    assert np.all(src.image(0) == 90) and np.all(src.image(2) == 30)
    # A 10x10 white square spreads over 10 + 20 - 1 = 29 pixels with the 20x20 box, peak 255 * 100 / 400.
    blurred = src.image(1)[..., 0]
    ys, xs = np.nonzero(blurred)
    assert BLUR_KERNEL == (20, 20)
    assert np.ptp(xs) + 1 == 29 and np.ptp(ys) + 1 == 29
    assert blurred.max() == 64 and np.count_nonzero(blurred == 64) == 11 * 11  # full overlap positions
    # Images are fresh copies: compositing onto one does not change the next.
    img = src.image(1)
    img[:] = 0
    assert src.image(1).max() == 64


def test_background_folder_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        BackgroundSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        BackgroundSource(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not a jpeg")
    src = BackgroundSource(tmp_path / "bad")
    with pytest.raises(DatasetError, match="cannot be read"):
        src.image(0)
    with pytest.raises(IndexError):
        src.image(1)


def test_procedural_backgrounds_are_deterministic_varied_and_smooth() -> None:
    src = BackgroundSource(None)
    assert src.procedural and len(src) == PROCEDURAL_COUNT
    a, b = src.image(3), BackgroundSource(None).image(3)
    assert np.array_equal(a, b)
    imgs = [src.image(i).astype(float) for i in range(8)]
    means = np.array([im.mean(axis=(0, 1)) for im in imgs])
    assert np.ptp(means, axis=0).max() > 30, "different indices give different scenes"
    for im in imgs:
        assert im.std() > 5, "not a flat colour"
        assert np.abs(np.diff(im, axis=1)).mean() < 3.0, "smooth (box-blurred)"
    assert BackgroundSource.from_config(from_dict({})).procedural


def test_procedural_background_is_the_same_scene_at_any_size() -> None:
    for i in (0, 5, 999):
        big = cv2.resize(procedural_background(i, 448), (224, 224), interpolation=cv2.INTER_AREA).astype(float)
        other = procedural_background(i + 1 if i < 999 else 0, 224).astype(float)
        small = procedural_background(i, 224).astype(float)
        assert np.abs(big - small).mean() < 6.0, "same draws, same scene"
        assert np.abs(big - other).mean() > 20.0


# -- compositing ------------------------------------------------------------------------------


def disc_batch(n: int, face_bgr: tuple[int, int, int]) -> RenderBatch:
    S = 448
    alpha = np.zeros((n, S, S), np.uint8)
    mask = np.zeros((n, S, S), np.uint8)
    for b in range(n):
        cv2.circle(alpha[b], (224, 224), 150, 255, -1)
        cv2.circle(mask[b], (224, 240), 100, 255, -1)
    color = np.zeros((n, S, S, 3), np.uint8)
    color[alpha > 0] = face_bgr
    return RenderBatch(color=color, alpha=alpha, mask=mask)


def params(kind: str, dark: float = 1.0, color=(0, 0, 0), bg_id: int = -1, darken_bg: bool = False):
    variant = VARIANTS.index(kind + ("-dark" if dark != 1.0 else ""))
    return AppearanceParams(variant, kind, bg_id, np.array(color, np.uint8), dark, None, darken_bg)


def test_compositing_puts_the_face_over_the_background_then_area_resizes() -> None:
    face = (40, 120, 200)
    batch = disc_batch(4, face)
    bg = BackgroundSource(None)
    ps = [
        params("black"),
        params("color", color=(10, 200, 30)),
        params("image", dark=0.5, bg_id=17),
        params("image", dark=0.5, bg_id=17, darken_bg=True),
    ]
    patches, masks = finish_views(batch, ps, bg)
    assert patches.shape == (4, 224, 224, 3) and masks.shape == (4, 224, 224)
    yy, xx = np.mgrid[0:224, 0:224]
    r = np.hypot(xx + 0.5 - 112, yy + 0.5 - 112)  # patch pixel centres in render units / 2
    inside, outside = r < 70, r > 80
    assert np.all(patches[0][inside] == face) and np.all(patches[0][outside] == 0)
    assert np.all(patches[1][inside] == face) and np.all(patches[1][outside] == (10, 200, 30))
    dark_face = np.round(np.array(face) * 0.5)
    assert np.all(np.abs(patches[2][inside].astype(int) - dark_face) <= 1)
    expected_bg = cv2.resize(bg.image(17), (224, 224), interpolation=cv2.INTER_AREA).astype(int)
    assert np.all(np.abs(patches[2][outside].astype(int) - expected_bg[outside]) <= 1), "background untouched"
    assert np.all(np.abs(patches[3][outside].astype(int) - np.round(expected_bg[outside] * 0.5)) <= 1)
    # Masks: the face-mask disc (radius 100 at (224, 240)), area-reduced and binarized.
    rm = np.hypot(xx + 0.5 - 112, yy + 0.5 - 120)
    for m in masks:
        assert set(np.unique(m)) <= {0, 255}
        assert np.all(m[rm < 49] == 255) and np.all(m[rm > 51] == 0)


def test_compositing_a_real_render(template_path: Path) -> None:
    tpl = load_template(template_path)
    v = tpl.vertices - tpl.vertices.mean(axis=0) + np.array([0.0, 0.0, 420.0])
    tex = np.full((8, 8, 3), (30, 90, 250), np.uint8)
    mesh = RenderMesh(
        positions=v.astype(np.float32),
        faces=tpl.faces,
        texcoords=np.full((len(v), 2), 3.5, np.float32),
        normals=np.tile([0.0, 0.0, -1.0], (len(v), 1)).astype(np.float32),
        seen=np.ones(len(v), np.float32),
        landmarks=np.zeros((68, 3), np.float32),
    )
    r = FaceRenderer()
    try:
        batch = r.render(tex, mesh, np.eye(4)[None])
    finally:
        r.release()
    patches, masks = finish_views(batch, [params("color", color=(200, 10, 10))], BackgroundSource(None))
    face = cv2.erode(masks[0], np.ones((3, 3), np.uint8)) > 0
    back = cv2.dilate(masks[0], np.ones((3, 3), np.uint8)) == 0
    assert face.sum() > 5000 and back.sum() > 5000
    assert np.all(patches[0][face] == (30, 90, 250)) and np.all(patches[0][back] == (200, 10, 10))


def test_backgrounds_at_another_render_size_are_the_same_scenes(tmp_path: Path) -> None:
    """BackgroundSource.at_size: the same listing at another size; the blur scales with it (20 x 20 at 448)."""
    from nvsynth.render.backgrounds import blur_kernel

    assert blur_kernel(448) == BLUR_KERNEL and blur_kernel(320) == (14, 14) and blur_kernel(224) == (10, 10)
    folder = tmp_path / "bg"
    folder.mkdir()
    rng = np.random.default_rng(3)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    src = BackgroundSource(folder)
    small = src.at_size(320)
    assert small.paths == src.paths and small.size == 320 and src.size == 448 and src.at_size(448) is src
    big, little = src.image(0), small.image(0)
    assert big.shape == (448, 448, 3) and little.shape == (320, 320, 3)
    down = cv2.resize(big, (320, 320), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(down - little).mean() < 3.0, "the same scene, blurred alike"
    procedural = BackgroundSource(None)
    p_big, p_little = procedural.image(5), procedural.at_size(320).image(5)
    assert np.abs(cv2.resize(p_big, (320, 320), interpolation=cv2.INTER_AREA).astype(int) - p_little).mean() < 3.0
