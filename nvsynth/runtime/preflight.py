"""Checks before a run writes anything: its folder, its lock, free space, the worker count.

See docs/design.md ("Runtime") and docs/reliability.md.

* :func:`prepare_folder` creates the output folder; a path that is a file, under
  a file, under ``/proc``, read-only or not permitted ends in one line naming it
  (:class:`~nvsynth.core.errors.PathError`, exit 2).
* :class:`RunLock` -- one run per folder: an exclusive ``flock`` on
  ``FOLDER/.nvsynth.lock``, held until the run ends and released by the kernel
  when the process dies (SIGKILL included), so a stale lock never blocks a
  resume. The file records the holder (pid, host, command, start time), which a
  second run names when it refuses. It does not depend on HDF5's own file
  locking, so it also works with ``HDF5_USE_FILE_LOCKING=FALSE`` (common on
  NFS and Lustre, where Linux maps ``flock`` to POSIX record locks).
* :func:`check_space` warns when the estimated output does not fit the free space.
* :func:`check_workers` warns when more workers are asked for than cores can run them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from nvsynth.core.errors import OutputError, PathError, io_guard

LOCK_NAME = ".nvsynth.lock"
#: Bytes per rendered image in the output, measured on the bundled sample (115 kB: lzf patch and mask
#: plus labels), rounded up.
BYTES_PER_IMAGE = 120_000


def prepare_folder(folder: Path, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents); one line naming the path when that cannot be done."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PathError(f"{folder}: cannot use it as the {what}: it is a file, not a folder", user_mistake=True)
    with io_guard(folder, f"create the {what}"):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


class RunLock:
    """An exclusive lock on a folder for one run (see the module docstring); a context manager."""

    def __init__(self, folder: Path, command: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command or " ".join(["nvsynth", *sys.argv[1:]])
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        with io_guard(self.path, "create the lock file (is the folder writable?)"):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _describe(_read_holder(fd))
                os.close(fd)
                raise OutputError(
                    f"{self.folder}: another nvsynth run is writing here ({holder}); "
                    "wait for it to finish, or choose another folder"
                ) from None
            # no lock support (e.g. NFS without a lock daemon): run, but say so
            print(f"warning: {self.path}: cannot lock ({os.strerror(err.errno or 0)}); "
                  "make sure no other run writes to this folder", file=sys.stderr)  # fmt: skip
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        data = (json.dumps(info) + "\n").encode()
        with io_guard(self.path, "write the lock file"):
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # the file stays (removing it would race a waiting run); empty means free
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, object]) -> str:
    if not holder.get("pid"):
        return "pid unknown"
    text = f"pid {holder['pid']}"
    if holder.get("host"):
        text += f" on {holder['host']}"
    if holder.get("started"):
        text += f", since {holder['started']}"
    if holder.get("command"):
        text += f": {holder['command']}"
    return text


def check_space(folder: Path, images: int, transient_images: int = 0) -> str | None:
    """A warning when about ``images`` (+ ``transient_images`` held twice for a while) will not fit; else None."""
    need = (int(images) + int(transient_images)) * BYTES_PER_IMAGE
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if need <= free:
        return None
    return (
        f"warning: {folder}: this run needs about {_gb(need)} ({BYTES_PER_IMAGE // 1000} kB per image) "
        f"but {_gb(free)} are free; it will stop with one line when the disk is full, "
        "and --resume continues once there is space"
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a cluster job's allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int, option: str = "--workers") -> str | None:
    """A warning when ``workers`` exceeds the usable cores (no faster, and memory per worker); else None."""
    cores = usable_cores()
    if workers <= cores:
        return None
    return (
        f"warning: {option} {workers} is more than the {cores} CPU core(s) this process may use: "
        f"expect no speed-up, and {workers} workers' memory; {option} {cores} is enough"
    )


def warn(message: str | None) -> None:
    if message:
        print(message, file=sys.stderr)


__all__ = [
    "BYTES_PER_IMAGE",
    "LOCK_NAME",
    "RunLock",
    "check_space",
    "check_workers",
    "prepare_folder",
    "usable_cores",
    "warn",
]
