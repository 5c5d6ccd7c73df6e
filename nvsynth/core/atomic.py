"""Atomic file writing: the one way nvsynth creates a final file. See docs/design.md.

A final file is either absent or complete: content goes to a temporary file in
the destination's folder, is flushed to disk (``fsync``), then renamed over the
destination (``os.replace`` is atomic on POSIX within one file system), and the
folder entry is synced too. On any exception the temporary file is removed and
the destination is left as it was. New files follow the process umask (like
``open``), not the 0600 of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename or creation inside ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it becomes ``dest`` atomically.

    The temporary name keeps ``dest``'s suffix, so writers that pick a format
    by extension (``cv2.imwrite``, ``np.savez``) behave as for ``dest``::

        with atomic_path(out / "p00.npz") as tmp:
            np.savez(tmp, **arrays)
    """
    dest = Path(dest)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(dest.parent)


def write_bytes(dest: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Write UTF-8 ``text`` to ``dest`` atomically."""
    write_bytes(dest, text.encode("utf-8"), durable=durable)
