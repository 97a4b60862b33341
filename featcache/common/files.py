"""Files written so that a crash never leaves half of one, and their checksums.

No torch and no scikit-learn here: both stages and the report share it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from featcache.common.errors import disk_full, is_disk_full


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _temp_beside(path: Path) -> tuple[int, Path]:
    """A new, unique temp file in ``path``'s folder (same file system, so the rename is atomic),
    created with the usual umask permissions rather than mkstemp's 0600."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: could not create a temporary file beside it")


def replace_atomically(path: Path, write: Callable[[BinaryIO], object], size: int | None = None) -> str:
    """Run ``write`` on a temp file beside ``path``, fsync, rename over ``path``; return its sha256.

    On a full disk the temp file goes, the old ``path`` stays as it was, and the error is one
    :class:`DiskFull` line naming ``path`` (``size``: the bytes it needed, when known)."""
    try:
        fd, tmp = _temp_beside(path)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(path, size, path.name) from None
        raise
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            written = f.tell()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            written = written or tmp.stat().st_size
        except OSError:
            pass
        tmp.unlink(missing_ok=True)
        if isinstance(e, Exception) and is_disk_full(e):
            raise disk_full(path, size or (written or None), path.name) from None
        raise
    return digest


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new, never half."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    replace_atomically(path, lambda f: f.write(raw), size=len(raw))
    return path


def safe_name(text: str) -> str:
    """Text as a file-name part, the same everywhere: ``fc:in/none`` -> ``fc-in_none``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text.replace(":", "-"))
