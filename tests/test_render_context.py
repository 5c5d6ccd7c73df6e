"""The per-process GL context (render/context.py): renderers pickle to their settings, forks are refused."""

from __future__ import annotations

import numpy as np
from render_scenes import frontal_template, id_mesh, turn_about

from nvsynth.core import geometry
from nvsynth.core.errors import RenderError
from nvsynth.recon.template import FaceTemplate
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import RenderMesh


def _render_pickled(args: tuple[FaceRenderer, np.ndarray, RenderMesh, np.ndarray]) -> tuple[int, bytes]:
    import os

    renderer, tex, mesh, T = args
    return os.getpid(), bytes(np.ascontiguousarray(renderer.render(tex, mesh, T).color))


def _render_forked(_: int) -> str:
    from nvsynth.render.gl import ForkedContextError

    try:
        FaceRenderer().render(np.zeros((4, 4, 3), np.uint8), _FORK_MESH[0], np.eye(4)[None])
    except ForkedContextError as err:
        return f"{isinstance(err, RenderError)} {err}"  # a RenderError: the CLI reports it as one line
    return "rendered"


_FORK_MESH: list[RenderMesh] = []


def test_renderers_pickle_to_settings_and_render_identically_in_another_process(template: FaceTemplate) -> None:
    import multiprocessing
    import os

    v = frontal_template(template)
    mesh, tex = id_mesh(v, template.faces)
    T = turn_about(v.mean(axis=0), geometry.head_rotation_from_pitchyaw(0.2, -0.4))[None]
    parent = FaceRenderer()
    here = parent.render(tex, mesh, T)  # the parent holds GL objects; pickling must leave them behind
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        ((pid, blob),) = pool.map_async(_render_pickled, [(parent, tex, mesh, T)]).get(timeout=120)
    assert pid != os.getpid()
    assert blob == bytes(np.ascontiguousarray(here.color))
    assert np.array_equal(parent.render(tex, mesh, T).color, here.color)
    parent.release()


def test_a_process_forked_after_the_context_refuses_to_render_instead_of_hanging(template: FaceTemplate) -> None:
    import multiprocessing

    from nvsynth.render.gl import get_context

    get_context()  # this process has a context
    _FORK_MESH.append(id_mesh(frontal_template(template), template.faces)[0])
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            message = pool.map_async(_render_forked, [0]).get(timeout=60)[0]
    finally:
        _FORK_MESH.clear()
    assert "forked from process" in message and "spawn" in message
    assert message.startswith("True ")
