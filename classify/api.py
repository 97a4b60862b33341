"""``compare``: the classifier zoo on a feature store or on any embeddings, results in memory.

    board = compare("features.h5")                      # a store made by extract
    board = compare(X, y, splits=splits)                # arrays made anywhere
    board.best.predict(X_new); board.to_pandas(); board.save("out/")

Nothing is written: :meth:`~classify.leaderboard.Leaderboard.save` writes what
``pipeline.py classify --out`` writes, when asked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from classify.budget import parse_budget
from classify.config import ClassifyOptions
from classify.features import FeatureSet, Split, nonfinite_rows
from classify.job import prepare
from classify.leaderboard import Leaderboard
from classify.models import resolve_models
from classify.plan import Budget, Shape, plan_zoo
from classify.zoo import compare_zoo
from featcache.common.errors import BadInput
from featcache.store import splits
from featcache.store.splits import HOLDOUT_FRACTION, HOLDOUT_SEED

ARRAYS = "embeddings"  # the backbone and feature names of rows fitted on plain arrays


def _options(models: str | Sequence[str], options: dict) -> ClassifyOptions:
    """Checked options (one clear error naming the first bad one), few-shot off unless asked."""
    if "out_dir" in options:
        raise BadInput("compare: out_dir= is gone; compare writes nothing: call .save(out_dir) on the leaderboard "
                       "it returns")
    options = {"few_shot": False, **options}
    if "views" in options:
        options["train_on_views"] = options.pop("views")
    unknown = sorted(set(options) - set(ClassifyOptions.__dataclass_fields__))
    if unknown:
        raise BadInput(f"compare: unknown option {unknown[0]}=; valid: "
                       f"{', '.join(sorted(ClassifyOptions.__dataclass_fields__))}")
    if isinstance(models, str):
        models = tuple(m.strip() for m in models.split(",") if m.strip())
    if isinstance(options.get("preprocess"), (list, tuple)):
        options["preprocess"] = ",".join(options["preprocess"]) or "none"
    opts = ClassifyOptions(models=tuple(models), **options)
    resolve_models(list(opts.models))  # unknown names fail before any data is read
    return opts


def compare(data: str | os.PathLike | np.ndarray, y: Any = None, *, models: str | Sequence[str] = "default",
            splits: Any = None, feature: str | None = None, **options: Any) -> Leaderboard:
    """Fit and rank ``models`` (names, ``"default"``, ``"all"``) on a store's feature set, or on
    arrays ``X`` (n, d) and ``y`` (n,) (integer or string labels; strings become the class names).

    ``splits``: with arrays, each row's ``"train"``, ``"val"`` or ``"test"``; without it, every
    row is train and val is a stratified 20% holdout of it (as for a store without a val split).
    ``feature``: a store's feature set (default: its default). ``options`` are
    :class:`~classify.config.ClassifyOptions`' fields with their defaults (``select``, ``jobs``,
    ``seed``, ``metric``, ``budget``, ``preprocess``, ``few_shot`` (off here)...). On a store,
    ``budget="auto"`` sizes the default zoo to its extraction as ``classify`` does; arrays have
    no extraction to size against, so every model asked for runs.

    Returns a :class:`~classify.leaderboard.Leaderboard` whose rows hold their fitted
    estimators: ``.best`` predicts. Writes nothing (with ``jobs`` above 1, joblib may memory-map
    large arrays for its worker processes in a temporary folder of its own, removed after)."""
    opts = _options(models, options)
    if isinstance(data, (str, os.PathLike)):
        if y is not None:
            raise BadInput(f"compare({os.fspath(data)!r}, y=...): a store holds its labels; pass model names as "
                           "models=[...]")
        if splits is not None:
            raise BadInput("compare: splits= applies to arrays; a store holds its own splits")
        # as `classify` compares a store (the same views, budget and plan), without its files
        return compare_zoo(*prepare(opts.job(features=os.fspath(data), out="-", feature=feature)))
    if feature is not None:
        raise BadInput("compare: feature= names a store's feature set; arrays are one feature set")
    fs = feature_set(data, y, splits)
    seconds = None if opts.budget.strip().lower() in ("auto", "none") else parse_budget(opts.budget)
    return compare_zoo(fs, plan_zoo(Shape.of(fs), opts, budget=Budget(seconds=seconds)))


def feature_set(X: Any, y: Any, row_splits: Any = None) -> FeatureSet:
    """Arrays as a feature set, every problem a :class:`BadInput` naming the argument."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise BadInput(f"compare: X must be 2-D (rows, features); got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise BadInput(f"compare: X must hold real numbers; got dtype {X.dtype}")
    X = np.asarray(X, dtype=np.float32)
    if y is None:
        raise BadInput("compare: arrays need labels: compare(X, y)")
    if isinstance(y, (str, bytes)) or not hasattr(y, "__len__"):
        raise BadInput(f"compare: y must be an array of labels, got {type(y).__name__}")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise BadInput(f"compare: y has shape {y.shape}; expected ({len(X)},), one label per row of X")
    bad = nonfinite_rows(X)
    if bad:
        raise BadInput(f"compare: {bad} rows of X hold NaN or infinite values")
    class_names, codes = np.unique(y, return_inverse=True)
    names = [str(c) for c in class_names]
    if len(names) < 2:
        raise BadInput(f"compare: y holds one class ({names[0]!r}); a classifier needs at least two")
    where = np.full(len(y), "train", dtype=object) if row_splits is None else np.asarray(row_splits, dtype=object)
    if where.shape != (len(X),):
        raise BadInput(f"compare: splits has shape {where.shape}; expected ({len(X)},), one per row of X")
    unknown = sorted(set(where.tolist()) - set(splits.SPLITS))
    if unknown:
        raise BadInput(f"compare: splits holds {unknown[0]!r}; expected train, val or test")
    codes = codes.astype(np.int64)
    small = [names[c] for c in range(len(names)) if np.sum(codes[where == "train"] == c) < 2]
    if small and not np.any(where == "val"):
        raise BadInput(f"compare: class {small[0]!r} has fewer than 2 train rows; a val holdout needs 2 of each "
                       "(give more rows, or splits= with a val split)")
    at, val_source = splits.assign(codes, where.astype(str), "compare: y", fraction=HOLDOUT_FRACTION,
                                   seed=HOLDOUT_SEED)
    paths = np.array([f"row{i}" for i in range(len(X))])

    def part(name: str) -> Split:
        i = at[name]
        return Split(X[i], codes[i], paths[i], i)

    train = part("train")
    seen = set(train.y.tolist())
    for name in ("val", "test"):
        unseen = sorted(set(codes[at[name]].tolist()) - seen)
        if unseen:
            raise BadInput(f"compare: {name} holds class {names[unseen[0]]!r}, which has no train rows")
    return FeatureSet(store="", feature=ARRAYS, class_names=names, spec={"backbone": ARRAYS}, cache_key="",
                      complete=True, train=train, val=part("val"), test=part("test") if len(at["test"]) else None,
                      val_source=val_source)
