"""A run's ``results.json``: its one reader and writer.

Three producers write rows, one report reads them:

- ``pipeline.py run`` writes the whole file at the end of a run (its rows are marked
  ``"producer": "run"``); rows other producers added to the same directory are kept;
- ``pipeline.py finetune --run-dir`` adds its row under the file's lock (``"producer": "finetune"``),
  replacing a row with the same model path;
- ``pipeline.py classify --out`` writes ``metrics.json``, which :func:`read_results` turns into the
  same shape, so ``pipeline.py report`` accepts a classify output directory too.

Every write is atomic and under an advisory lock beside the file, so concurrent producers never
lose each other's rows and a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from store.files import atomic_write

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.json"  # classify's output


class ResultsError(ValueError):
    """A results file that cannot be used; the message names it."""


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


def from_metrics(metrics: dict, run_dir: Path) -> dict:
    """classify's metrics.json as results.json rows (one store, one feature set)."""
    spec = metrics.get("spec") or {}
    backbone = str(spec.get("backbone") or Path(str(metrics.get("store", "store"))).stem)
    store, feature = str(metrics.get("store") or ""), str(metrics.get("feature") or "")
    rows = [{"backbone": backbone, "feature": r.get("feature") or feature, "store": store, **r}
            for r in metrics.get("results") or [] if isinstance(r, dict)]
    few = metrics.get("few_shot")
    return {"config": {"out": str(run_dir), "select": metrics.get("select"),
                       "metric": metrics.get("metric") or "accuracy"}, "results": rows,
            "extraction": [{"backbone": backbone, "store": store, "features": {feature: metrics.get("dim")}}],
            "few_shot": [{"backbone": backbone, "feature": feature, **few}] if isinstance(few, dict) and
            few.get("points") else [], "skipped": metrics.get("skipped") or []}


def read_results(run_dir: str | os.PathLike) -> tuple[dict, Path]:
    """(results, the file read): RUN_DIR/results.json, or a classify directory's metrics.json."""
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


def write_run(run_dir: str | os.PathLike, summary: dict) -> Path:
    """A run's results: its rows replace the previous run's, rows of other producers are kept."""
    rows = [{**r, "producer": r.get("producer", "run")} for r in summary.get("results", [])]

    def merge(old: dict) -> dict:
        kept = [r for r in old.get("results", []) if isinstance(r, dict) and r.get("producer", "run") != "run"]
        return {**summary, "results": rows + kept}

    return update(run_dir, merge)


def append_rows(run_dir: str | os.PathLike, rows: list[dict], producer: str,
                link: Callable[[dict, object], dict] | None = None) -> Path:
    """Add ``rows`` (replacing rows with the same ``model_path``, a rerun of the same --out)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"--run-dir {run_dir}: no such directory")
    rows = [{**r, "producer": producer} for r in rows]

    def add(data: dict) -> dict:
        new = [link(r, data.get("extraction")) for r in rows] if link else rows
        replaced = {r.get("model_path") for r in new}
        data["results"] = [r for r in data["results"]
                           if not (isinstance(r, dict) and r.get("model_path") in replaced)] + new
        return data

    return update(run_dir, add)
