"""Writing a store: the lock, the resumable writer, the status of an existing file against a job."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from featcache.common.errors import DiskFull, disk_full, fmt_bytes, free_bytes, is_disk_full
from featcache.store.schema import (
    _STR,
    ERROR_DTYPE,
    SCHEMA_VERSION,
    FeatureSpec,
    Manifest,
    StoreError,
    _open_h5,
    datasets_under,
    partial_path,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- writing


@contextmanager
def write_lock(path: Path, wait: bool = False) -> Iterator[None]:
    """An advisory lock next to the store: a second writer fails fast and clearly, or with ``wait``
    (two jobs sharing a cache dir) blocks until the first is done, then finds its store a hit."""
    lock_path = Path(str(path) + ".lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{path}: cannot create lock file {lock_path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(fd)  # and leave the file: it is the holder's lock
                raise StoreError(f"{path}: another process is writing this store (lock {lock_path} is held)") from None
            log.info("%s: another process is writing this store; waiting for it", path)
            fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C interrupts the wait
        try:  # the holder may have unlinked the file between our open and our flock: then lock the new one
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(lock_path)  # while still holding it, so no one can lock a file that is going away
        except OSError:
            pass
        os.close(fd)


def _spec_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if old.get(k) != new.get(k)]
    return ", ".join(diff) or "cache key only"



METADATA_RESERVE = 512 << 10  # what a flush may add beside the chunks: chunk index nodes, heaps, the superblock


class StoreWriter:
    """Writes one store; created by :func:`open_for_write`, used as a context manager.

    Each batch first checks that the disk holds what it will write (its rows plus every chunk
    it may allocate): HDF5 that meets a full disk mid-flush is left in a state where closing
    the file, even at exit, can crash the process. So a full disk is met here, between
    batches, as a :class:`DiskFull` that leaves the store closed cleanly and resumable.
    """

    def __init__(self, path: Path, f: h5py.File, status: str):
        self.path = path
        self.status = status  # "new" | "resume" | "hit"
        self._f = f
        self.broken = False  # HDF5 met a full disk itself: the file must not be touched again
        self.pending = np.flatnonzero(~f["done"][:]) if f is not None else np.empty(0, np.int64)
        self._chunked = [] if f is None else [  # (group, dataset name, rows per chunk, bytes per chunk)
            (ds.name.split("/")[1], ds.name, ds.chunks[0], int(np.prod(ds.chunks)) * ds.dtype.itemsize)
            for ds in datasets_under(f)]

    def _bytes_for(self, rows: np.ndarray, view_at: np.ndarray, exact: bool) -> int:
        """Disk space a batch may take: every chunk it touches that is not on disk yet, whole (a
        chunk is allocated whole when first flushed; a compressed one may move on each rewrite).
        Not ``exact``: a bound that asks HDF5 nothing, as if every chunk it touches were new."""
        need = METADATA_RESERVE
        for group, name, step, chunk in self._chunked:
            index = view_at if group == "views" else rows
            if not len(index):
                continue
            if not exact:
                need += (len(index) // step + 2) * chunk
                continue
            ds = self._f[name]
            for c in np.unique(np.asarray(index, dtype=np.int64) // step):
                coord = (int(c) * step,) + (0,) * (ds.ndim - 1)
                if ds.compression or ds.id.get_chunk_info_by_coord(coord).byte_offset is None:
                    need += chunk
        return need

    def _check_space(self, rows: np.ndarray, view_at: np.ndarray) -> None:
        free = free_bytes(self._f.filename)
        if free is None or free >= self._bytes_for(rows, view_at, exact=False):
            return
        need = self._bytes_for(rows, view_at, exact=True)
        if free < need:
            left = self.left()
            self.close()
            raise disk_full(partial_path(self.path), need - free, f"the feature store ({left} rows left)")

    def left(self) -> int:
        return int((~self._f["done"][:]).sum()) if self._f is not None and self._f.id.valid else len(self.pending)

    def write(self, rows: np.ndarray, features: dict[str, np.ndarray], errors: dict[int, str] | None = None,
              *, flips: dict[str, np.ndarray] | None = None,
              views: tuple[np.ndarray, dict[str, np.ndarray]] | None = None) -> None:
        """Write a batch at its row indices, then mark those rows done and flush.

        ``flips`` are aligned with ``features``; ``views`` is (view rows (M,), {key: (M, K, D)})
        for the batch's rows that have views. Both land before the done flags, like the features.
        """
        view_at = (np.searchsorted(self._f["view_rows"][:], np.asarray(views[0], dtype=np.int64))
                   if views is not None and len(views[0]) else np.empty(0, np.int64))
        self._check_space(np.asarray(rows), view_at)
        try:
            with _quiet_disk_full():
                self._write(rows, features, errors, flips, view_at, views[1] if views is not None else None)
        except Exception as e:
            if not is_disk_full(e):
                raise
            self.broken = True  # closing it now could crash the process; pipeline.py exits without closing
            raise disk_full(partial_path(self.path), None, "the feature store (HDF5 met the full disk itself)",
                            fatal=True) from None

    def _write(self, rows: np.ndarray, features: dict[str, np.ndarray], errors: dict[int, str] | None,
               flips: dict[str, np.ndarray] | None, view_at: np.ndarray,
               views: dict[str, np.ndarray] | None) -> None:
        if flips:
            self._write_rows("flip", rows, flips)
        if views is not None and len(view_at):
            self._write_rows("views", view_at, views)
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        contiguous = hi - lo == len(rows)
        for key, values in features.items():
            ds = self._f[f"features/{key}"]
            values = np.asarray(values)[order].astype(ds.dtype, copy=False)
            if contiguous:
                ds[lo:hi] = values
            else:
                ds[rows] = values
        if errors:
            bad = np.array(sorted(errors), dtype=np.int64)
            self._f["ok"][bad] = False
            e = self._f["errors"]
            n = e.shape[0]
            e.resize((n + len(bad),))
            e[n:] = np.array([(r, errors[int(r)].encode("utf-8", "replace")[:400]) for r in bad], dtype=ERROR_DTYPE)
        self._f.flush()  # features, ok and errors reach the file before the done flags that vouch for them
        if contiguous:
            self._f["done"][lo:hi] = True
        else:
            self._f["done"][rows] = True
        self._f.flush()

    def _write_rows(self, group: str, index: np.ndarray, values: dict[str, np.ndarray]) -> None:
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        index = index[order]
        for key, v in values.items():
            ds = self._f[f"{group}/{key}"]
            v = np.asarray(v)[order].astype(ds.dtype, copy=False)
            if int(index[-1]) + 1 - int(index[0]) == len(index):
                ds[int(index[0]):int(index[-1]) + 1] = v
            else:
                ds[index] = v

    def finish(self) -> Path:
        """Mark the store complete and move it to its final path."""
        done = self._f["done"][:]
        if not done.all():
            raise StoreError(f"{self.path}: {int((~done).sum())} rows were never written; rerun to resume")
        self._check_space(np.empty(0, np.int64), np.empty(0, np.int64))
        try:
            with _quiet_disk_full():
                self._f.attrs["complete"] = True
                self._f.attrs["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                self._f.close()
        except Exception as e:
            if not is_disk_full(e):
                raise
            self.broken = True
            raise disk_full(partial_path(self.path), None, "the feature store's last flush", fatal=True) from None
        os.replace(partial_path(self.path), self.path)
        return self.path

    def close(self) -> None:
        if self._f is not None and self._f.id.valid and not self.broken:
            self._f.close()


@contextmanager
def _quiet_disk_full(keep: bool = False) -> Iterator[None]:
    """Drop h5py's reports of a full disk from its object deallocs (DiskFull says it once).

    Cython prints those through both ``sys.excepthook`` and ``sys.unraisablehook``; the
    filters pass everything else on. ``keep``: leave them installed (the file is broken, and
    its objects may yet be freed)."""
    hooks = sys.excepthook, sys.unraisablehook
    if not getattr(hooks[1], "quiet_disk_full", False):
        def excepthook(kind, value, tb) -> None:  # noqa: ANN001
            if not is_disk_full(value):
                hooks[0](kind, value, tb)

        def unraisablehook(unraisable) -> None:  # noqa: ANN001
            if not is_disk_full(unraisable.exc_value):
                hooks[1](unraisable)

        unraisablehook.quiet_disk_full = True
        sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
    broken = False
    try:
        yield
    except Exception as e:
        broken = is_disk_full(e)
        raise
    finally:
        if not (keep or broken):
            sys.excepthook, sys.unraisablehook = hooks


def partial_problem(path: Path) -> str | None:
    """Why an unfinished store cannot be resumed (None: it can): its chunk index must be readable.

    HDF5 that met a full disk mid-flush can leave datasets pointing past the end of the file."""
    try:
        with h5py.File(path, "r") as f:
            f["done"][:]
            size = f.id.get_filesize()
            for ds in datasets_under(f, None):
                if ds.chunks is None:
                    continue
                n = ds.id.get_num_chunks()
                if n:
                    last = ds.id.get_chunk_info(n - 1)
                    if last.byte_offset + last.size > size:
                        return f"{ds.name} points past the end of the file"
    except Exception as e:  # noqa: BLE001 - any HDF5 failure here means: do not resume into it
        return " ".join(str(e).split())
    return None


def store_bytes(n_rows: int, features: Sequence[FeatureSpec], dtype: str, views: ViewLayout | None = None,
                n_view_rows: int | None = None) -> int:
    """What ``n_rows`` rows of features take on disk uncompressed, their views and flips included."""
    row = sum(fs.dim for fs in features) * np.dtype(dtype).itemsize
    m = (len(views.rows) if views is not None else 0) if n_view_rows is None else n_view_rows
    k, flip = (views.k, views.flip) if views is not None else (0, False)
    return int(n_rows * row * (1 + flip) + m * k * row)


def check_fits(path: str | os.PathLike, needed: int, what: str, force: bool = False) -> None:
    """Refuse to start a write the disk cannot hold (``force``: warn and start anyway)."""
    free = free_bytes(Path(path).parent)
    if free is None or needed <= free:
        return
    msg = (f"{path}: {what} needs about {fmt_bytes(needed)} and its disk has {fmt_bytes(free)} free; free some "
           "space or choose another --out (or pass --force to start anyway)")
    if not force:
        raise DiskFull(msg)
    log.warning("%s; starting anyway (--force)", msg.split("; free some")[0])


def _chunk_rows(dim: int, itemsize: int) -> int:
    # ~1 MiB chunks: big enough for fast sequential reads, small enough for resume granularity.
    return int(max(16, min(4096, (1 << 20) // max(1, dim * itemsize))))


@dataclass(frozen=True)
class ViewLayout:
    """Which rows get augmented views, how many, and whether every row gets a mirrored crop."""

    rows: np.ndarray  # (M,) ascending store rows
    k: int
    flip: bool
    attrs: dict  # how the views were drawn (seed, scale, ratio, splits), for provenance


def _create(path: Path, manifest: Manifest, features: Sequence[FeatureSpec], *, cache_key: str, spec: dict,
            provenance: dict, default_feature: str, dtype: str, compression: str | None,
            views: ViewLayout | None = None, blobs: dict[str, bytes] | None = None) -> None:
    n = len(manifest)
    tmp = partial_path(path)
    with h5py.File(tmp, "w") as f:
        f.attrs.update(
            schema_version=SCHEMA_VERSION,
            complete=False,
            cache_key=cache_key,
            spec=json.dumps(spec, sort_keys=True),
            provenance=json.dumps(provenance, sort_keys=True),
            class_names=json.dumps(manifest.class_names),
            default_feature=default_feature,
            source_root=manifest.root,
        )
        f.create_dataset("paths", data=np.array(manifest.paths, dtype=object), dtype=_STR)
        f.create_dataset("labels", data=np.asarray(manifest.labels, dtype=np.int64))
        f.create_dataset("split", data=np.array(manifest.splits, dtype=object), dtype=_STR)
        f.create_dataset("done", shape=(n,), dtype=bool, fillvalue=False)
        f.create_dataset("ok", shape=(n,), dtype=bool, fillvalue=True)
        f.create_dataset("errors", shape=(0,), maxshape=(None,), dtype=ERROR_DTYPE, chunks=(256,))
        np_dtype = np.dtype(dtype)
        for fs in features:
            rows = min(max(n, 1), _chunk_rows(fs.dim, np_dtype.itemsize))
            ds = f.create_dataset(
                f"features/{fs.key}", shape=(n, fs.dim), dtype=np_dtype, chunks=(rows, fs.dim),
                compression=compression, fillvalue=np.nan, fletcher32=True,
            )
            ds.attrs.update(layer=fs.layer, side=fs.side, pool=fs.pool, raw_shape=json.dumps(list(fs.raw_shape)))
        if views is not None:
            _create_views(f, n, features, views, np_dtype, compression)
        for name, data in (blobs or {}).items():
            ds = f.create_dataset(f"blobs/{name}", data=np.frombuffer(data, dtype=np.uint8))
            ds.attrs["sha256"] = hashlib.sha256(data).hexdigest()


def _create_views(f: h5py.File, n: int, features: Sequence[FeatureSpec], views: ViewLayout, dtype: np.dtype,
                  compression: str | None) -> None:
    m = len(views.rows)
    f.create_dataset("view_rows", data=np.asarray(views.rows, dtype=np.int64))
    group = f.create_group("views")
    group.attrs.update(k=views.k, **{k: json.dumps(v) for k, v in views.attrs.items()})
    for fs in features:
        if views.k and m:
            rows = min(m, max(1, _chunk_rows(fs.dim * views.k, dtype.itemsize)))
            f.create_dataset(f"views/{fs.key}", shape=(m, views.k, fs.dim), dtype=dtype,
                             chunks=(rows, views.k, fs.dim), compression=compression, fillvalue=np.nan,
                             fletcher32=True)
        if views.flip:
            rows = min(max(n, 1), _chunk_rows(fs.dim, dtype.itemsize))
            f.create_dataset(f"flip/{fs.key}", shape=(n, fs.dim), dtype=dtype, chunks=(rows, fs.dim),
                             compression=compression, fillvalue=np.nan, fletcher32=True)


def _drop_unfinished_rows(f: h5py.File) -> None:
    """Undo what an interrupted batch wrote before its rows were marked done.

    Such rows are written again on resume, so their ``ok`` flags and error entries (and a
    blank entry an interrupted append leaves) must go, or a row would be reported twice.
    """
    done, ok = f["done"][:], f["ok"][:]
    if not ok[~done].all():
        ok |= ~done
        f["ok"][:] = ok
    err = f["errors"][:]
    rows = err["row"]
    valid = (rows >= 0) & (rows < len(done))
    valid[valid] &= done[rows[valid]] & ~ok[rows[valid]]
    _, first = np.unique(rows[valid], return_index=True)  # a finished row's entry precedes any blank copy
    keep = np.sort(np.flatnonzero(valid)[first])
    if len(keep) < len(err):
        f["errors"].resize((len(keep),))
        if len(keep):
            f["errors"][:] = err[keep]
    f.flush()


def store_status(path: str | os.PathLike, cache_key: str, spec: dict, overwrite: bool = False) -> str:
    """What :func:`open_for_write` would do: "hit", "resume" or "new"; raises where it would refuse.

    Reads only, so a job can check before it prepares its network (a hit needs none).
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: is a directory; the store needs a file name (e.g. {path / 'features.h5'})")
    if not path.parent.is_dir():
        raise StoreError(f"{path}: output directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise StoreError(f"{path}: output directory {path.parent} is not writable")
    if path.exists():
        try:
            with _open_h5(path) as f:
                old_key, old_spec = str(f.attrs["cache_key"]), json.loads(f.attrs["spec"])
                old_complete = bool(f.attrs.get("complete", False))
        except StoreError:
            if not overwrite:
                raise StoreError(f"{path}: exists but is not a readable feature store; "
                                 "pass --overwrite to replace it") from None
        else:
            if old_key == cache_key and old_complete:
                return "hit"
            if not overwrite:
                raise StoreError(
                    f"{path}: holds features for another spec (differs in: {_spec_diff(old_spec, spec)}); "
                    "pass --overwrite to replace it or choose another --out"
                )
    tmp = partial_path(path)
    if tmp.exists():
        try:
            with _open_h5(tmp) as f:
                same = str(f.attrs["cache_key"]) == cache_key
                old_spec = json.loads(f.attrs["spec"])
        except StoreError:
            same, old_spec = False, None  # an unreadable partial of ours holds nothing to keep
        if same:
            return "resume"
        if old_spec is not None and not overwrite:
            raise StoreError(
                f"{tmp}: an unfinished extraction with another spec (differs in: {_spec_diff(old_spec, spec)}); "
                "pass --overwrite to discard it"
            )
    return "new"


def open_for_write(
    path: str | os.PathLike,
    manifest: Manifest,
    features: Sequence[FeatureSpec],
    *,
    cache_key: str,
    spec: dict,
    provenance: dict,
    default_feature: str,
    dtype: str = "float32",
    compression: str | None = None,
    overwrite: bool = False,
    views: ViewLayout | None = None,
    blobs: dict[str, bytes] | None = None,
) -> StoreWriter:
    """Decide between cache hit, resume and a fresh store; never destroy a store silently.

    ``blobs`` (name -> bytes) are kept in the new store under ``/blobs/<name>``, e.g. the int8
    network that made its features. Must be called inside :func:`write_lock` for the same path.
    """
    path = Path(path)
    status = store_status(path, cache_key, spec, overwrite)
    if status == "hit":
        return StoreWriter(path, None, "hit")
    tmp = partial_path(path)
    if status == "resume":
        problem = partial_problem(tmp)
        if problem is None:
            f = h5py.File(tmp, "r+")
            _drop_unfinished_rows(f)
            return StoreWriter(path, f, "resume")
        kept = tmp.with_name(f"{tmp.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(tmp, kept)
        log.warning("%s: cannot be resumed (%s); kept as %s, starting over", tmp, problem, kept.name)
        status = "new"
    tmp.unlink(missing_ok=True)
    _create(path, manifest, features, cache_key=cache_key, spec=spec, provenance=provenance,
            default_feature=default_feature, dtype=dtype, compression=compression, views=views, blobs=blobs)
    return StoreWriter(path, h5py.File(tmp, "r+"), status)

