"""The HDF5 feature store's schema: the contract between extraction, classification and the report.

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
    /features/<layer>/<pool>  (N, D) float32|float16, attrs: layer, side, pool, raw_shape;
                           chunked, with HDF5's fletcher32 checksum per chunk (views and flip too)
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

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from featcache.store.errors import StoreError, StoreUnreadable  # noqa: F401 - StoreError re-exported: the stages import it here

SCHEMA_VERSION = 1
PARTIAL_SUFFIX = ".partial"
ERROR_DTYPE = np.dtype([("row", "<i8"), ("message", "S400")])
_STR = h5py.string_dtype("utf-8")


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
    source_root: str | None = None  # the folder ``paths`` are relative to, as extraction wrote it


def partial_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + PARTIAL_SUFFIX)


def _open_h5(path: Path, mode: str = "r") -> h5py.File:
    """Open a store; an unfinished one (``.partial``) is read without HDF5's file lock, so a reader
    never blocks, nor is blocked by, the extraction writing it (reads retry torn states: read.py)."""
    path = Path(path)
    reading_partial = mode == "r" and path.name.endswith(PARTIAL_SUFFIX)
    try:
        f = h5py.File(path, mode, locking=False) if reading_partial else h5py.File(path, mode)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such feature store") from None
    except OSError as e:
        reason = " ".join(str(e).split())  # HDF5's report can span lines; the CLI prints one
        if "unable to lock file" in reason.lower():  # not "sblock" of a truncated file
            raise StoreError(f"{path}: another process has it open for writing (HDF5 file lock); "
                             "wait for the extraction to finish") from None
        raise StoreUnreadable(f"{path}: not a readable HDF5 feature store (truncated or not HDF5?): {reason}") from None
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


FEATURE_GROUPS = ("features", "views", "flip")  # the per-row arrays, chunked and checksummed


def datasets_under(f: h5py.File, groups: tuple[str, ...] | None = FEATURE_GROUPS) -> list[h5py.Dataset]:
    """Every dataset in ``groups`` (None: in the whole file), in that order."""
    found: list[h5py.Dataset] = []

    def visit(_: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append(obj)

    for group in groups or ("/",):
        if group in f:
            f[group].visititems(visit)
    return found


def _feature_keys(f: h5py.File) -> dict[str, int]:
    keys: dict[str, int] = {}
    if "features" in f:
        for layer, group in f["features"].items():
            for pool, ds in group.items():
                keys[f"{layer}/{pool}"] = int(ds.shape[1])
    return keys



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

