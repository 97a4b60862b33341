"""Scores of a fitted classifier on one split, as plain JSON-ready data.

Every number comes from sklearn's own metric functions except top-k, which ranks the
classifier's probabilities (or decision scores) directly so that it works when a split
lacks some of the trained classes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
)
from sklearn.pipeline import Pipeline

from classify import clock, stats
from featcache.common.errors import BadInput
from featcache.store.rows import ResultRow

MAX_TOP_K = 5


def to_jsonable(obj: Any) -> Any:
    """numpy scalars and arrays, tuples and NaN made JSON-safe (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def chosen_params(model: Any) -> dict:
    """The sweep's ``best_params_`` (without the ``clf__`` prefix), or what the final step chose."""
    if hasattr(model, "best_params_"):
        return to_jsonable({k.removeprefix("clf__").removeprefix("estimator__"): v
                            for k, v in model.best_params_.items()})
    final = model[-1] if isinstance(model, Pipeline) else model
    return to_jsonable(dict(getattr(final, "chosen_params_", {})))


def class_scores(model: Any, X: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(probabilities, scores) with one column per ``model.classes_``; probabilities are None
    for a model without ``predict_proba`` (then scores come from ``decision_function``)."""
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))  # its own dtype: log_loss's sum-to-1 check scales with it
        return proba, proba
    if hasattr(model, "decision_function"):
        s = np.asarray(model.decision_function(X), dtype=np.float64)
        return None, np.column_stack([-s, s]) if s.ndim == 1 else s
    return None, None


def top_k_accuracy(y: np.ndarray, scores: np.ndarray, classes: np.ndarray, n_classes: int) -> dict[str, float]:
    """``{"top1": ..., ..., "topK"}`` for k = 1 .. min(5, n_classes - 1) (just top1 for two classes)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return {f"top{k}": float((classes[order[:, :k]] == y[:, None]).any(axis=1).mean())
            for k in range(1, max(1, min(MAX_TOP_K, n_classes - 1)) + 1)}


def predict_tta(model: Any, X: np.ndarray, X_flip: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(predictions, probabilities, scores); with ``X_flip`` (features of the mirrored crops) the
    probabilities (or decision scores) of both crops are averaged and predictions follow them."""
    if X_flip is None:
        proba, scores = class_scores(model, X)
        # Predictions follow the probabilities (every zoo model predicts their argmax): one
        # forward instead of two, which is a whole neighbour search for kNN.
        pred = np.asarray(model.classes_)[np.argmax(proba, axis=1)] if proba is not None else model.predict(X)
        return np.asarray(pred), proba, scores
    proba, scores = class_scores(model, X)
    proba_f, scores_f = class_scores(model, X_flip)
    classes = np.asarray(model.classes_)
    if scores is None:
        raise BadInput(f"{type(model).__name__} has neither predict_proba nor decision_function; "
                         "flip TTA cannot average it")
    proba = None if proba is None else (proba + proba_f) / 2
    scores = proba if proba is not None else (scores + scores_f) / 2
    return classes[np.argmax(scores, axis=1)], proba, scores


def evaluate(model: Any, X: np.ndarray, y: np.ndarray, *, class_names: list[str],
             paths: np.ndarray | None = None, X_flip: np.ndarray | None = None) -> dict:
    """Accuracy with its Wilson 95% interval, balanced accuracy, macro-F1, top-k, log loss (with
    probabilities), per-class accuracy, confusion matrix, sklearn's classification report, the
    misclassified rows, and each image's right/wrong as bits (for paired tests between models).

    ``X_flip``: score the average of each image's center and mirrored crops (flip TTA)."""
    return evaluate_with_proba(model, X, y, class_names=class_names, paths=paths, X_flip=X_flip)[0]


def evaluate_with_proba(model: Any, X: np.ndarray, y: np.ndarray, *, class_names: list[str],
                        paths: np.ndarray | None = None, X_flip: np.ndarray | None = None
                        ) -> tuple[dict, np.ndarray | None]:
    """(:func:`evaluate`'s scores, the probabilities they came from): a soft vote reuses them."""
    start = clock.now()
    pred, proba, scores = predict_tta(model, X, X_flip)
    predict_s = clock.now() - start
    classes = np.asarray(model.classes_)
    names = [class_names[int(c)] if 0 <= int(c) < len(class_names) else str(c) for c in classes]
    name_of = dict(zip(classes.tolist(), names))
    acc = accuracy_score(y, pred)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": acc,
        "accuracy_ci": stats.accuracy_interval(acc, len(y)),  # Wilson 95%
        **stats.correctness(pred, y, None if paths is None else [str(p) for p in paths]),  # for paired tests
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro", zero_division=0),
        "top_k": top_k_accuracy(y, scores, classes, len(classes)) if scores is not None else {},
        "log_loss": log_loss(y, proba, labels=classes) if proba is not None else None,
        "per_class_accuracy": {name_of[c]: float(np.mean(pred[y == c] == c)) for c in classes if np.any(y == c)},
        "confusion_matrix": {"labels": names, "matrix": confusion_matrix(y, pred, labels=classes)},
        "report": classification_report(y, pred, labels=classes, target_names=names, output_dict=True,
                                        zero_division=0),
        "predict_s": predict_s,
    }
    wrong = np.flatnonzero(pred != y)
    out["misclassified"] = [
        {"path": str(paths[i]) if paths is not None else int(i), "true": name_of.get(int(y[i]), str(y[i])),
         "predicted": name_of[pred[i]],
         **({"confidence": float(proba[i].max())} if proba is not None else {})}
        for i in wrong
    ]
    return to_jsonable(out), proba


def dumps(results: list[ResultRow], **meta: Any) -> str:
    """metrics.json: the run's metadata, then one entry per model (the rows of its results.json)."""
    return json.dumps(to_jsonable({**meta, "results": [r.to_dict() for r in results]}), indent=2)
