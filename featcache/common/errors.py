"""The failures every stage reports the same way, and the exit codes pipeline.py gives them.

    0 ok, 1 failure, 2 bad input, 3 disk full, 4 store corrupted, 5 out of memory, 130 interrupted

A full disk is not a bug: the user frees space and reruns, and the work written before is
kept. So it gets one line that names the path and the space needed, never a traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_DISK_FULL = 3
EXIT_CORRUPT = 4
EXIT_NO_MEMORY = 5
EXIT_INTERRUPTED = 130


class BadInput(ValueError):
    """A user's mistake (an argument, a file, a config key): one line naming it, exit 2, no traceback.

    Only user errors raise it; any other exception is a bug and keeps its traceback (exit 1).
    A ValueError, so callers that caught the old ValueErrors still catch these."""


class NotEnoughMemory(MemoryError):
    """A read refused before it starts: what it needs does not fit in what the process may allocate."""


class DiskFull(OSError):
    """No space left where a file was being written; the message names it and the space needed."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(errno.ENOSPC, message)
        self.message = message
        self.fatal = fatal  # HDF5 met it mid-flush: the process should exit without closing its files

    def __str__(self) -> str:
        return self.message


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC or EDQUOT, also as HDF5 reports it (an OSError with no errno, the reason in the text)."""
    for err in _chain(e):
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err)
        if isinstance(err, (OSError, RuntimeError)) and ("No space left on device" in text
                                                          or "Disk quota exceeded" in text):
            return True
    return False


def _chain(e: BaseException | None) -> list[BaseException]:
    seen = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free space on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


KEPT = "free some space and rerun the same command: work already written is kept"
KEPT_IF_READABLE = ("free some space and rerun the same command: it resumes the store, or keeps the file aside "
                    "and starts over if HDF5 left it unreadable")


def disk_full(path: str | os.PathLike, needed: int | None = None, what: str = "", fatal: bool = False) -> DiskFull:
    """The one-line error for a full disk at ``path``: what was written, the space needed and free."""
    free = free_bytes(path)
    need = f"needs about {fmt_bytes(needed)} more, " if needed else ""
    have = f"{fmt_bytes(free)} free" if free is not None else "free space unknown"
    return DiskFull(f"{path}: no space left on device writing {what or 'it'} ({need}{have}); "
                    f"{KEPT_IF_READABLE if fatal else KEPT}", fatal=fatal)
