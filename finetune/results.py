"""A fine-tune's scores as a row of the comparison report, beside the cached-feature classifiers.

The metrics come from ``classify.evaluate.evaluate`` itself, run over the network's
precomputed softmax outputs, so every number means what it means for the zoo. The row has
the shape ``pipeline.py run`` writes (backbone, feature, store, then a ModelResult), with
feature ``"finetune"``; its store is the run's store of the same backbone when a run has one
(for provenance and images), else empty.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from classify.evaluate import ModelResult, evaluate, to_jsonable
from extract.files import atomic_write

FEATURE = "finetune"
RESULTS_FILE = "results.json"


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


def result_row(result: ModelResult, backbone: str) -> dict:
    """One results.json row, as ``driver.run`` writes them."""
    return {"backbone": backbone, "feature": FEATURE, "store": "", **result.to_dict()}


def _link_store(row: dict, extraction: object) -> dict:
    """Name the run's store of the same backbone, if any: the report then shows that backbone's
    provenance for the row, and finds the misclassified images (their paths are absolute)."""
    stores = [r.get("store") for r in extraction or [] if isinstance(r, dict) and r.get("backbone") == row["backbone"]]
    return {**row, "store": stores[0]} if not row.get("store") and stores and stores[0] else row


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize read-modify-write of results.json between processes (a lock file beside it)."""
    with open(path.with_name(f".{path.name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def append_rows(run_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """Add ``rows`` to RUN_DIR/results.json (created if absent), replacing rows with the same
    ``model_path`` (a rerun of the same --out), written atomically."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"--run-dir {run_dir}: no such directory")
    path = run_dir / RESULTS_FILE
    with _locked(path):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); not touching it") from None
            if not isinstance(data, dict) or not isinstance(data.get("results"), list):
                raise ValueError(f"{path}: expected a JSON object with a 'results' list; not touching it")
        else:
            data = {"config": {"out": str(run_dir)}, "extraction": [], "results": []}
        rows = [_link_store(r, data.get("extraction")) for r in rows]
        replaced = {r.get("model_path") for r in rows}
        data["results"] = [r for r in data["results"]
                           if not (isinstance(r, dict) and r.get("model_path") in replaced)] + rows
        atomic_write(path, json.dumps(to_jsonable(data), indent=2) + "\n")
    return path
