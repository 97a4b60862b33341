"""Load one feature set of a store as train / val / test arrays.

Train fits, val selects and is the reported score, test is reported once beside it. A store
without a val split (one tree of class folders) gets a stratified 20% holdout from train,
with a fixed seed so every model and every run compares on the same rows.

A store extracted with ``--views K`` also gives the train rows' augmented views (never those
of rows held out for val) and every row's mirrored crop, for flip test-time augmentation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classify import memory
from classify.table import shown_path
from featcache.common.errors import BadInput
from featcache.store import (
    StoreError,
    read_features,
    read_flip,
    read_index,
    read_info,
    read_views,
    resolve_feature,
    splits,
)
from featcache.store.splits import HOLDOUT_FRACTION, HOLDOUT_SEED, VAL_HOLDOUT, VAL_SPLIT  # noqa: F401 - re-exported

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Split:
    X: np.ndarray  # (n, d) in the store's dtype (float32, or float16 until a model reads a chunk)
    y: np.ndarray  # (n,) int64 index into class_names
    paths: np.ndarray  # (n,) str, relative to the image root
    rows: np.ndarray | None = None  # (n,) store rows
    views: np.ndarray | None = None  # (n, K, d) augmented views, when loaded
    flip: np.ndarray | None = None  # (n, d) mirrored center crops, when loaded

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> Split:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Split(self.X[index], self.y[index], self.paths[index], pick(self.rows), pick(self.views),
                     pick(self.flip))


@dataclass(frozen=True)
class FeatureSet:
    """One store's feature set, split, with what a saved model must remember of it."""

    store: Path  # the file read (the .partial one when allow_partial)
    feature: str  # e.g. "fc:in/none"
    class_names: list[str]
    spec: dict  # the store's spec: backbone, weights, transform, ...
    cache_key: str
    complete: bool
    train: Split
    val: Split
    test: Split | None
    val_source: str  # VAL_SPLIT or VAL_HOLDOUT

    @property
    def dim(self) -> int:
        return int(self.train.X.shape[1])

    @property
    def n_views(self) -> int:
        return 0 if self.train.views is None else int(self.train.views.shape[1])

    @property
    def has_flip(self) -> bool:
        return all(s.flip is not None for s in (self.train, self.val, self.test) if s is not None)

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test) if self.test else 0}


def _read_split(path: Path, key: str, index: dict, at: np.ndarray, allow_partial: bool) -> Split:
    """The rows ``at`` (positions in ``index``) with their features, read straight from the store:
    no whole-store array, no float32 copy of a float16 store."""
    X = read_features(path, key, index["rows"][at], allow_partial)
    if X.dtype not in (np.float16, np.float32):
        X = X.astype(np.float32)
    return Split(X, index["y"][at].astype(np.int64), index["paths"][at], index["rows"][at])


def nonfinite_rows(X: np.ndarray, chunk: int = 16384) -> int:
    """Rows holding a NaN or an infinity, counted a chunk at a time (no n x d mask)."""
    return int(sum((~np.isfinite(X[i:i + chunk])).any(axis=1).sum() for i in range(0, len(X), chunk)))


def _with_extras(path: Path, key: str, split: Split, views: bool, flip: bool, allow_partial: bool) -> Split:
    extra = {}
    if views:
        extra["views"] = np.asarray(read_views(path, key, split.rows, allow_partial), dtype=np.float32)
        if not np.isfinite(extra["views"]).all():
            raise BadInput(f"{path}: some train views are NaN or infinite; re-extract the store")
    if flip:
        extra["flip"] = np.asarray(read_flip(path, key, split.rows, allow_partial), dtype=np.float32)
    return Split(split.X, split.y, split.paths, split.rows, **extra)


def _names(labels: np.ndarray, class_names: list[str]) -> list[str]:
    return [class_names[i] if 0 <= i < len(class_names) else str(i) for i in sorted(set(labels.tolist()))]


def _check_train(path: Path, y: np.ndarray, class_names: list[str]) -> None:
    """Before any feature is read: a classifier needs labeled train rows of two classes."""
    if len(y) == 0:
        raise BadInput(f"{path}: no labeled train rows; a classifier needs a train split with labels")
    if len(set(y.tolist())) < 2:
        raise BadInput(f"{path}: the train split has only one class ({_names(y, class_names)[0]!r}); "
                         "a classifier needs at least two")


def _check_others(path: Path, train: Split, others: dict[str, Split], class_names: list[str]) -> None:
    """Classes no model can predict, and rows no model can read, each error naming the file."""
    seen = set(train.y.tolist())
    for name, split in others.items():
        unseen = sorted(set(split.y.tolist()) - seen)
        if unseen:
            raise BadInput(f"{path}: {name} has classes with no train rows: "
                             f"{_names(np.array(unseen), class_names)}; no model can predict them")
    for name, split in {"train": train, **others}.items():
        bad = nonfinite_rows(split.X)
        if bad:
            raise BadInput(f"{path}: {bad} {name} rows have NaN or infinite features; re-extract the store")


def load_features(path: str | os.PathLike, feature: str | None = None, *, allow_partial: bool = False,
                  holdout: float = HOLDOUT_FRACTION, holdout_seed: int = HOLDOUT_SEED, views: bool = False,
                  flip: bool = False) -> FeatureSet:
    """Read ``feature`` (a key or layer name; None: the store's default) split for classification.

    Rows without a label (-1) or outside train/val/test are left out. An incomplete store
    raises :class:`StoreError` unless ``allow_partial`` (then only written rows are used).
    ``views`` loads the train rows' augmented views and ``flip`` every split's mirrored crops;
    a store without them raises :class:`StoreError`.
    """
    info = read_info(path, allow_partial=allow_partial)
    if not info.complete and not allow_partial:
        raise StoreError(f"{info.path}: store is incomplete; rerun the extraction or pass --allow-partial")
    key = resolve_feature(info, feature)
    if views and not info.views:
        raise StoreError(f"{info.path}: holds no augmented views (extract with --views K), so train_on_views on cannot "
                         "train on them")
    if flip and not info.flip:
        raise StoreError(f"{info.path}: holds no mirrored crops (extract with --views K), so --tta flip cannot "
                         "average them")
    index = read_index(info.path, allow_partial=allow_partial)
    labeled = index["y"] >= 0
    ignored = int((~labeled | ~np.isin(index["split"], ["train", "val", "test"])).sum())
    if ignored:
        log.warning("%s: %d rows are unlabeled or outside train/val/test; not used", shown_path(info.path), ignored)
    if not info.complete:
        log.warning("%s: incomplete store: using the %d of %d rows written so far", shown_path(info.path), info.n_done,
                    info.n_rows)
    _check_train(info.path, index["y"][labeled & (index["split"] == "train")], info.class_names)
    at, val_source = splits.assign(index["y"], index["split"], str(info.path), fraction=holdout, seed=holdout_seed)
    if val_source == VAL_HOLDOUT:
        log.info("%s: no val split; holding out %d of %d train rows (stratified, seed %d)",
                 shown_path(info.path), len(at["val"]), len(at["train"]) + len(at["val"]), holdout_seed)
    n_rows = sum(len(at[s]) for s in ("train", "val", "test"))
    memory.check_fits(str(info.path), key, n_rows, info.features[key], np.dtype(info.dtype).itemsize,
                      view_values=len(at["train"]) * info.views * info.features[key] if views else 0)
    train, val, test = (_read_split(info.path, key, index, at[s], allow_partial) for s in ("train", "val", "test"))
    others = {"val": val, **({"test": test} if len(test) else {})}
    _check_others(info.path, train, others, info.class_names)
    train = _with_extras(info.path, key, train, views, flip, allow_partial)
    val = _with_extras(info.path, key, val, False, flip, allow_partial)
    test = _with_extras(info.path, key, test, False, flip, allow_partial) if len(test) else test
    return FeatureSet(store=info.path, feature=key, class_names=list(info.class_names), spec=dict(info.spec),
                      cache_key=info.cache_key, complete=info.complete, train=train, val=val,
                      test=test if len(test) else None, val_source=val_source)
