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
"""

from __future__ import annotations

import os

import moderngl

from nvsynth.core.errors import RenderError

_CONTEXT: tuple[int, moderngl.Context] | None = None  # (the pid that made it, the context)


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
        try:
            ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as err:  # moderngl/glcontext raise plain Exceptions
            raise RenderError(f"cannot create a headless OpenGL context (EGL): {err}") from err
        _CONTEXT = (pid, ctx)
    return _CONTEXT[1]
