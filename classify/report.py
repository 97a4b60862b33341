"""A run's reports: results.json (what ``pipeline.py run`` writes: the rows and the top-level
keys the report reads), metrics.json (its settings, then the same rows), metrics.csv (one line
per model), summary.md.

Each file is written to a temporary name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from classify.evaluate import ModelResult, dumps, to_jsonable
from common.files import atomic_write
from store.results import ResultRow, classify_names, classify_summary, write_run

MAX_LISTED_ERRORS = 20


def _sorted(results: list[ModelResult]) -> list[ModelResult]:
    """Best val accuracy first; ties keep the order the models ran in."""
    return sorted(results, key=lambda r: -(r.val["accuracy"] or 0.0))


def csv_row(r: ModelResult) -> dict[str, Any]:
    v = r.val
    return {
        "model": r.model, "feature": r.feature, "val_accuracy": v["accuracy"],
        "val_balanced_accuracy": v["balanced_accuracy"], "val_macro_f1": v["macro_f1"], "val_log_loss": v["log_loss"],
        **{f"val_{k}": x for k, x in v["top_k"].items()},
        "test_accuracy": r.test["accuracy"] if r.test else None,
        "fit_s": round(r.fit_s, 4), "estimate_s": _round(r.extra.get("estimate_s")), "predict_s": round(v["predict_s"], 4),
        "params": json.dumps(r.params, sort_keys=True),
    }


def csv_text(results: list[ModelResult]) -> str:
    rows = [csv_row(r) for r in results]
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 2)


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown_table(results: list[ModelResult]) -> str:
    """The comparison table, sorted by val accuracy."""
    k = max((len(r.val["top_k"]) for r in results), default=1)
    has_test = any(r.test for r in results)
    head = ["model", "val acc", "bal acc", "macro-F1", "log loss"] + ([f"top-{k}"] if k > 1 else []) \
        + (["test acc"] if has_test else []) + ["fit s", "est. s", "predict s", "params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in _sorted(results):
        v = r.val
        cells = [r.model, _fmt(v["accuracy"]), _fmt(v["balanced_accuracy"]), _fmt(v["macro_f1"]), _fmt(v["log_loss"])]
        cells += [_fmt(v["top_k"].get(f"top{k}"))] if k > 1 else []
        cells += [_fmt(r.test["accuracy"] if r.test else None)] if has_test else []
        params = ", ".join(f"{p}={x:.4g}" if isinstance(x, float) else f"{p}={x}" for p, x in r.params.items())
        cells += [_fmt(r.fit_s, 2), _fmt(_round(r.extra.get("estimate_s")), 1), _fmt(v["predict_s"], 3),
                  params.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(results: list[ModelResult], meta: dict) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    parts = [
        "# Classifier comparison", "",
        f"- store: `{meta['store']}` (feature `{meta['feature']}`, {meta['dim']}-d)",
        f"- rows: {counts}; val: {meta['val_source']}; {meta['n_classes']} classes",
        f"- seed {meta['seed']}, jobs {meta['jobs']}",
        *([f"- selection: {meta['protocol']['description']}"] if meta.get("protocol") else []),
        *([f"- selection on views: {meta['protocol_views']['description']}"] if meta.get("protocol_views") else []),
        *([f"- budget: {meta['budget_s']:.0f} s"] if meta.get("budget_s") else []),
        *([f"- reused from an earlier run (finished/): {', '.join(meta['reused'])}"] if meta.get("reused") else []),
        "", "est. s: the time estimated before fitting, from rows, dimensions and classes.", "",
        markdown_table(results), "",
    ]
    if meta.get("skipped"):
        parts += ["## Skipped under the budget", ""]
        parts += [f"- {s['model']}: {s['reason']}" for s in meta["skipped"]] + [""]
    if results:
        best = _sorted(results)[0]
        wrong = best.val["misclassified"]
        parts += [f"## Misclassified val rows of the best model ({best.model}): {len(wrong)}", ""]
        parts += [f"- `{w['path']}`: {w['true']} -> {w['predicted']}" for w in wrong[:MAX_LISTED_ERRORS]]
        if len(wrong) > MAX_LISTED_ERRORS:
            parts.append(f"- ... and {len(wrong) - MAX_LISTED_ERRORS} more (metrics.json)")
    return "\n".join(parts) + "\n"


def result_rows(results: list[ModelResult], meta: dict) -> list[ResultRow]:
    """The rows of classify's results.json: each result with its backbone and store."""
    backbone, store, _ = classify_names(meta)
    return [r.row(backbone, store, producer="classify") for r in results]


def write_reports(out_dir: Path, results: list[ModelResult], meta: dict) -> dict[str, Path]:
    """results.json, metrics.json, metrics.csv and summary.md in ``out_dir``, each replaced
    atomically (results.json under its lock: rows another producer added to it are kept)."""
    rows = result_rows(results, meta)
    return {
        "json": atomic_write(out_dir / "metrics.json", dumps(rows, **meta) + "\n"),
        "csv": atomic_write(out_dir / "metrics.csv", csv_text(results)),
        "summary": atomic_write(out_dir / "summary.md", summary_markdown(results, meta)),
        "results": write_run(out_dir, classify_summary(to_jsonable(meta), rows, out_dir), producer="classify"),
    }
