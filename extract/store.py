"""The HDF5 feature store: rows written by index, resumable, atomically completed.

A store is the only thing the two stages share, so this module imports neither
torch nor scikit-learn. Layout (schema version 1)::

    /                      attrs: schema_version, complete, cache_key, spec (json),
                           provenance (json), class_names (json), default_feature,
                           source_root (the folder ``paths`` are relative to)
    /paths    (N,) str     relative to the source root
    /labels   (N,) int64   -1 where unlabeled
    /split    (N,) str     train / val / test / all
    /done     (N,) bool    row written (resume skips these)
    /ok       (N,) bool    False where the image could not be read (features are NaN)
    /errors   (E,) {row, message}
    /features/<layer>/<pool>  (N, D) float32|float16, attrs: layer, side, pool, raw_shape
    /blobs/<name>  (B,) uint8, attrs: sha256; e.g. ``openvino_int8.xml``/``.bin``, the
                           quantized network that made an int8 store's features

With ``extract --views K`` (augmented feature cache), also::

    /view_rows (M,) int64  the rows that have views (the train rows), ascending
    /views/<layer>/<pool>  (M, K, D) features of K seeded RandomResizedCrop+flip views of each
    /flip/<layer>/<pool>   (N, D) features of every row's mirrored center crop (flip TTA)

The file is written as ``OUT.partial`` and renamed to ``OUT`` only once every row
is flushed, so a file at the final path is always complete and an interrupted run
resumes from the partial one. Rows are flushed batch by batch; a SIGKILL can lose
at most the batch in flight, never corrupt earlier rows (``done`` is set after the
features it vouches for).
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

SCHEMA_VERSION = 1
PARTIAL_SUFFIX = ".partial"
ERROR_DTYPE = np.dtype([("row", "<i8"), ("message", "S400")])
_STR = h5py.string_dtype("utf-8")


class StoreError(ValueError):
    """A store that cannot be used as asked; the message names the file."""


@dataclass(frozen=True)
class FeatureSpec:
    """One pooled feature set in a store: a hooked layer and a pooling."""

    layer: str  # dotted module name, e.g. "layer4" or "fc"
    side: str  # "output" or "input" of that module
    pool: str  # avg | max | avgmax | gem | cls | flatten | none
    dim: int
    raw_shape: tuple[int, ...] = ()  # per-sample shape before pooling

    @property
    def key(self) -> str:
        name = self.layer + (":in" if self.side == "input" else "")
        return f"{name}/{self.pool}"


@dataclass(frozen=True)
class StoreInfo:
    """What a store holds, read from its metadata without loading features."""

    path: Path
    complete: bool
    cache_key: str
    spec: dict
    provenance: dict
    class_names: list[str]
    default_feature: str
    features: dict[str, int]  # key -> dim
    dtype: str
    n_rows: int
    n_done: int
    n_ok: int
    errors: list[tuple[str, str]] = field(default_factory=list)
    split_counts: dict[str, int] = field(default_factory=dict)
    views: int = 0  # augmented views per view row (0: none stored)
    flip: bool = False  # mirrored center crops stored for every row


def partial_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + PARTIAL_SUFFIX)


def _open_h5(path: Path, mode: str = "r") -> h5py.File:
    try:
        f = h5py.File(path, mode)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such feature store") from None
    except OSError as e:
        reason = " ".join(str(e).split())  # HDF5's report can span lines; the CLI prints one
        if "lock" in reason.lower():
            raise StoreError(f"{path}: another process has it open for writing (HDF5 file lock); "
                             "wait for the extraction to finish") from None
        raise StoreError(f"{path}: not a readable HDF5 feature store (truncated or not HDF5?): {reason}") from None
    if "schema_version" not in f.attrs or "cache_key" not in f.attrs:
        f.close()
        raise StoreError(f"{path}: an HDF5 file, but not a feature store (no schema_version)")
    version = int(f.attrs["schema_version"])
    if version > SCHEMA_VERSION:
        f.close()
        raise StoreError(f"{path}: schema version {version} is newer than this tool's {SCHEMA_VERSION}")
    return f


def resolve_path(path: str | os.PathLike, allow_partial: bool = False) -> Path:
    """The file to read: ``path`` itself, or its ``.partial`` twin when allowed."""
    path = Path(path)
    if path.exists():
        return path
    if partial_path(path).exists():
        if allow_partial:
            return partial_path(path)
        raise StoreError(
            f"{path}: only an incomplete store exists ({partial_path(path).name}); "
            "rerun the extraction to finish it, or pass --allow-partial"
        )
    raise StoreError(f"{path}: no such feature store")


def _feature_keys(f: h5py.File) -> dict[str, int]:
    keys: dict[str, int] = {}
    if "features" in f:
        for layer, group in f["features"].items():
            for pool, ds in group.items():
                keys[f"{layer}/{pool}"] = int(ds.shape[1])
    return keys


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
            spec=json.loads(f.attrs["spec"]),
            provenance=json.loads(f.attrs["provenance"]),
            class_names=json.loads(f.attrs["class_names"]),
            default_feature=str(f.attrs["default_feature"]),
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
            out[sel] = ds[start:stop][index[sel] - start]
    return out


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


def read_flip(path: str | os.PathLike, feature: str, rows: np.ndarray, allow_partial: bool = False) -> np.ndarray:
    """(len(rows), D) features of the mirrored center crops of store ``rows``."""
    info = read_info(path, allow_partial=allow_partial)
    if not info.flip:
        raise StoreError(f"{info.path}: holds no flipped crops; extract with --views K (which stores them)")
    key = resolve_feature(info, feature)
    with _open_h5(info.path) as f:
        return _read_at(f[f"flip/{key}"], np.asarray(rows, dtype=np.int64))


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


# --------------------------------------------------------------------------- writing


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """An advisory lock next to the store, so a second writer fails fast and clearly."""
    lock_path = Path(str(path) + ".lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{path}: cannot create lock file {lock_path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # and leave the file: it is the holder's lock
            raise StoreError(f"{path}: another process is writing this store (lock {lock_path} is held)") from None
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


@dataclass
class Manifest:
    """The rows of a store: what to extract, in order. Built by ``sources``."""

    root: str
    paths: list[str]
    labels: np.ndarray
    splits: list[str]
    class_names: list[str]
    fingerprint: str  # sha256 over paths, sizes, mtimes, labels and splits

    def __len__(self) -> int:
        return len(self.paths)


class StoreWriter:
    """Writes one store; created by :func:`open_for_write`, used as a context manager."""

    def __init__(self, path: Path, f: h5py.File, status: str):
        self.path = path
        self.status = status  # "new" | "resume" | "hit"
        self._f = f
        self.pending = np.flatnonzero(~f["done"][:]) if f is not None else np.empty(0, np.int64)

    def write(self, rows: np.ndarray, features: dict[str, np.ndarray], errors: dict[int, str] | None = None,
              *, flips: dict[str, np.ndarray] | None = None,
              views: tuple[np.ndarray, dict[str, np.ndarray]] | None = None) -> None:
        """Write a batch at its row indices, then mark those rows done and flush.

        ``flips`` are aligned with ``features``; ``views`` is (view rows (M,), {key: (M, K, D)})
        for the batch's rows that have views. Both land before the done flags, like the features.
        """
        if flips:
            self._write_rows("flip", rows, flips)
        if views is not None and len(views[0]):
            at = np.searchsorted(self._f["view_rows"][:], np.asarray(views[0], dtype=np.int64))
            self._write_rows("views", at, views[1])
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
        self._f.attrs["complete"] = True
        self._f.attrs["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._f.close()
        os.replace(partial_path(self.path), self.path)
        return self.path

    def close(self) -> None:
        if self._f is not None and self._f.id.valid:
            self._f.close()


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
                compression=compression, fillvalue=np.nan,
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
                             chunks=(rows, views.k, fs.dim), compression=compression, fillvalue=np.nan)
        if views.flip:
            rows = min(max(n, 1), _chunk_rows(fs.dim, dtype.itemsize))
            f.create_dataset(f"flip/{fs.key}", shape=(n, fs.dim), dtype=dtype, chunks=(rows, fs.dim),
                             compression=compression, fillvalue=np.nan)


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
        f = h5py.File(tmp, "r+")
        _drop_unfinished_rows(f)
        return StoreWriter(path, f, "resume")
    tmp.unlink(missing_ok=True)
    _create(path, manifest, features, cache_key=cache_key, spec=spec, provenance=provenance,
            default_feature=default_feature, dtype=dtype, compression=compression, views=views, blobs=blobs)
    return StoreWriter(path, h5py.File(tmp, "r+"), "new")
