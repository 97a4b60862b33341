"""Run the zoo on one store: fit on train, score on val (and test once), save, report.

Reports are rewritten after every model, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from classify.evaluate import ModelResult, chosen_params, evaluate
from classify.features import FeatureSet, load_features
from classify.models import build_model, get_entry, resolve_models
from classify.persist import SavedModel, save_model
from classify.preprocess import parse_preprocess
from classify.report import write_reports

log = logging.getLogger(__name__)


def safe_name(key: str) -> str:
    """A feature key as a file-name part: ``fc:in/none`` -> ``fc-in_none``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key.replace(":", "-"))


def _check_jobs(jobs: int) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or not (jobs >= 1 or jobs == -1):
        raise ValueError(f"jobs must be -1 (all cores) or an int >= 1; got {jobs!r}")
    return int(jobs)


def _search_extra(model: object) -> dict:
    """The sweep's CV score, so a report can show how far val and CV agree."""
    if not hasattr(model, "best_score_"):
        return {}
    return {"cv_score": float(model.best_score_), "cv_scoring": str(model.scoring), "cv_folds": int(model.n_splits_)}


def fit_one(name: str, data: FeatureSet, *, out_dir: Path, jobs: int = 1, seed: int = 0,
            preprocess: str | Sequence[str] | None = None, tensorboard: str | os.PathLike | None = None
            ) -> ModelResult:
    """Fit one registered model on train, evaluate it on val (and test), save it under out_dir/models."""
    entry = get_entry(name)
    stem = f"{safe_name(data.feature)}__{name}"
    log_dir = Path(tensorboard) / stem if tensorboard is not None and entry.uses_torch else None
    model = build_model(name, preprocess=preprocess, seed=seed, jobs=jobs, log_dir=log_dir)
    # One BLAS/OpenMP thread per fit; --jobs parallelizes the sweep's candidates instead. On
    # small cached features extra threads mostly spin: a tiny HGB fit took 48 s instead of 1 s
    # on a busy 2-core machine.
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        model.fit(data.train.X, data.train.y)
        fit_s = time.perf_counter() - start
        val = evaluate(model, data.val.X, data.val.y, class_names=data.class_names, paths=data.val.paths)
        test = (evaluate(model, data.test.X, data.test.y, class_names=data.class_names, paths=data.test.paths)
                if data.test is not None else None)
    steps = list(parse_preprocess(entry.preprocess if preprocess is None else preprocess))
    path = save_model(SavedModel(model=model, name=name, feature=data.feature, class_names=data.class_names,
                                 spec=data.spec, cache_key=data.cache_key, store=str(Path(data.store).resolve()),
                                 preprocess=steps), out_dir / "models" / f"{stem}.joblib")
    result = ModelResult(model=name, feature=data.feature, preprocess=steps, params=chosen_params(model), fit_s=fit_s,
                         val=val, val_source=data.val_source, test=test, model_path=str(path),
                         extra=_search_extra(model))
    log.info("%-11s val acc %.3f  fit %.2fs  %s", name, val["accuracy"], fit_s, result.params)
    return result


def _meta(data: FeatureSet, names: list[str], *, seed: int, jobs: int, preprocess: object) -> dict:
    return {
        "store": str(data.store), "feature": data.feature, "dim": data.dim, "cache_key": data.cache_key,
        "complete": data.complete, "spec": data.spec, "class_names": data.class_names,
        "n_classes": int(len(np.unique(data.train.y))), "counts": data.counts(), "val_source": data.val_source,
        "models": names, "seed": seed, "jobs": jobs, "preprocess": preprocess,
    }


def run_classify(store_path: str | os.PathLike, *, out_dir: str | os.PathLike, feature: str | None = None,
                 models: str | Sequence[str] | None = None, jobs: int = 1, seed: int = 0,
                 allow_partial: bool = False, tensorboard: str | os.PathLike | None = None,
                 preprocess: str | Sequence[str] | None = None) -> list[ModelResult]:
    """Fit every model in ``models`` (names, ``"all"``, ``"default"``; None: default) on one store.

    Writes ``out_dir/models/<feature>__<model>.joblib`` (+ ``.sha256``), ``metrics.json``,
    ``metrics.csv`` and ``summary.md``; returns one :class:`ModelResult` per model.
    """
    names = resolve_models(models)  # bad names and options fail before any data is read
    jobs = _check_jobs(jobs)
    if preprocess is not None:
        parse_preprocess(preprocess)
    if tensorboard is not None and not any(get_entry(n).uses_torch for n in names):
        log.warning("--tensorboard: none of %s trains a torch head; nothing will be logged", names)
    data = load_features(store_path, feature, allow_partial=allow_partial)
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    meta = _meta(data, names, seed=seed, jobs=jobs, preprocess=preprocess)
    log.info("%s: %s %d-d, %s; val: %s", data.store, data.feature, data.dim, data.counts(), data.val_source)
    results: list[ModelResult] = []
    for name in names:
        results.append(fit_one(name, data, out_dir=out, jobs=jobs, seed=seed, preprocess=preprocess,
                               tensorboard=tensorboard))
        write_reports(out, results, meta)
    return results
