"""One source's upload (render/upload.py): the texture crop and the interleaved vertices."""

from __future__ import annotations

import numpy as np

from nvsynth.render.mesh import RenderMesh
from nvsynth.render.upload import TEXTURE_MARGIN, VERTEX_FORMAT, texture_crop, vertex_data


def test_texture_crop_holds_every_texture_coordinate_with_its_margin_inside_the_frame() -> None:
    m = TEXTURE_MARGIN
    crop = texture_crop(1280, 720, [[10.2, 20.7], [100.0, 50.5], [40.0, 33.0]])
    assert (crop.x0, crop.y0, crop.x1, crop.y1) == (10 - m, 20 - m, 100 + m + 1, 51 + m + 1)
    assert (crop.width, crop.height) == (crop.x1 - crop.x0, crop.y1 - crop.y0)
    # Bilinear taps around every coordinate (floor and floor + 1) lie inside the crop.
    uv = np.random.default_rng(0).uniform([5.0, 5.0], [1270.0, 710.0], (500, 2))
    c = texture_crop(1280, 720, uv)
    assert np.all(np.floor(uv) >= [c.x0, c.y0]) and np.all(np.floor(uv) + 1 < [c.x1, c.y1])
    # Clamped to the frame at its edges; never empty, even for coordinates outside it.
    edge = texture_crop(1280, 720, [[0.5, 1.0], [1279.0, 719.9]])
    assert (edge.x0, edge.y0, edge.x1, edge.y1) == (0, 0, 1280, 720)
    outside = texture_crop(1280, 720, [[1500.0, 900.0], [1600.0, 950.0]])
    assert (outside.x0, outside.y0, outside.width, outside.height) == (1279, 719, 1, 1)


def test_vertex_data_interleaves_the_mesh_attributes_in_the_shader_inputs_order() -> None:
    rng = np.random.default_rng(1)
    n = 7
    mesh = RenderMesh(
        positions=rng.normal(size=(n, 3)).astype(np.float32),
        faces=np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6]], np.int32),
        texcoords=rng.uniform(0, 100, (n, 2)).astype(np.float32),
        normals=rng.normal(size=(n, 3)).astype(np.float32),
        seen=(rng.random(n) > 0.5).astype(np.float32),
        landmarks=np.zeros((68, 3), np.float32),
        face_region=rng.normal(size=n).astype(np.float32),
    )
    data = vertex_data(mesh)
    sizes = [int(f[:-1]) for f in VERTEX_FORMAT[0].split()]
    assert data.dtype == np.float32 and data.shape == (n, sum(sizes))
    assert VERTEX_FORMAT[1:] == ("in_pos", "in_tex", "in_normal", "in_seen", "in_region")
    cols = np.split(data, np.cumsum(sizes)[:-1], axis=1)
    for col, attr in zip(
        cols, (mesh.positions, mesh.texcoords, mesh.normals, mesh.seen, mesh.face_region), strict=True
    ):
        assert np.array_equal(col.reshape(np.shape(attr)), attr)
    # Without a face region every vertex is inside the mask.
    plain = vertex_data(RenderMesh(**{**mesh.__dict__, "face_region": None}))
    assert np.array_equal(plain[:, -1], np.ones(n, np.float32))
