"""Exceptions by layer. See docs/design.md ("Errors").

Every layer raises its own subclass of :class:`NvsynthError` with a message a
user can act on (the file, the line, the key). Only ``nvsynth.app.cli`` decides
how they are shown and which exit code they give: one line, no traceback; 2 for
usage and configuration mistakes (a wrong path included), 1 for everything else
(data, environment: a full disk, a quota). :func:`io_guard` turns an
``OSError`` on a path into a :class:`PathError` that names the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
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


class WorkerError(NvsynthError):
    """A worker process ended abruptly (killed, e.g. by the out-of-memory killer, or crashed)."""


#: ``errno`` values that mean the user pointed nvsynth at a wrong path (exit 2); others are faults of
#: the environment (a full disk, a quota, a file-size limit, an I/O error: exit 1).
USER_ERRNOS = frozenset(
    getattr(errno, n)
    for n in ("ENOENT", "ENOTDIR", "EISDIR", "EACCES", "EPERM", "EROFS", "EEXIST", "ENAMETOOLONG", "ELOOP")
    if hasattr(errno, n)
)
#: ``errno`` values of a full disk, a quota or a file-size limit: space can return, and a run can resume.
SPACE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n))
_H5_ERRNO = re.compile(r"errno = (\d+)")


class PathError(NvsynthError):
    """A file or folder nvsynth reads or writes failed with an ``OSError``; names the path and the cause.

    ``user_mistake`` is true for a wrong path (missing, not a folder, no permission, read-only:
    exit 2) and false for a fault of the environment (disk full, quota, file-size limit, I/O: exit 1).
    """

    def __init__(self, message: str, user_mistake: bool = False, errno_: int | None = None) -> None:
        super().__init__(message)
        self.user_mistake = bool(user_mistake)
        self.errno = errno_

    def __reduce__(self) -> tuple[type[PathError], tuple[str, bool, int | None]]:  # survives a worker's pickle
        return type(self), (str(self), self.user_mistake, self.errno)


def os_errno(err: OSError) -> int | None:
    """The ``errno`` of an ``OSError``, also where h5py only names it in the message ("errno = 28")."""
    if err.errno:
        return int(err.errno)
    m = _H5_ERRNO.search(str(err))
    return int(m.group(1)) if m else None


def path_error(err: OSError, path: str | os.PathLike[str] | None, doing: str, hint: str = "") -> PathError:
    """One line for an ``OSError`` on ``path``: ``PATH: cannot DOING: CAUSE[; HINT]``."""
    code = os_errno(err)
    cause = os.strerror(code) if code else (str(err).splitlines() or [type(err).__name__])[0]
    where = path if path is not None else (err.filename or "?")
    if code in SPACE_ERRNOS and not hint:
        hint = "free some space (or raise the limit) and run the same command again"
    text = f"{where}: cannot {doing}: {cause}" + (f"; {hint}" if hint else "")
    return PathError(text, user_mistake=code in USER_ERRNOS, errno_=code)


@contextlib.contextmanager
def io_guard(path: str | os.PathLike[str] | None, doing: str, hint: str = "") -> Iterator[None]:
    """Turn an ``OSError`` inside the block into a :class:`PathError` naming ``path`` (or the error's own file)."""
    try:
        yield
    except PathError:
        raise
    except OSError as err:
        raise path_error(err, path, doing, hint) from None
    except RuntimeError as err:  # h5py reports a failed flush on close as RuntimeError("... errno = 28 ...")
        m = _H5_ERRNO.search(str(err))
        if m is None:
            raise
        raise path_error(OSError(int(m.group(1)), str(err)), path, doing, hint) from None
