"""What ``classify --out`` writes, kept apart from fitting: model files, out-of-fold files, the
resume ledger, and the reports (results.json, metrics.json, metrics.csv, summary.md).

:class:`Writer` is what the CLI and ``run`` attach to a comparison
(:class:`classify.zoo.Attach`): it saves each model as it finishes, records it in the ledger,
reuses what an earlier run finished, and rewrites the reports after every model. Every file is
written to a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from classify import ledger, ranking, table
from classify.evaluate import dumps, to_jsonable
from classify.features import FeatureSet
from classify.fit import stem
from classify.persist import MODEL_SUFFIX, save_model
from classify.plan import ModelPlan
from featcache.common.files import atomic_write, replace_atomically
from featcache.store.results import classify_summary, write_run
from featcache.store.rows import ResultRow

log = logging.getLogger(__name__)

MAX_LISTED_ERRORS = 20


def save_oof(path: Path, oof: Any) -> Path:
    """The out-of-fold probabilities with the pool's paths, labels and fold ids, for soft-vote ensembles."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda f: np.savez_compressed(f, proba=oof.proba, paths=oof.paths, y=oof.y,
                                                           classes=oof.classes, fold=oof.fold))
    return path


def save_files(out: Path, row: ResultRow) -> ResultRow:
    """``row``'s model under ``out/models`` (and its out-of-fold predictions under ``out/oof``),
    returned with their paths; a row without a fit in memory is returned as it is."""
    fitted = row.fitted
    if fitted is None:
        return row
    (out / "models").mkdir(parents=True, exist_ok=True)
    path = save_model(fitted.saved, out / "models" / f"{stem(row.feature, row.model)}{MODEL_SUFFIX}")
    extra = row.extra
    if fitted.oof is not None and row.cv:
        oof = save_oof(out / "oof" / f"{stem(row.feature, row.model)}.npz", fitted.oof)
        extra = {**extra, "cv": {**row.cv, "oof": str(oof)}}
    return replace(row, model_path=str(path), extra=extra)


# -- the reports of one comparison


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 2)


def csv_row(r: ResultRow) -> dict[str, Any]:
    v = r.val
    return {
        "model": r.model, "feature": r.feature, "val_accuracy": v["accuracy"],
        "val_balanced_accuracy": v["balanced_accuracy"], "val_macro_f1": v["macro_f1"], "val_log_loss": v["log_loss"],
        **{f"val_{k}": x for k, x in v["top_k"].items()},
        "test_accuracy": r.test["accuracy"] if r.test else None,
        "fit_s": round(r.fit_s, 4), "estimate_s": _round(r.extra.get("estimate_s")), "predict_s": round(v["predict_s"], 4),
        "params": json.dumps(r.params, sort_keys=True),
    }


def csv_text(rows: list[ResultRow]) -> str:
    lines = [csv_row(r) for r in rows]
    fields = list(dict.fromkeys(k for row in lines for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return buf.getvalue()


def summary_markdown(rows: list[ResultRow], meta: dict) -> str:
    """summary.md: the comparison's settings, its ranked table (:mod:`classify.table`, as the
    report and the console show it) with each row's details, what was skipped, and the best
    model's mistakes."""
    ranked = ranking.rank_rows(rows, meta.get("metric") or "accuracy")
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
        "", table.markdown_table(ranked), "", "## Details", "",
        "Estimated: the time estimated before fitting, from rows, dimensions and classes.", "",
        table.details_markdown(ranked), "",
    ]
    if meta.get("skipped"):
        head, cells, reasons = table.skipped_table(meta["skipped"], ranked)
        parts += ["## Skipped under the budget", "", "| " + " | ".join(head) + " |",
                  "|" + "|".join("---" for _ in head) + "|", *("| " + " | ".join(c) + " |" for c in cells), "",
                  *reasons, ""]
    if ranked:
        best = ranked[0]
        wrong = best.val["misclassified"]
        parts += [f"## Misclassified val rows of the best model ({best.model}): {len(wrong)}", ""]
        parts += [f"- `{w['path']}`: {w['true']} -> {w['predicted']}" for w in wrong[:MAX_LISTED_ERRORS]]
        if len(wrong) > MAX_LISTED_ERRORS:
            parts.append(f"- ... and {len(wrong) - MAX_LISTED_ERRORS} more (metrics.json)")
    return "\n".join(parts) + "\n"


def write_reports(out: Path, rows: list[ResultRow], meta: dict) -> dict[str, Path]:
    """results.json, metrics.json, metrics.csv and summary.md in ``out`` (rows in the order they
    were fitted), each replaced atomically (results.json under its lock: rows another producer
    added to it are kept)."""
    rows = [replace(r, producer="classify") for r in rows]
    return {
        "json": atomic_write(out / "metrics.json", dumps(rows, **meta) + "\n"),
        "csv": atomic_write(out / "metrics.csv", csv_text(rows)),
        "summary": atomic_write(out / "summary.md", summary_markdown(rows, meta)),
        "results": write_run(out, classify_summary(to_jsonable(meta), rows, out), producer="classify"),
    }


@dataclass
class Writer:
    """``classify --out``'s side of a comparison: save, record, resume, report.

    ``resume``: reuse what an earlier run into ``out`` finished with the same settings.
    ``reuse``: rows fitted earlier in this process, by ledger key (another writer's ``recorded``:
    ``run``'s first pass). ``recorded``: every row this writer recorded or recalled, by key."""

    out: Path
    data: FeatureSet
    resume: bool = True
    reuse: dict | None = None
    recorded: dict = field(default_factory=dict)

    def recall(self, plan: ModelPlan) -> tuple[list[ResultRow] | None, str]:
        """(rows an earlier fit left for ``plan``, or None; where they come from)."""
        key = ledger.settings_key(ledger.settings(self.data, plan))
        if self.reuse and key in self.reuse:
            self.recorded[key] = self.reuse[key]
            return self.reuse[key], "this run's first pass"
        done = ledger.load(self.out, self.data.feature, plan.label, key) if self.resume else None
        if done is None:
            return None, ""
        self.recorded[key] = done
        return done, f"an earlier run ({table.shown_path(ledger.record_path(self.out, self.data.feature, plan.label))})"

    def record(self, plan: ModelPlan, rows: list[ResultRow]) -> list[ResultRow]:
        """Save ``rows``' files, then record them as finished (in that order: a crash in between
        leaves files without a record, which are fitted again)."""
        rows = [save_files(self.out, r) for r in rows]
        values = ledger.settings(self.data, plan)
        key = ledger.settings_key(values)
        ledger.save(self.out, plan.label, key, values, rows)
        self.recorded[key] = rows
        return rows

    def adopt(self, plan: ModelPlan, rows: list[ResultRow]) -> list[ResultRow]:
        """``rows`` that another process fitted and recorded (:meth:`record`) in this folder, kept
        as recorded here too."""
        self.recorded[ledger.settings_key(ledger.settings(self.data, plan))] = rows
        return rows

    def report(self, rows: list[ResultRow], meta: dict) -> None:
        write_reports(self.out, rows, meta)
