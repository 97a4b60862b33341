"""Read one member of an uncompressed tar shard by offset, without unpacking the shard.

Webdataset shards keep images as tar members. A source path ``ROOT/train-000.tar/train/ants/0013.jpg``
names the member ``train/ants/0013.jpg`` of the shard ``ROOT/train-000.tar``. Extraction decodes such
rows and the report draws their thumbnails, so the reader lives here, in the package every stage may
import. Standard library only (no stage, no torch).

One header scan per shard (a 512-byte read per member, never its data; ``tarfile`` for headers the fast
reader does not know) gives each member's data offset. The index is kept per process for the last few
shards, keyed by the shard's size and mtime, so a rewritten shard is scanned again rather than read at
stale offsets.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

__all__ = ["Member", "MemberMissing", "ShardError", "compression", "index", "member_name", "open_source",
           "members", "read_member", "scan", "source_stat", "split_member_path"]

CACHED_SHARDS = 64  # rows come in shard order, so a worker needs few indexes at once; an index of 1e4 members ~ 2.4 MB
_ZERO_BLOCK = bytes(512)
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
          b"\x04\x22\x4d\x18": "lz4"}


class Member(NamedTuple):
    offset: int  # of the data, from the start of the shard
    size: int
    mtime: int  # as the tar header stores it (seconds)


class ShardError(OSError):
    """A shard that is not an uncompressed tar, or that changed under a reader; names the shard."""


class MemberMissing(ShardError):
    """The shard has no regular-file member of that name."""


def member_name(name: str) -> str:
    """A tar member name as a path below the shard spells it (``./a//b`` -> ``a/b``), so lookups match."""
    if name.startswith(("/", "./")) or "//" in name or "/./" in name or name.endswith(("/", "/.")):
        return PurePosixPath(name.lstrip("/")).as_posix()
    return name  # the common case, without pathlib's cost (a scan meets 10^6 names)


def compression(path: str | os.PathLike) -> str | None:
    """The compressor whose magic bytes start the file (gzip, bzip2, xz, zstd, lz4), or None."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


class _Unusual(Exception):
    """A header the fast reader leaves to tarfile (sparse, base-256 sizes, global pax headers...)."""


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        raise _Unusual  # base-256 (GNU, for sizes of 8 GiB and more)
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax(data: bytes) -> dict[str, str]:
    """Records ``LEN key=value\\n`` of a pax extended header (utf-8)."""
    out, pos = {}, 0
    while pos < len(data):
        length = int(data[pos:data.index(b" ", pos)])
        key, _, value = data[data.index(b" ", pos) + 1:pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _fast_members(f: BinaryIO, file_size: int) -> list[tuple[str, Member]]:
    """Regular files from ustar/GNU/pax headers: one 512-byte read per member, checksums checked.

    tarfile does the same reads but costs ~30 us a member in Python; this is several times faster.
    A member whose data runs past the end (a truncated shard) is kept, so reading it fails for that
    row only; the scan stops there, as tarfile does.
    """
    out, offset, long_name, pax = [], 0, None, {}
    while offset + 512 <= file_size:
        f.seek(offset)
        block = f.read(512)
        if len(block) < 512 or block == _ZERO_BLOCK:
            break
        if sum(block[:148]) + 256 + sum(block[156:]) != _octal(block[148:156]):  # chksum counted as spaces
            raise _Unusual
        size, kind, data = _octal(block[124:136]), block[156:157], offset + 512
        if kind in (b"L", b"x"):  # the next header's long name / pax records
            f.seek(data)
            extra = f.read(size)
            if kind == b"L":
                long_name = extra.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            else:
                pax = _pax(extra)
            offset = data + (size + 511) // 512 * 512
            continue
        if kind in (b"g", b"S", b"K") or "GNU.sparse.map" in pax or "GNU.sparse.size" in pax:
            raise _Unusual
        size = int(pax.get("size", size))
        name = pax.get("path") or long_name
        if name is None:
            name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            prefix = block[345:500].split(b"\0", 1)[0] if block[257:265] == b"ustar\x0000" else b""
            if prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        if kind in (b"0", b"\0", b"7") and not name.endswith("/"):
            mtime = int(float(pax["mtime"])) if "mtime" in pax else _octal(block[136:148])
            out.append((member_name(name), Member(data, size, mtime)))
        offset, long_name, pax = data + (size + 511) // 512 * 512, None, {}
    if offset == 0:
        raise _Unusual  # no header at all: let tarfile say why
    return out


def members(tar: str | os.PathLike) -> list[tuple[str, Member]]:
    """Every regular-file member of an uncompressed tar, in tar order, by normalized name."""
    try:
        with open(tar, "rb", buffering=0) as f:  # unbuffered: 512 bytes a header, not 8 KiB of image data
            try:
                return _fast_members(f, os.fstat(f.fileno()).st_size)
            except (_Unusual, ValueError):
                pass
        with tarfile.open(tar, "r:") as tf:
            return [(member_name(ti.name), Member(ti.offset_data, ti.size, int(ti.mtime))) for ti in tf if ti.isreg()]
    except tarfile.ReadError as e:
        try:
            packed = compression(tar)
        except OSError:
            packed = None
        if packed:
            raise ShardError(f"{tar} is {packed}-compressed; compressed shards cannot be read by offset, "
                             "use uncompressed .tar shards (webdataset's default)") from None
        raise ShardError(f"{tar} is not a tar file ({e})") from None


def scan(tar: str | os.PathLike) -> dict[str, Member]:
    """:func:`members` by name (a name repeated in the shard: the last, as tar extracts it)."""
    return dict(members(tar))


_cache: OrderedDict[str, tuple[int, int, dict[str, Member]]] = OrderedDict()
_lock = threading.Lock()


def _indexed(tar: str | os.PathLike) -> tuple[int, int, dict[str, Member]]:
    path = os.path.abspath(tar)
    st = os.stat(path)
    with _lock:
        hit = _cache.get(path)
        if hit and hit[:2] == (st.st_size, st.st_mtime_ns):
            _cache.move_to_end(path)
            return hit
    entry = (st.st_size, st.st_mtime_ns, scan(path))  # scanned outside the lock: threads read different shards
    with _lock:
        _cache[path] = entry
        _cache.move_to_end(path)
        while len(_cache) > CACHED_SHARDS:
            _cache.popitem(last=False)
    return entry


def index(tar: str | os.PathLike) -> dict[str, Member]:
    """:func:`scan`, cached per process for the last CACHED_SHARDS shards while their size and mtime hold."""
    return _indexed(tar)[2]


def split_member_path(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(shard, member name) when a component of ``path`` ending in ``.tar`` is a regular file, else None."""
    parts = Path(path).parts
    for i, part in enumerate(parts[:-1]):  # a member name needs at least one component after the shard
        if part.lower().endswith(".tar"):
            shard = Path(*parts[:i + 1])
            try:
                if stat.S_ISREG(os.stat(shard).st_mode):
                    return shard, "/".join(parts[i + 1:])
            except OSError:
                continue
    return None


def read_member(tar: str | os.PathLike, name: str) -> bytes:
    """The bytes of member ``name``: one seek and read at its offset."""
    size, mtime, members = _indexed(tar)
    m = members.get(member_name(name))
    if m is None:
        raise MemberMissing(f"{name}: not in shard {tar}")
    with open(tar, "rb") as f:
        f.seek(m.offset)
        data = f.read(m.size)
        st = os.fstat(f.fileno())
    if (st.st_size, st.st_mtime_ns) != (size, mtime):  # rewritten since the scan: the offsets may be stale
        raise ShardError(f"{tar}: changed while reading {name}; run again to rescan it")
    if len(data) != m.size:  # the header promises more than the file holds
        raise ShardError(f"{tar}: truncated shard: {name} has {len(data)} of its {m.size} bytes")
    return data


def open_source(path: str | os.PathLike) -> BinaryIO:
    """A readable binary file for a source path: a tar member's bytes, or the plain file itself."""
    split = split_member_path(path)
    if split is None:
        return open(path, "rb")
    return io.BytesIO(read_member(*split))


def source_stat(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime_ns) of a file; of a tar member, (its size, its shard's mtime_ns). Raises OSError."""
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except NotADirectoryError:  # a path through a regular file: maybe a shard member
        split = split_member_path(path)
        if split is None:
            raise
        m = index(split[0]).get(member_name(split[1]))
        if m is None:
            raise MemberMissing(f"{split[1]}: not in shard {split[0]}") from None
        return m.size, os.stat(split[0]).st_mtime_ns
