"""A run's results.json, read once and turned into ranked leaderboard entries.

Everything the report shows comes from here, so the Markdown, HTML, JSON and CSV
cannot disagree: they all format the same :class:`Entry` list.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
HOLDOUT = "holdout from train"


class ReportError(ValueError):
    """A run directory or results file the report cannot use; the message names it."""


@dataclass(frozen=True)
class Entry:
    """One leaderboard row: a classifier trained on one feature set of one backbone."""

    rank: int  # 1 = best
    backbone: str
    feature: str  # store key, "<layer>/<pool>"
    model: str
    val: dict  # ModelResult.val as saved
    test: dict | None
    fit_s: float
    params: dict
    val_source: str
    store: str
    model_path: str | None
    estimate_s: float | None = None  # the time estimated before fitting
    selection: str | None = None  # how the model was selected (classify.protocol)

    @property
    def layer(self) -> str:
        return self.feature.rsplit("/", 1)[0]

    @property
    def pooling(self) -> str:
        return self.feature.rsplit("/", 1)[1] if "/" in self.feature else ""

    @property
    def feature_set(self) -> str:
        """What the colours of the plots distinguish: one backbone's layer and pooling."""
        return f"{self.backbone} {self.feature}"

    @property
    def label(self) -> str:
        return f"{self.model} on {self.feature_set}"


@dataclass(frozen=True)
class Run:
    """results.json as the report needs it."""

    dir: Path
    config: dict
    extraction: list[dict]
    entries: list[Entry]  # ranked, best first
    seconds: float | None
    skipped: list[dict] = field(default_factory=list)  # models the budget skipped, with the reason

    @property
    def best(self) -> Entry | None:
        return self.entries[0] if self.entries else None

    @property
    def top_ks(self) -> list[str]:
        """Every top-k key any row has (``top1``, ``top3``...), in order of k."""
        keys = {k for e in self.entries for k in (e.val.get("top_k") or {})}
        return sorted(keys, key=lambda k: int(k[3:]) if k[3:].isdigit() else 0)

    @property
    def feature_sets(self) -> list[str]:
        return list(dict.fromkeys(e.feature_set for e in self.entries))

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(e.model for e in self.entries))


def _number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else -math.inf


def rank_key(e: Entry) -> tuple:
    """Best val accuracy first; ties go to balanced accuracy, macro-F1, then the faster fit."""
    v = e.val
    return (-_number(v.get("accuracy")), -_number(v.get("balanced_accuracy")), -_number(v.get("macro_f1")),
            _number(e.fit_s), e.backbone, e.feature, e.model)


def _need(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ReportError(f"{where}: missing {key!r}")
    if not isinstance(obj[key], kind):
        raise ReportError(f"{where}: {key!r} is {type(obj[key]).__name__}, expected {getattr(kind, '__name__', kind)}")
    return obj[key]


def _entry(row: dict, where: str) -> Entry:
    names = [str(_need(row, key, where, str)) for key in ("backbone", "feature", "model")]
    val = _need(row, "val", where, dict)
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        _need(val, key, f"{where}.val", (int, float, type(None)))
    test = row.get("test")
    return Entry(
        rank=0, backbone=names[0], feature=names[1], model=names[2], val=val,
        test=test if isinstance(test, dict) else None,
        fit_s=float(_need(row, "fit_s", where, (int, float))), params=dict(row.get("params") or {}),
        val_source=str(row.get("val_source") or "val split"), store=str(row.get("store") or ""),
        model_path=row.get("model_path"),
        estimate_s=(row.get("extra") or {}).get("estimate_s"), selection=(row.get("extra") or {}).get("selection"),
    )


def parse_results(data: Any, run_dir: Path, where: str = RESULTS_FILE) -> Run:
    """Check the shape of results.json (one clear line on the first problem) and rank its rows."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: expected a JSON object with 'results', got {type(data).__name__}")
    rows = _need(data, "results", where, list)
    entries = sorted((_entry(r, f"{where}: results[{i}]") for i, r in enumerate(rows)), key=rank_key)
    entries = [replace(e, rank=i + 1) for i, e in enumerate(entries)]
    extraction = data.get("extraction") or []
    if not isinstance(extraction, list):
        raise ReportError(f"{where}: 'extraction' is {type(extraction).__name__}, expected list")
    seconds = data.get("seconds")
    skipped = data.get("skipped") or []
    return Run(dir=run_dir, config=dict(data.get("config") or {}), extraction=extraction, entries=entries,
               seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
               skipped=[s for s in skipped if isinstance(s, dict)] if isinstance(skipped, list) else [])


def load_run(run_dir: str | Path) -> Run:
    """Read RUN_DIR/results.json; a missing or malformed one is a :class:`ReportError` naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    path = run_dir / RESULTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{run_dir}: not a run directory (no {RESULTS_FILE}; run `pipeline.py run` first)") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return parse_results(data, run_dir, where=str(path))


def as_run(run_dir_or_results: str | Path | dict | Run) -> Run:
    """Accept what callers have at hand: a run directory, its parsed results, or a Run."""
    if isinstance(run_dir_or_results, Run):
        return run_dir_or_results
    if isinstance(run_dir_or_results, dict):
        out = (run_dir_or_results.get("config") or {}).get("out") or "."
        return parse_results(run_dir_or_results, Path(out), where="results")
    return load_run(run_dir_or_results)


def leaderboard_rows(run: Run) -> list[dict]:
    """Every number of every entry, flat: the rows of leaderboard.json and leaderboard.csv."""
    rows = []
    for e in run.entries:
        v, top = e.val, e.val.get("top_k") or {}
        rows.append({
            "rank": e.rank, "backbone": e.backbone, "feature": e.feature, "layer": e.layer, "pooling": e.pooling,
            "model": e.model, "val_n": v.get("n"), "val_accuracy": v.get("accuracy"),
            "val_balanced_accuracy": v.get("balanced_accuracy"), "val_macro_f1": v.get("macro_f1"),
            "val_log_loss": v.get("log_loss"), **{f"val_{k}": top.get(k) for k in run.top_ks},
            "test_accuracy": e.test.get("accuracy") if e.test else None,
            "fit_s": e.fit_s, "estimate_s": e.estimate_s, "predict_s": v.get("predict_s"),
            "params": json.dumps(e.params, sort_keys=True), "val_source": e.val_source, "model_path": e.model_path,
        })
    return rows
