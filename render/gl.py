"""The face renderer's public names: moderngl on a headless EGL context (Mesa llvmpipe on CPU, NVIDIA EGL on GPUs).

This module only re-exports; the renderer is built from small pieces, after
PyTorch3D's ``MeshRenderer(rasterizer, shader)``:

==========================  ==========================================================
:mod:`render.context`       the process's EGL context (:func:`get_context`), fork guard,
                            its device (:func:`use_device`, :mod:`render.egl_devices`)
:mod:`render.camera`        :func:`projection_matrix` from a 3x3 camera matrix, view
                            matrices, :func:`clip_to_pixels`
:mod:`render.upload`        one source's texture crop, vertices and indices
:mod:`render.shading`       the GLSL program; light and darkening as uniforms
:mod:`render.compositing`   render targets: :class:`RenderBatch` (face layers) or
                            finished views over a :class:`Backdrop`
:mod:`render.renderer`      :class:`FaceRenderer`: the one draw loop over those pieces
==========================  ==========================================================

In short: one OpenGL context per process, created by the first render in that
process; the B views of a source share one upload and are drawn one per
framebuffer with identical window coordinates (so a view's pixels do not
depend on its batch), in one pass that shades (Gouraud Lambert light),
composites (over a transparent target for :meth:`FaceRenderer.render`, over
each view's backdrop for :meth:`FaceRenderer.render_composited`) and writes
the face mask. Each module's docstring gives its part in full.
"""

from __future__ import annotations

from nvsynth.render.camera import FAR_MM, NEAR_MM, Camera, clip_to_pixels, projection_matrix
from nvsynth.render.compositing import Backdrop, RenderBatch
from nvsynth.render.context import ForkedContextError, GlInfo, context_info, get_context, use_device
from nvsynth.render.renderer import FaceRenderer
from nvsynth.render.upload import TEXTURE_MARGIN

__all__ = [
    "FAR_MM",
    "NEAR_MM",
    "TEXTURE_MARGIN",
    "Backdrop",
    "Camera",
    "FaceRenderer",
    "ForkedContextError",
    "GlInfo",
    "RenderBatch",
    "clip_to_pixels",
    "context_info",
    "get_context",
    "projection_matrix",
    "use_device",
]
