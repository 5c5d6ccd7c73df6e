"""Exceptions by layer. See docs/design.md ("Errors").

Every layer raises its own subclass of :class:`NvsynthError` with a message a
user can act on (the file, the line, the key). Only ``nvsynth.app.cli`` decides
how they are shown and which exit code they give: one line, no traceback; 2 for
usage and configuration mistakes, 1 for everything else (data, environment).
"""

from __future__ import annotations

from pathlib import Path


class NvsynthError(Exception):
    """Base of every error nvsynth expects and reports as one line."""


class ConfigError(NvsynthError):
    """An invalid configuration file, key or command-line option (a usage mistake)."""


class AssetError(NvsynthError):
    """An external asset (face template, landmark model, pattern file) is missing or does not verify."""


class DatasetError(NvsynthError):
    """A dataset file is missing or malformed; names the file and, where known, the line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(where + message)
        self.path = None if path is None else Path(path)
        self.line = line


class ReconError(NvsynthError):
    """The recon stage cannot run (e.g. a landmark backend cannot load)."""


class RenderError(NvsynthError):
    """The render stage cannot run (e.g. no OpenGL context, no recon records)."""


class OutputError(NvsynthError):
    """An output file or folder cannot be written, or is not a valid nvsynth output."""
