"""The process's OpenGL context: one headless EGL context per process, with a fork guard.

moderngl on EGL: Mesa llvmpipe on CPU, NVIDIA EGL on GPUs. The context is
created lazily, by the first draw in a process (never at import), and lives as
long as the process: renderers own only the objects they make in it
(:mod:`render.renderer`). This is the one piece of per-process GL state.

Contexts do not survive ``fork``. Mesa keeps one driver screen per process,
with llvmpipe's rasterizer threads; a forked child inherits the screen but not
the threads, and its first readback waits for them forever. So a process
forked after its parent made a context refuses to render
(:class:`ForkedContextError`) rather than hang. Make renderers in the worker
processes (a pool initializer), or start workers with ``spawn`` /
``forkserver``.

The device: :func:`use_device` (before the first draw) names the EGL device
(:mod:`render.egl_devices`: a GPU by its CUDA number, or Mesa's llvmpipe);
without it glcontext takes entry 0 of EGL's device list. :func:`context_info`
says what the context draws with (``GL_RENDERER``, ``GL_VERSION``, the device).
"""

from __future__ import annotations

import os

import moderngl

from nvsynth.core.errors import RenderError
from nvsynth.render.egl_devices import EglDevice, GlInfo

_CONTEXT: tuple[int, moderngl.Context] | None = None  # (the pid that made it, the context)
_DEVICE: EglDevice | None = None  # the device the next context is made on (None: glcontext's entry 0)


def use_device(device: EglDevice) -> None:
    """Make this process's context on ``device`` (an entry of :func:`render.egl_devices.list_devices`).

    Call it before the first draw; a process that already has a context on
    another device raises :class:`~nvsynth.core.errors.RenderError`.
    """
    global _DEVICE
    if _CONTEXT is not None and _CONTEXT[0] == os.getpid() and _index(_DEVICE) != device.index:
        raise RenderError(
            f"this process already renders on EGL device {_index(_DEVICE)}; it cannot switch to {device.describe()}"
        )
    _DEVICE = device


def _index(device: EglDevice | None) -> int:
    return 0 if device is None else device.index


class ForkedContextError(RenderError, RuntimeError):
    """This process was forked from one that had already made an EGL context."""


def get_context() -> moderngl.Context:
    """This process's standalone EGL context, created on first use.

    Raises :class:`ForkedContextError` at once in a process forked after its
    parent made a context, and :class:`~nvsynth.core.errors.RenderError` when
    no EGL context can be made at all.
    """
    global _CONTEXT
    pid = os.getpid()
    if _CONTEXT is not None and _CONTEXT[0] != pid:
        raise ForkedContextError(
            f"process {pid} was forked from process {_CONTEXT[0]}, which had already created an EGL context; "
            "create the renderer only in the worker processes, or use the 'spawn'/'forkserver' start method"
        )
    if _CONTEXT is None:
        index = _index(_DEVICE)
        forced = os.environ.get("GLCONTEXT_DEVICE_INDEX")  # glcontext lets it override device_index
        if forced is not None and forced.strip() != str(index):
            raise RenderError(f"GLCONTEXT_DEVICE_INDEX={forced} overrides the EGL device {index} chosen: unset it")
        try:
            ctx = moderngl.create_standalone_context(backend="egl", device_index=index)
        except Exception as err:  # moderngl/glcontext raise plain Exceptions
            where = "" if _DEVICE is None else f" on {_DEVICE.describe()}"
            raise RenderError(f"cannot create a headless OpenGL context (EGL){where}: {err}") from err
        _CONTEXT = (pid, ctx)
    return _CONTEXT[1]


def context_info() -> GlInfo:
    """``GL_RENDERER``, ``GL_VERSION`` and the EGL device of this process's context (made if needed)."""
    info = get_context().info
    device = _DEVICE.describe() if _DEVICE is not None else "EGL device 0 (EGL's first entry)"
    return GlInfo(str(info.get("GL_RENDERER", "")), str(info.get("GL_VERSION", "")), device)
