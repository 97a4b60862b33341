"""A fine-tune's scores as a row of the comparison report, beside the cached-feature classifiers.

The metrics come from ``classify.evaluate.evaluate`` itself, run over the network's
precomputed softmax outputs, so every number means what it means for the zoo. The row is a
:class:`store.rows.ResultRow`, as ``pipeline.py run`` writes them, with feature ``"finetune"``;
its store is the run's store of the same backbone when a run has one (for provenance and
images), else empty.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from classify.evaluate import evaluate, to_jsonable
from featcache.common.errors import BadInput
from featcache.store import results
from featcache.store.results import RESULTS_FILE  # noqa: F401 - re-exported
from featcache.store.rows import ResultRow

FEATURE = "finetune"


class Precomputed:
    """An ``evaluate()``-compatible classifier over outputs computed already: ``X`` holds row indices."""

    def __init__(self, proba: np.ndarray):
        self.proba_ = np.asarray(proba, dtype=np.float64)
        self.classes_ = np.arange(self.proba_.shape[1])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.proba_[np.asarray(X, dtype=np.int64)]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (log_loss checks that rows sum to 1)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def score(logits: np.ndarray, y: np.ndarray, *, class_names: list[str], paths: np.ndarray,
          predict_s: float) -> dict:
    """``evaluate()``'s dict for one split; ``predict_s`` is the real forward time over the split."""
    out = evaluate(Precomputed(softmax(logits)), np.arange(len(y)), np.asarray(y), class_names=class_names,
                   paths=paths)
    out["predict_s"] = float(predict_s)
    return out


def result_row(**fields: Any) -> ResultRow:
    """The fine-tuned network's leaderboard row (feature ``finetune``, no preprocessing)."""
    return ResultRow.from_dict(to_jsonable({"feature": FEATURE, "preprocess": [], **fields}), "finetune row")


def _link_store(row: ResultRow, extraction: object) -> ResultRow:
    """Name the run's store of the same backbone, if any: the report then shows that backbone's
    provenance for the row, and finds the misclassified images (their paths are absolute)."""
    stores = [r.get("store") for r in extraction or [] if isinstance(r, dict) and r.get("backbone") == row.backbone]
    return replace(row, store=str(stores[0])) if not row.store and stores and stores[0] else row


def append_rows(run_dir: str | os.PathLike, rows: list[ResultRow | dict]) -> Path:
    """Add ``rows`` to RUN_DIR/results.json (created if absent), replacing rows with the same
    ``model_path`` (a rerun of the same --out), written atomically under the file's lock."""
    rows = [to_jsonable(r.to_dict() if isinstance(r, ResultRow) else r) for r in rows]
    try:
        return results.append_rows(run_dir, rows, "finetune", link=_link_store)
    except results.ResultsError as e:
        raise BadInput(f"{e}; not touching it" if "not touching" not in str(e) else str(e)) from None
