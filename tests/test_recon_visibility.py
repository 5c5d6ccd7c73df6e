"""Depth-tested, grazing-aware vertex visibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nvsynth.core import ibug68
from nvsynth.core.geometry import rot_y
from nvsynth.recon.template import load_template
from nvsynth.recon.visibility import MAX_VIEW_ANGLE_DEG, OCCLUSION_MARGIN_MM, vertex_normals, visible_vertices

K = np.array([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])


def grid(n: int, size: float, z: float, x0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A flat square grid facing the camera (normals toward -z), centred at (x0, 0, z)."""
    u = np.linspace(-size / 2, size / 2, n)
    xx, yy = np.meshgrid(u, u)
    v = np.c_[xx.ravel() + x0, yy.ravel(), np.full(n * n, z)]
    f = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            f += [[a, c, b], [b, c, d]]  # wound so the normal points toward the camera
    return v, np.array(f, dtype=np.int32)


def test_occluded_vertices_are_hidden() -> None:
    back, fb = grid(11, 200.0, 700.0)
    front, ff = grid(3, 60.0, 500.0)
    v = np.r_[back, front]
    f = np.r_[fb, ff + len(back)]
    vis = visible_vertices(v, f, K)
    assert vis[len(back) :].all()  # the small near square is seen
    # back vertices whose ray passes through the near square are hidden, the others seen
    ray_hits = np.all(np.abs(back[:, :2] * 500.0 / 700.0) < 30.0 - 1.0, axis=1)
    clear = np.any(np.abs(back[:, :2] * 500.0 / 700.0) > 30.0 + 1.0, axis=1)
    assert ray_hits.sum() > 0
    assert not vis[: len(back)][ray_hits].any()
    assert vis[: len(back)][clear].all()


def test_grazing_surface_counts_as_unseen() -> None:
    v, f = grid(5, 100.0, 0.0)
    for angle, seen in ((60.0, True), (85.0, False)):
        w = v @ rot_y(np.radians(angle)).T + np.array([0.0, 0.0, 600.0])
        assert visible_vertices(w, f, K).all() == seen
        assert visible_vertices(w, f, K).any() == seen


def test_back_of_the_surface_is_unseen() -> None:
    v, f = grid(5, 100.0, 600.0)
    assert not visible_vertices(v, f[:, ::-1], K).any()


def test_template_turned_hides_the_far_cheek(template_path: Path) -> None:
    """The canonical face turned 50 deg: its far side is hidden, its near side and the nose tip are seen."""
    tpl = load_template(template_path)
    front = visible_vertices(tpl.vertices + np.array([0.0, 0.0, 600.0]), tpl.faces, K)
    assert front.mean() > 0.85
    turned = tpl.vertices @ rot_y(np.radians(50.0)).T + np.array([0.0, 0.0, 600.0])
    vis = visible_vertices(turned, tpl.faces, K)
    x = tpl.vertices[:, 0]
    # positive yaw turns the subject's right side (x < 0) away from the camera
    assert vis[x > 30.0].mean() > 0.9
    assert vis[x < -30.0].mean() < 0.3
    nose_tip = int(np.argmin(tpl.vertices[:, 2]))
    assert vis[nose_tip]


def test_shallow_creases_count_as_seen_and_deep_occluders_keep_a_margin() -> None:
    back, fb = grid(21, 100.0, 700.0)  # 5 mm spacing
    for gap, hidden_expected in ((3.0, False), (100.0, True)):
        front, ff = grid(3, 30.0, 700.0 - gap)
        v = np.r_[back, front]
        f = np.r_[fb, ff + len(back)]
        vis = visible_vertices(v, f, K)[: len(back)]
        behind = np.all(np.abs(back[:, :2] * (700.0 - gap) / 700.0) < 15.0 - 1.0, axis=1)
        if not hidden_expected:
            # 3 mm of surface in front (a nostril behind the nose tip): its texels are the right colour.
            assert vis.all()
            continue
        assert not vis[behind].any()
        # Seen vertices beside the occluder's silhouette: unseen within OCCLUSION_MARGIN_MM of a hidden one.
        d = np.linalg.norm(back[:, None] - back[behind][None], axis=2).min(axis=1)
        assert np.count_nonzero((d > 0) & (d < OCCLUSION_MARGIN_MM - 0.5)) >= 8
        assert not vis[(d > 0) & (d < OCCLUSION_MARGIN_MM - 0.5)].any()
        assert vis[d > OCCLUSION_MARGIN_MM + 3.0].all()


def test_grazing_surface_inside_the_face_counts_as_seen(template_path: Path) -> None:
    """Frontal template: the nostrils under the nose tip are seen edge-on but well inside the face."""
    import json

    tpl = load_template(template_path)
    v = tpl.vertices + np.array([0.0, 0.0, 600.0])
    vis = visible_vertices(v, tpl.faces, K)
    n = vertex_normals(v, tpl.faces)
    cos = -np.einsum("ij,ij->i", n, v / np.linalg.norm(v, axis=1, keepdims=True))
    grazing = (cos > 0) & (cos < np.cos(np.radians(MAX_VIEW_ANGLE_DEG)))
    lmap = np.array(json.loads((template_path.parent / "dlib68_to_mp468.json").read_text())["empirical"])
    nose_base = (
        np.linalg.norm(tpl.vertices[:, None] - tpl.vertices[lmap[ibug68.LOWER_NOSE]][None], axis=2).min(axis=1) < 12.0
    )
    assert (grazing & nose_base).sum() >= 3
    assert vis[nose_base].all()
    # Grazing surface at the outline (the sides of the head) stays unseen.
    outline = np.abs(tpl.vertices[:, 0]) > 60.0
    assert (grazing & outline).sum() >= 5
    assert not vis[grazing & outline].any()
