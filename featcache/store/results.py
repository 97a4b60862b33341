"""A run's ``results.json``: its one reader and writer. Its rows are :class:`store.rows.ResultRow`.

Three producers write rows, one report reads them:

- ``pipeline.py run`` writes the whole file at the end of a run (its rows are marked
  ``"producer": "run"``); rows other producers added to the same directory are kept;
- ``pipeline.py classify --out`` writes the same file in its output directory after every model
  (``"producer": "classify"``, one store and one feature set: :func:`classify_summary`), beside its
  ``metrics.json`` (classify's own record: its settings, then the same rows);
- ``pipeline.py finetune --run-dir`` adds its row under the file's lock (``"producer": "finetune"``),
  replacing a row with the same model path.

:func:`read_results` also reads a classify output directory of an earlier version, which had
only ``metrics.json`` (:func:`from_metrics`). Every write is atomic and under an advisory lock
beside the file, so concurrent producers never lose each other's rows and a reader never sees
half a file. New rows go through :class:`ResultRow` (a malformed one is refused before anything
is written); rows of other producers are kept exactly as read.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from featcache.common.files import atomic_write
from featcache.store.rows import ResultRow, ResultsError

__all__ = ["AUDIT_FILE", "METRICS_FILE", "RESULTS_FILE", "ResultRow", "ResultsError", "append_rows", "classify_names", "classify_summary",
           "from_metrics", "locked", "read_results", "update", "write_run"]

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.json"  # classify's own record (settings and rows); results.json before this version
AUDIT_FILE = "audit.json"  # the audit of the best model's feature set (classify.audit), under RUN_DIR/report/


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialize read-modify-write of a results file between processes (a lock file beside it)."""
    with open(path.with_name(f".{path.name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except OSError as e:
        raise ResultsError(f"{path}: cannot read: {e.strerror}") from None
    return data


def classify_names(meta: dict) -> tuple[str, str, str]:
    """(backbone, store, feature) of classify's output, from its metadata."""
    spec = meta.get("spec") or {}
    store = str(meta.get("store") or "")
    return str(spec.get("backbone") or Path(store or "store").stem), store, str(meta.get("feature") or "")


def classify_summary(meta: dict, rows: list[ResultRow | dict], out: str | os.PathLike) -> dict:
    """classify's results.json (one store, one feature set) from its metadata (metrics.json's
    keys) and its rows: the top-level keys of a run's file, so the report reads both alike."""
    backbone, store, feature = classify_names(meta)
    few = meta.get("few_shot")
    return {"config": {"out": str(out), "select": meta.get("select"), "metric": meta.get("metric") or "accuracy"},
            "results": [r.to_dict() if isinstance(r, ResultRow) else r for r in rows],
            "extraction": [{"backbone": backbone, "store": store, "features": {feature: meta.get("dim")}}],
            "few_shot": [{"backbone": backbone, "feature": feature, **few}] if isinstance(few, dict) and
            few.get("points") else [], "skipped": meta.get("skipped") or []}


def from_metrics(metrics: dict, run_dir: Path) -> dict:
    """An earlier version's classify output (metrics.json only) as results.json; its rows lacked
    the backbone and store, taken from its metadata. Rows are left as read (the report checks them)."""
    backbone, store, feature = classify_names(metrics)
    rows = [{"backbone": backbone, "feature": r.get("feature") or feature, "store": store, **r}
            for r in metrics.get("results") or [] if isinstance(r, dict)]
    return classify_summary(metrics, rows, run_dir)


def read_results(run_dir: str | os.PathLike) -> tuple[dict, Path]:
    """(results, the file read): RUN_DIR/results.json (a run's or classify's), else the metrics.json
    of a classify output directory an earlier version wrote. Rows are checked where they are used
    (:meth:`ResultRow.from_dict`, naming the file and the row)."""
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE
    if path.is_file():
        return _load(path), path
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        return from_metrics(_load(metrics), run_dir), metrics
    raise FileNotFoundError(path)


def update(run_dir: str | os.PathLike, change: Callable[[dict], dict]) -> Path:
    """Locked read-modify-write of RUN_DIR/results.json (created if absent), written atomically;
    an unreadable or malformed file is left untouched."""
    path = Path(run_dir) / RESULTS_FILE
    with locked(path):
        if path.is_file():
            data = _load(path)
            if not isinstance(data, dict) or not isinstance(data.get("results"), list):
                raise ResultsError(f"{path}: expected a JSON object with a 'results' list; not touching it")
        else:
            data = {"config": {"out": str(run_dir)}, "extraction": [], "results": []}
        atomic_write(path, json.dumps(change(data), indent=2, default=str) + "\n")
    return path


def _rows(rows: list[ResultRow | dict], producer: str, where: str) -> list[ResultRow]:
    """New rows through the type (a malformed one is refused before anything is written), marked."""
    return [replace(ResultRow.of(r, f"{where}[{i}]"), producer=producer) for i, r in enumerate(rows)]


def write_run(run_dir: str | os.PathLike, summary: dict, producer: str = "run") -> Path:
    """A run's results (``summary``: results.json's top-level keys, its rows ResultRows or their
    dicts): its rows replace those ``producer`` wrote before, rows of other producers are kept."""
    rows = [r.to_dict() for r in _rows(summary.get("results", []), producer, "results")]

    def merge(old: dict) -> dict:
        kept = [r for r in old.get("results", []) if isinstance(r, dict) and r.get("producer", "run") != producer]
        return {**summary, "results": rows + kept}

    return update(run_dir, merge)


def append_rows(run_dir: str | os.PathLike, rows: list[ResultRow | dict], producer: str,
                link: Callable[[ResultRow, object], ResultRow] | None = None) -> Path:
    """Add ``rows`` (replacing rows with the same ``model_path``, a rerun of the same --out);
    ``link(row, extraction)`` may complete each from the file's extraction records."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"--run-dir {run_dir}: no such directory")
    rows = _rows(rows, producer, "rows")

    def add(data: dict) -> dict:
        new = [(link(r, data.get("extraction")) if link else r).to_dict() for r in rows]
        replaced = {r.get("model_path") for r in new}
        data["results"] = [r for r in data["results"]
                           if not (isinstance(r, dict) and r.get("model_path") in replaced)] + new
        return data

    return update(run_dir, add)
