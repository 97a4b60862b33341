"""``build_report(RUN_DIR)``: the comparison report, rebuilt from saved results only.

Nothing is retrained or re-extracted: results.json gives every number, the stores it
names give provenance and image paths. Every file is written to a temporary name and
renamed, so a reader (or a browser with the report open) never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

from classify.leaderboard import Leaderboard
from classify.table import shown_path
from featcache.common.files import atomic_write, safe_name
from featcache.report import plots as P
from featcache.report.audit import audit_view, load_audits
from featcache.report.images import Tile, load_tile
from featcache.report.plots import Plot
from featcache.report.provenance import Extraction, extractions
from featcache.report.render import (
    Section,
    leaderboard_table,
    markdown_table,
    misclassified_note,
    render_html,
    render_markdown,
)
from featcache.report.results import across_datasets, as_run, leaderboard_rows, load_run
from featcache.report.stores import StoreFacts, image_file, load_store, load_stores, sample_paths
from featcache.store.rows import ResultRow

log = logging.getLogger(__name__)

REPORT_DIR = "report"
MAX_MISCLASSIFIED = 16
SAMPLES_PER_CLASS = 4
MAX_SAMPLE_CLASSES = 8
SORTED_BY = ("selection_score desc (cv_accuracy_mean under --select cv, else val_accuracy), val_accuracy desc, "
             "val_balanced_accuracy desc, val_macro_f1 desc, fit_s asc; a soft vote (of the tied group, or of each "
             "backbone's best) first when it is tied with the top score")


def leaderboard_json(run: Leaderboard) -> str:
    rows = [{**r, "params": json.loads(r["params"]),
             **({"members": json.loads(r["members"])} if "members" in r else {})} for r in leaderboard_rows(run)]
    extra = {"few_shot": run.few_shot} if run.few_shot else {}
    if run.multi:
        extra["across_datasets"] = across_datasets(run)
    return json.dumps({"sorted_by": SORTED_BY, "rows": rows, **extra}, indent=2) + "\n"


def leaderboard_csv(run: Leaderboard) -> str:
    rows = leaderboard_rows(run)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["rank", "backbone", "feature", "model", "val_accuracy"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # floats as repr: they read back exactly
    return buf.getvalue()


def misclassified_tiles(best: ResultRow, facts: StoreFacts | None) -> list[tuple[Tile, str]]:
    """Up to 16 mistakes, most confident first (the instructive ones), titled as tutorials do."""
    wrong = list(best.val.get("misclassified") or [])
    wrong.sort(key=lambda m: -(m.get("confidence") or 0.0))
    root = facts.source_root if facts else None
    out = []
    for m in wrong[:MAX_MISCLASSIFIED]:
        conf = f"\nconfidence {m['confidence']:.2f}" if isinstance(m.get("confidence"), (int, float)) else ""
        caption = f"pred: {P.short(str(m.get('predicted')), 14)} / true: {P.short(str(m.get('true')), 14)}{conf}"
        out.append((load_tile(image_file(root, m.get("path"))), caption))
    return out


def make_plots(run: Leaderboard, stores: dict[str, StoreFacts], prefix: str = "") -> tuple[list[Plot], dict[str, str]]:
    """Every figure the data allows; a figure that cannot be drawn is left out, never an error.
    ``prefix`` keeps the file names of one dataset's figures apart from another's."""
    out: list[Plot] = []
    extra: dict[str, str] = {}

    def add(name: str, title: str, caption: str, fig) -> None:
        if fig is not None:
            out.append(Plot(prefix + name, title, caption, P.to_png(fig)))

    add("accuracy_vs_fit_time.png", "Accuracy vs fit time",
        "Every classifier on every feature set; up and to the left is better. The ringed point is the best model.",
        P.accuracy_vs_time_figure(run.rows))
    best = run.top
    if best is not None:
        facts = stores.get(best.store)
        add("confusion_matrix.png", "Confusion matrix of the best model",
            f"{best.label}, on val. Rows are true classes.", P.confusion_figure(best))
        add("per_class_accuracy.png", "Per-class accuracy of the best model", f"{best.label}, on val.",
            P.per_class_figure(best))
        tiles = misclassified_tiles(best, facts)
        extra["misclassified"] = misclassified_note(best, len(tiles))
        add("misclassified.png", "Misclassified images of the best model",
            extra["misclassified"] + " Most confident mistakes first; grey tiles are files no longer on disk.",
            P.montage_figure(P.grid(tiles, P.n_cols(len(tiles))), f"Misclassified by {best.label}"))
    if run.few_shot:
        add("few_shot.png", "Few-shot curve",
            "Accuracy against train images per class: logreg solid, DINO kNN dashed; bands are ± 1 sd over "
            "the draws.", P.few_shot_figure(run.few_shot))
    facts = stores.get(best.store) if best else next(iter(stores.values()), None)
    if facts is not None:
        samples = [(name, load_tile(image_file(facts.source_root, rel)))
                   for name, rel in sample_paths(facts, SAMPLES_PER_CLASS, MAX_SAMPLE_CLASSES)]
        add("sample_inputs.png", "Sample input images",
            f"A few images per class (up to {MAX_SAMPLE_CLASSES} classes), from `{facts.source_root}`.",
            P.montage_figure(P.rows_by_class(samples), "Sample inputs, one row per class"))
    return out, extra


def _stores_and_extractions(run: Leaderboard) -> tuple[dict[str, StoreFacts], list[Extraction]]:
    named = [str(r.get("store", "")) for r in run.extraction if isinstance(r, dict)] + [e.store for e in run.rows]
    stores = load_stores(named, run.dir)
    return stores, extractions(run, stores)


def build_report(run_dir: str | os.PathLike | Leaderboard) -> dict[str, Path]:
    """Write RUN_DIR/report/{report.md, report.html, leaderboard.json, leaderboard.csv, *.png}; return the paths.
    ``run_dir`` may be the run's leaderboard in memory (``run`` passes its own)."""
    run = run_dir if isinstance(run_dir, Leaderboard) else load_run(run_dir)
    out_dir = run.dir / REPORT_DIR
    out_dir.mkdir(exist_ok=True)
    stores, exs = _stores_and_extractions(run)
    for facts in stores.values():
        if facts.problem:
            log.warning("report: store %s: %s (provenance and images are left out)", facts.named, facts.problem)
    audits = load_audits(run.dir)
    sections = []
    for name in run.datasets if run.multi else [""]:
        part = run.for_dataset(name) if run.multi else run
        prefix = f"{safe_name(name)}__" if name else ""
        plots, extra = make_plots(part, stores, prefix=prefix)
        view = None
        if name in audits:
            facts = stores.get(audits[name].get("store")) or load_store(str(audits[name].get("store", "")), run.dir)
            view = audit_view(audits[name], part, facts.source_root, prefix)
        sections.append(Section(name, part, plots, extra,
                                [ex for ex in exs if not run.multi or (ex.record.get("dataset") or "") == name], view))
    paths: dict[str, Path] = {}
    for p in (p for sec in sections for p in sec.plots + (sec.audit.plots if sec.audit else [])):
        paths[p.name.removesuffix(".png")] = atomic_write(out_dir / p.name, p.png)
    paths["leaderboard_json"] = atomic_write(out_dir / "leaderboard.json", leaderboard_json(run))
    paths["leaderboard_csv"] = atomic_write(out_dir / "leaderboard.csv", leaderboard_csv(run))
    paths["md"] = atomic_write(out_dir / "report.md", render_markdown(run, exs, sections))
    paths["html"] = atomic_write(out_dir / "report.html", render_html(run, exs, sections))
    log.info("report: %s", shown_path(paths["html"]))
    return paths


def excerpt(run_dir_or_results: str | os.PathLike | dict | Leaderboard, top: int = 5) -> str:
    """The leaderboard's top rows as Markdown (best in bold), e.g. for a README."""
    run = as_run(run_dir_or_results if isinstance(run_dir_or_results, (dict, Leaderboard))
                 else Path(run_dir_or_results))
    head, rows = leaderboard_table(run, top=top)
    more = len(run.rows) - len(rows)
    tail = f"\n\n({more} more rows in report/leaderboard.csv)" if more > 0 else ""
    return markdown_table(head, rows, bold_first=True) + tail
