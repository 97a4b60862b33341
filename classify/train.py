"""Run the zoo on one store: fit on train, score on val (and test once), save, report.

Reports are rewritten after every model, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from classify.evaluate import ModelResult, chosen_params, evaluate
from classify.features import FeatureSet, Split, load_features
from classify.models import build_model, get_entry, resolve_models
from classify.persist import SavedModel, save_model
from classify.preprocess import parse_preprocess
from classify.report import write_reports

log = logging.getLogger(__name__)


def safe_name(key: str) -> str:
    """A feature key as a file-name part: ``fc:in/none`` -> ``fc-in_none``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", key.replace(":", "-"))


def _check_jobs(jobs: int) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or not (jobs >= 1 or jobs == -1):
        raise ValueError(f"jobs must be -1 (all cores) or an int >= 1; got {jobs!r}")
    return int(jobs)


def _search_extra(model: object) -> dict:
    """The sweep's CV score, so a report can show how far val and CV agree."""
    if not hasattr(model, "best_score_"):
        return {}
    return {"cv_score": float(model.best_score_), "cv_scoring": str(model.scoring), "cv_folds": int(model.n_splits_)}


VIEWS_CHOICES = ("auto", "on", "off", "both")
TTA_CHOICES = ("none", "flip", "both")


def variant_name(name: str, views: bool = False, tta: str | None = None) -> str:
    """The leaderboard name of a model trained on views and/or scored with flip TTA."""
    return name + ("+views" if views else "") + ("+flip" if tta == "flip" else "")


def training_arrays(train: Split, views: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(X, y, groups): the center crops, then with ``views`` every image's K views after them;
    groups name each sample's source image (centers first, as the grouped splitters expect)."""
    if not views:
        return train.X, train.y, None
    if train.views is None:
        raise ValueError("training on views needs a FeatureSet loaded with views=True")
    n, k, d = train.views.shape
    X = np.concatenate([train.X, train.views.reshape(n * k, d)])
    y = np.concatenate([train.y, np.repeat(train.y, k)])
    groups = np.concatenate([np.arange(n), np.repeat(np.arange(n), k)])
    return X, y, groups


def fit_params(model: object, groups: np.ndarray | None) -> dict:
    """Where ``groups`` must go: the sweep's CV splitter, and a final step whose fit takes groups."""
    if groups is None:
        return {}
    params: dict = {"groups": groups} if hasattr(model, "cv") else {}
    pipe = getattr(model, "estimator", model)
    final = pipe.steps[-1] if hasattr(pipe, "steps") else None
    if final is not None and "groups" in inspect.signature(final[1].fit).parameters:
        params[f"{final[0]}__groups"] = groups
    return params


def fit_one(name: str, data: FeatureSet, *, out_dir: Path, jobs: int = 1, seed: int = 0,
            preprocess: str | Sequence[str] | None = None, tensorboard: str | os.PathLike | None = None,
            views: bool = False, tta: Sequence[str | None] = (None,)) -> list[ModelResult]:
    """Fit one registered model on train (and its views), evaluate it on val (and test) once per
    TTA setting, save it under out_dir/models; one result per TTA setting."""
    entry = get_entry(name)
    label = variant_name(name, views)
    stem = f"{safe_name(data.feature)}__{safe_name(label)}"
    log_dir = Path(tensorboard) / stem if tensorboard is not None and entry.uses_torch else None
    model = build_model(name, preprocess=preprocess, seed=seed, jobs=jobs, log_dir=log_dir)
    X, y, groups = training_arrays(data.train, views)
    if entry.uses_torch:
        import torch  # noqa: F401 - loaded before the clock starts: a fit time should not include an import
    # One BLAS/OpenMP thread per fit; --jobs parallelizes the sweep's candidates instead. On
    # small cached features extra threads mostly spin: a tiny HGB fit took 48 s instead of 1 s
    # on a busy 2-core machine.
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        model.fit(X, y, **fit_params(model, groups))
        fit_s = time.perf_counter() - start
    steps = list(parse_preprocess(entry.preprocess if preprocess is None else preprocess))
    extra = {**_search_extra(model), **({"views": data.n_views, "train_samples": int(len(y))} if views else {})}
    results = []
    for t in tta:
        with threadpool_limits(limits=1):
            val, test = (evaluate(model, s.X, s.y, class_names=data.class_names, paths=s.paths,
                                  X_flip=s.flip if t == "flip" else None) if s is not None else None
                         for s in (data.val, data.test))
        full = variant_name(name, views, t)
        path = save_model(SavedModel(model=model, name=full, feature=data.feature, class_names=data.class_names,
                                     spec=data.spec, cache_key=data.cache_key, store=str(Path(data.store).resolve()),
                                     preprocess=steps, views=data.n_views if views else 0, tta=t or "none"),
                          out_dir / "models" / f"{safe_name(data.feature)}__{safe_name(full)}.joblib")
        results.append(ModelResult(model=full, feature=data.feature, preprocess=steps, params=chosen_params(model),
                                   fit_s=fit_s, val=val, val_source=data.val_source, test=test, model_path=str(path),
                                   extra={**extra, **({"tta": t} if t else {})}))
        log.info("%-16s val acc %.3f  fit %.2fs  %s", full, val["accuracy"], fit_s, results[-1].params)
    return results


def _meta(data: FeatureSet, names: list[str], *, seed: int, jobs: int, preprocess: object) -> dict:
    return {
        **({"views": data.n_views} if data.n_views else {}),
        "store": str(data.store), "feature": data.feature, "dim": data.dim, "cache_key": data.cache_key,
        "complete": data.complete, "spec": data.spec, "class_names": data.class_names,
        "n_classes": int(len(np.unique(data.train.y))), "counts": data.counts(), "val_source": data.val_source,
        "models": names, "seed": seed, "jobs": jobs, "preprocess": preprocess,
    }


def run_classify(store_path: str | os.PathLike, *, out_dir: str | os.PathLike, feature: str | None = None,
                 models: str | Sequence[str] | None = None, jobs: int = 1, seed: int = 0,
                 allow_partial: bool = False, tensorboard: str | os.PathLike | None = None,
                 preprocess: str | Sequence[str] | None = None, views: str = "auto", tta: str = "none"
                 ) -> list[ModelResult]:
    """Fit every model in ``models`` (names, ``"all"``, ``"default"``; None: default) on one store.

    ``views``: train on the store's augmented views too (``auto``: when it has them; ``both``:
    each model with and without, as separate rows). ``tta``: ``flip`` scores the average of the
    center and mirrored crops (``both``: with and without). Writes
    ``out_dir/models/<feature>__<model>.joblib`` (+ ``.sha256``), ``metrics.json``,
    ``metrics.csv`` and ``summary.md``; returns one :class:`ModelResult` per model and variant.
    """
    names = resolve_models(models)  # bad names and options fail before any data is read
    jobs = _check_jobs(jobs)
    if views not in VIEWS_CHOICES:
        raise ValueError(f"--views {views!r}: expected one of {', '.join(VIEWS_CHOICES)}")
    if tta not in TTA_CHOICES:
        raise ValueError(f"--tta {tta!r}: expected one of {', '.join(TTA_CHOICES)}")
    if preprocess is not None:
        parse_preprocess(preprocess)
    if tensorboard is not None and not any(get_entry(n).uses_torch for n in names):
        log.warning("--tensorboard: none of %s trains a torch head; nothing will be logged", names)
    if views == "auto":
        from extract.store import read_info

        views = "on" if read_info(store_path, allow_partial=allow_partial).views else "off"
    view_modes = {"on": [True], "off": [False], "both": [False, True]}[views]
    tta_modes = {"none": [None], "flip": ["flip"], "both": [None, "flip"]}[tta]
    data = load_features(store_path, feature, allow_partial=allow_partial, views=views != "off",
                         flip=tta != "none")
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    meta = _meta(data, names, seed=seed, jobs=jobs, preprocess=preprocess)
    log.info("%s: %s %d-d, %s; val: %s", data.store, data.feature, data.dim, data.counts(), data.val_source)
    results: list[ModelResult] = []
    for name in names:
        for on in view_modes:
            results += fit_one(name, data, out_dir=out, jobs=jobs, seed=seed, preprocess=preprocess,
                               tensorboard=tensorboard, views=on, tta=tta_modes)
            write_reports(out, results, meta)
    return results
