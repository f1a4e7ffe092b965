"""Advisory file locks, so that two photosphere processes never write one output at once.

A lock is an ``flock`` on a hidden file beside the output (``.NAME.lock``), released when the
holder exits or dies (the kernel drops it with the descriptor: a killed run never leaves a stale
lock). The lock file records the holder's PID for the error message and is left in place:
deleting it would race with a process that has just opened it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import BusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, behave as before
    fcntl = None  # type: ignore[assignment]


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``.NAME.lock`` in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True, what: str = "output",
              hint: str = "wait for it to finish or choose another output") -> Iterator[Path]:
    """Hold the exclusive lock of ``path`` for the body; yields the lock file's path.

    wait: block until the lock is free (short critical sections, e.g. one table update), or
    raise :class:`~photosphere.errors.BusyError` at once when another process holds it
    (long jobs such as a grid build: a second run refuses instead of duplicating the work).
    The folder of ``path`` must exist.
    """
    lock = lock_path(path)
    if fcntl is None:  # pragma: no cover
        yield lock
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise BusyError(f"{what} {path} is being written by another photosphere process "
                            f"(pid {holder}, lock {lock}); {hint}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield lock
    finally:
        os.close(fd)  # closing the descriptor releases the flock
