"""Render stage: the moderngl/EGL renderer, view sampling and appearance."""
