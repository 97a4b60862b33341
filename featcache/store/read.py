"""Reading a store: its info, index, features, views, mirrored crops and blobs (no torch, no sklearn)."""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np

from featcache.store.errors import StoreCorrupted, StoreUnreadable
from featcache.store.schema import (
    PARTIAL_SUFFIX,
    StoreError,
    StoreInfo,
    _feature_keys,
    _open_h5,
    partial_path,
    resolve_path,
)

PARTIAL_RETRIES = 6  # an unfinished store is read while its writer flushes: a torn read is tried again
PARTIAL_RETRY_S = 60.0  # ... while the writer is seen writing, for at most this long
F = TypeVar("F", bound=Callable)


def _reads_partial(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.name.endswith(PARTIAL_SUFFIX) or (not p.exists() and partial_path(p).exists())


def _finished_meanwhile(path: str | os.PathLike) -> Path | None:
    """The final store, when ``path`` named (or resolved to) an unfinished one that its writer
    has since renamed into place."""
    p = Path(path)
    final = p.with_name(p.name[: -len(PARTIAL_SUFFIX)]) if p.name.endswith(PARTIAL_SUFFIX) else p
    return final if final.exists() and not partial_path(final).exists() else None


def retry_partial(fn: F) -> F:
    """Read an unfinished store again when a read fails mid-flush of its writer (HDF5 sees a
    chunk index or a chunk half updated: an error, or a checksum that fails), or from the final
    path when the writer finished in between. The writer sets a row's done flag only after its
    features are flushed, and renames the file without changing a row, so a read that succeeds
    is right."""
    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if getattr(_retrying, "active", False):  # a reader called by a reader: the outer one retries
            return fn(path, *args, **kwargs)
        _retrying.active = True
        try:
            return _with_retries(fn, path, *args, **kwargs)
        finally:
            _retrying.active = False
    return wrapper  # type: ignore[return-value]


_retrying = threading.local()


def _file_state(path: str | os.PathLike) -> tuple[int, int] | None:
    p = Path(path)
    p = p if p.name.endswith(PARTIAL_SUFFIX) else partial_path(p)
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _writer_holds_lock(path: str | os.PathLike) -> bool:
    """Whether a live process holds the store's write lock (``write.write_lock``), read from
    /proc/locks so the check takes no lock itself (a starting writer's would then fail)."""
    p = Path(path)
    final = p.with_name(p.name[: -len(PARTIAL_SUFFIX)]) if p.name.endswith(PARTIAL_SUFFIX) else p
    try:
        ino = os.stat(str(final) + ".lock").st_ino
        with open("/proc/locks") as f:  # "1: FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF"
            fields = [line.split() for line in f]
        return any(len(x) > 5 and x[1] == "FLOCK" and x[5].endswith(f":{ino}") for x in fields)
    except OSError:
        return False


def _with_retries(fn: Callable, path, *args, **kwargs):  # noqa: ANN001, ANN202
    """Retry a torn read of an unfinished store while its writer is alive (it holds the store's
    lock, or the file changes between tries: a busy or starved writer can be mid-flush on many
    tries in a row), for at most PARTIAL_RETRY_S; give up after PARTIAL_RETRIES tries that saw
    no change and no writer (one that died left a file that stays torn)."""
    partial = _reads_partial(path)
    still, state = 0, _file_state(path)
    deadline = time.monotonic() + PARTIAL_RETRY_S
    while True:
        try:
            return fn(path, *args, **kwargs)
        except (OSError, RuntimeError, KeyError, StoreError) as e:
            final = _finished_meanwhile(path) if partial else None
            if final is not None:
                path, partial = final, False
                continue
            if isinstance(e, StoreError) and not isinstance(e, (StoreCorrupted, StoreUnreadable)):
                raise  # the user's mistake (no such feature, incomplete store), not a race
            now = _file_state(path)
            still = 0 if now != state or _writer_holds_lock(path) else still + 1
            state = now
            if still >= PARTIAL_RETRIES or time.monotonic() > deadline or not _reads_partial(path):
                raise
            time.sleep(0.05 * 2 ** min(still, 4) * (0.5 + random.random()))  # jitter: not in step with its flushes


def _json_attr(f: h5py.File, name: str, path: object, kind: type) -> object:
    """An attribute written as JSON; anything else (a hand-made or damaged file) is one line."""
    try:
        value = json.loads(f.attrs[name])
    except (ValueError, TypeError) as e:
        raise StoreError(f"{path}: attribute {name!r} is not valid JSON ({e}); not a store this tool wrote") from None
    if not isinstance(value, kind):
        raise StoreError(f"{path}: attribute {name!r} is a {type(value).__name__}, expected a {kind.__name__}")
    return value


def _text(value: object) -> str | None:
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


@retry_partial
def read_info(path: str | os.PathLike, allow_partial: bool = True) -> StoreInfo:
    path = resolve_path(path, allow_partial=allow_partial)
    with _open_h5(path) as f:
        done = f["done"][:]
        ok = f["ok"][:]
        paths = f["paths"]
        err = f["errors"][:]
        errors = [(paths[int(r)].decode() if isinstance(paths[int(r)], bytes) else str(paths[int(r)]),
                   m.decode("utf-8", "replace")) for r, m in err]
        splits = f["split"].asstr()[:]
        names, counts = np.unique(splits[done & ok], return_counts=True)
        feats = _feature_keys(f)
        dtype = str(f[f"features/{next(iter(feats))}"].dtype) if feats else "float32"
        return StoreInfo(
            path=path,
            complete=bool(f.attrs.get("complete", False)),
            cache_key=str(f.attrs["cache_key"]),
            spec=_json_attr(f, "spec", path, dict),
            provenance=_json_attr(f, "provenance", path, dict),
            class_names=_json_attr(f, "class_names", path, list),
            default_feature=str(f.attrs["default_feature"]),
            source_root=_text(f.attrs.get("source_root")),
            features=feats,
            dtype=dtype,
            n_rows=int(len(done)),
            n_done=int(done.sum()),
            n_ok=int((done & ok).sum()),
            errors=errors,
            split_counts={str(k): int(v) for k, v in zip(names, counts)},
            views=int(f["views"].attrs["k"]) if "views" in f else 0,
            flip="flip" in f,
        )


def resolve_feature(info: StoreInfo, name: str | None) -> str:
    """Map a user's ``--layer`` (``layer4``, ``layer4/avgmax``, None) to a feature key."""
    if not name or name == "default":
        return info.default_feature
    if name in info.features:
        return name
    matches = [k for k in info.features if k.split("/")[0] in (name, name + ":in")]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise StoreError(f"{info.path}: layer {name!r} has several poolings; pick one of {matches}")
    close = difflib.get_close_matches(name, list(info.features), n=5, cutoff=0.3)
    raise StoreError(
        f"{info.path}: no feature set {name!r}; "
        f"it holds {sorted(info.features)}" + (f" (closest: {close})" if close else "")
    )


def read_rows(
    path: str | os.PathLike,
    feature: str | None = None,
    splits: Sequence[str] | None = None,
    allow_partial: bool = False,
    chunk_rows: int = 8192,
) -> dict[str, np.ndarray]:
    """Features, labels, paths and splits of the readable rows, read chunk by chunk.

    Rows that failed to decode, or are not yet written in a partial store, are left out.
    """
    key = resolve_feature(read_info(path, allow_partial=allow_partial), feature)
    index = read_index(path, allow_partial=allow_partial)
    if splits is not None:
        index = {k: v[np.isin(index["split"], list(splits))] for k, v in index.items()}
    X = read_features(path, key, index["rows"], allow_partial, chunk_rows)
    return {"X": X, **index, "feature": np.array(key)}


@retry_partial
def read_index(path: str | os.PathLike, allow_partial: bool = False) -> dict[str, np.ndarray]:
    """Labels, paths and splits of the readable rows (done and decoded), and their row numbers;
    no features, so a caller can choose rows before reading any."""
    info = read_info(path, allow_partial=allow_partial)
    if not info.complete and not allow_partial:
        raise StoreError(f"{info.path}: store is incomplete; rerun the extraction or pass --allow-partial")
    with _open_h5(info.path) as f:
        rows = np.flatnonzero(f["done"][:] & f["ok"][:])
        return {"y": f["labels"][:][rows], "paths": f["paths"].asstr()[:][rows],
                "split": f["split"].asstr()[:][rows], "rows": rows}


@retry_partial
def read_features(path: str | os.PathLike, feature: str, rows: np.ndarray, allow_partial: bool = False,
                  chunk_rows: int = 8192) -> np.ndarray:
    """``features/<feature>[rows]`` in the store's dtype (float16 stays float16), read in slices."""
    info = read_info(path, allow_partial=allow_partial)
    key = resolve_feature(info, feature)
    with _open_h5(info.path) as f:
        return _read_at(f[f"features/{key}"], np.asarray(rows, dtype=np.int64), chunk_rows)


def _read_at(ds: h5py.Dataset, index: np.ndarray, chunk_rows: int = 8192) -> np.ndarray:
    """``ds[index]`` for ascending or not, repeated or not, indices, read in contiguous slices."""
    out = np.empty((len(index),) + ds.shape[1:], dtype=ds.dtype)
    for start in range(0, ds.shape[0], chunk_rows):
        stop = min(start + chunk_rows, ds.shape[0])
        sel = (index >= start) & (index < stop)
        if sel.any():
            try:
                out[sel] = ds[start:stop][index[sel] - start]
            except OSError as e:  # a bad chunk somewhere in the slice: read the wanted chunks one by one
                out[sel] = _read_by_chunk(ds, index[sel], e)
    return out


def _read_by_chunk(ds: h5py.Dataset, index: np.ndarray, error: OSError) -> np.ndarray:
    """``ds[index]`` chunk by chunk; StoreCorrupted naming every bad chunk that holds a wanted row."""
    step = chunk_rows_of(ds)
    out = np.empty((len(index),) + ds.shape[1:], dtype=ds.dtype)
    bad = []
    for c in np.unique(index // step):
        a, b = int(c) * step, min(int(c) * step + step, ds.shape[0])
        sel = (index >= a) & (index < b)
        try:
            out[sel] = ds[a:b][index[sel] - a]
        except OSError:
            bad.append((a, b))
    if bad:
        raise StoreCorrupted(corruption_message(ds, bad, error))
    return out


def chunk_rows_of(ds: h5py.Dataset) -> int:
    return ds.chunks[0] if ds.chunks else max(1, ds.shape[0])


def bad_chunks(ds: h5py.Dataset, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
    """The row ranges [a, b) of the chunks in ``ds[start:stop]`` that cannot be read."""
    step = chunk_rows_of(ds)
    stop = ds.shape[0] if stop is None else stop
    bad: list[tuple[int, int]] = []
    for a in range(start - start % step, stop, step):
        b = min(a + step, ds.shape[0])
        try:
            ds[a:b]
        except OSError:
            bad.append((a, b))
    return bad


def corruption_message(ds: h5py.Dataset, bad: list[tuple[int, int]], error: Exception | None = None) -> str:
    """One line: the file, the dataset, the rows of its bad chunks, and what to do."""
    ranges = ", ".join(f"{a}-{b - 1}" for a, b in bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
    why = ("fail their fletcher32 checksum (the file is corrupted on disk)" if ds.fletcher32
           else f"cannot be read ({' '.join(str(error).split())})" if error is not None else "cannot be read")
    return (f"{ds.file.filename}: {ds.name} rows {ranges} {why}; `pipeline.py info --verify "
            f"{ds.file.filename}` checks the whole store; extract again with --overwrite to rewrite it")


@retry_partial
def read_views(path: str | os.PathLike, feature: str, rows: np.ndarray, allow_partial: bool = False) -> np.ndarray:
    """(len(rows), K, D) augmented-view features of store ``rows``; every row must have views."""
    info = read_info(path, allow_partial=allow_partial)
    if not info.views:
        raise StoreError(f"{info.path}: holds no augmented views; extract with --views K")
    key = resolve_feature(info, feature)
    rows = np.asarray(rows, dtype=np.int64)
    with _open_h5(info.path) as f:
        view_rows = f["view_rows"][:]
        at = np.searchsorted(view_rows, rows)
        missing = (at >= len(view_rows)) | (view_rows[np.minimum(at, len(view_rows) - 1)] != rows)
        if missing.any():
            raise StoreError(f"{info.path}: {int(missing.sum())} of the requested rows have no views "
                             f"(views are stored for {info.spec.get('views', {}).get('splits')} rows)")
        return _read_at(f[f"views/{key}"], at)


@retry_partial
def read_flip(path: str | os.PathLike, feature: str, rows: np.ndarray, allow_partial: bool = False) -> np.ndarray:
    """(len(rows), D) features of the mirrored center crops of store ``rows``."""
    info = read_info(path, allow_partial=allow_partial)
    if not info.flip:
        raise StoreError(f"{info.path}: holds no flipped crops; extract with --views K (which stores them)")
    key = resolve_feature(info, feature)
    with _open_h5(info.path) as f:
        return _read_at(f[f"flip/{key}"], np.asarray(rows, dtype=np.int64))


@retry_partial
def read_blob(path: str | os.PathLike, name: str, allow_partial: bool = True) -> bytes | None:
    """``/blobs/<name>`` of a store (None when absent); StoreError when its sha256 does not match."""
    info_path = resolve_path(path, allow_partial=allow_partial)
    with _open_h5(info_path) as f:
        if f"blobs/{name}" not in f:
            return None
        ds = f[f"blobs/{name}"]
        data = ds[:].tobytes()
        if hashlib.sha256(data).hexdigest() != ds.attrs.get("sha256"):
            raise StoreError(f"{info_path}: blob {name!r} does not match its sha256 (the file is corrupted)")
        return data


