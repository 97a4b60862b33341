"""``compare``: the classifier zoo on one feature store, results in memory, for notebooks."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace

from classify.evaluate import ModelResult
from classify.persist import load_model
from classify.train import run_classify


def compare(features: str | os.PathLike, models: str | Sequence[str] = "default", *, feature: str | None = None,
            out_dir: str | os.PathLike | None = None, **options: object) -> list[ModelResult]:
    """Fit and score ``models`` (names, ``"default"``, ``"all"``) on one feature set of a store.

    Returns one :class:`~classify.evaluate.ModelResult` per model and variant, each with its
    fitted ``estimator``, ``val``/``test`` scores (accuracy with its Wilson interval, per-class
    accuracy, confusion matrix, misclassified images...) and, under ``select="cv"``, its
    repeated-CV score in ``extra["cv"]``. Nothing is written unless ``out_dir`` is given (then
    models, results.json, metrics.json and summary.md go there, as ``pipeline.py classify --out``, and a rerun
    into the same ``out_dir`` reuses what an earlier one finished, its estimators loaded from their
    saved files; ``resume=False`` fits them again).
    ``options`` are :class:`~classify.config.ClassifyOptions`' fields, with their defaults
    (``select``, ``jobs``, ``seed``, ``train_on_views``, ``tta``, ``protocol``, ``budget``,
    ``preprocess``...), except ``few_shot``: off unless ``out_dir`` is given, since the curve is
    written to the results file, not returned."""
    options.setdefault("few_shot", out_dir is not None)
    if out_dir is not None:
        results = run_classify(features, out_dir=out_dir, feature=feature, models=models, **options)
        return [_with_estimator(r) for r in results]
    with tempfile.TemporaryDirectory(prefix="featcache-compare-") as tmp:
        results = run_classify(features, out_dir=tmp, feature=feature, models=models, **options)
    return [replace(r, model_path=None, extra={k: ({kk: vv for kk, vv in v.items() if kk != "oof"}
                                                   if k == "cv" else v) for k, v in r.extra.items()})
            for r in results]


def _with_estimator(result: ModelResult) -> ModelResult:
    """A result reused from an earlier run, with its estimator read back from its (verified) file."""
    if result.estimator is not None or result.model_path is None:
        return result
    return replace(result, estimator=load_model(result.model_path).model)
