"""The report's data-audit section, from ``RUN_DIR/report/audit.json`` (written by ``run``).

Leaked test images are dropped from every row's score with the per-image correctness bits
the rows already carry (``test.images`` / ``test.correct``), so nothing is re-predicted: a
row whose images hash differs from the audit's split is left as it is, never guessed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classify.leaderboard import Leaderboard
from classify.stats import unpack
from featcache.report import plots as P
from featcache.report.images import load_tile
from featcache.report.plots import Plot
from featcache.report.stores import image_file
from featcache.store.rows import ResultRow

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from featcache.store.results import AUDIT_FILE

log = logging.getLogger(__name__)

SHOWN = 8  # pairs, label issues, outliers and mistakes drawn
LISTED = 10  # rows of each table
LEAK_ROWS = 5  # leaderboard rows re-scored without the leaked images


@dataclass(frozen=True)
class AuditView:
    """What one dataset's audit adds to the report: notes, tables (title, head, rows) and figures."""

    notes: list[str]
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)


def load_audits(run_dir: Path) -> dict[str, dict]:
    """{dataset name ("" for one dataset): audit}; a missing or unreadable file gives none."""
    path = Path(run_dir) / "report" / AUDIT_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("report: %s unreadable (%s); the audit section is left out", path, e)
        return {}
    if not isinstance(data, dict):
        return {}
    if isinstance(data.get("datasets"), dict):
        return {str(k): v for k, v in data["datasets"].items() if isinstance(v, dict)}
    return {"": data}


def without_leaks(entry: ResultRow, leaks: dict, split: str) -> dict | None:
    """``{"n", "dropped", "accuracy", "without"}``: the row's accuracy on ``split``, and once the
    images with a near-copy in a split it learnt from are dropped (``without`` None: none left)."""
    scores, info = entry.test if split == "test" else entry.val, leaks.get(split)
    if not scores or not info or scores.get("images") != info.get("images") or not scores.get("correct"):
        return None
    n = int(scores.get("n") or 0)
    right = unpack(scores["correct"], n)
    keep = np.ones(n, bool)
    keep[[i for i in info.get("leaked", []) if 0 <= i < n]] = False
    return {"n": n, "dropped": int(n - keep.sum()), "accuracy": float(right.mean()),
            "without": float(right[keep].mean()) if keep.any() else None}


def leak_table(run: Leaderboard, leaks: dict) -> tuple[list[str], list[str], list[list[str]]]:
    """(notes, head, rows): each scored split's leaks, and the first rows' accuracy without them."""
    notes, head, cols = [], ["#", "model", "features"], []
    for split, source in (("val", "train"), ("test", "train or val")):
        first = next((w for w in (without_leaks(e, leaks, split) for e in run.rows) if w), None)
        if first is None:
            continue
        if not first["dropped"]:
            notes.append(f"No {split} image has a near-copy in {source}: the {split} scores are not inflated by leaks.")
            continue
        e = next(e for e in run.rows if without_leaks(e, leaks, split))
        after = ("none is left" if first["without"] is None else
                 f"rank {e.rank} ({e.model} on {e.feature_set}) scores {first['without']:.3f} on the "
                 f"{first['n'] - first['dropped']} left instead of {first['accuracy']:.3f}")
        notes.append(f"**Leaks:** {first['dropped']} of {first['n']} {split} images have a near-copy in {source}; "
                     f"without them, {after}.")
        head += [f"{split} acc", f"{split} acc, leaks dropped"]
        cols.append(split)
    rows = []
    for e in run.rows[:LEAK_ROWS] if cols else []:
        cells = [str(e.rank), e.model, e.feature_set]
        for split in cols:
            w = without_leaks(e, leaks, split)
            cells += ["-", "-"] if w is None else [f"{w['accuracy']:.3f}",
                                                    "-" if w["without"] is None else f"{w['without']:.3f}"]
        rows.append(cells)
    return notes, head, rows


def _name(path: str) -> str:
    return P.short(os.path.basename(str(path)), 20)


def _tiles(root: Path | None, items: list[tuple[str, str]]) -> list:
    return [(load_tile(image_file(root, p)), caption) for p, caption in items]


def audit_view(audit: dict, run: Leaderboard, root: Path | None, prefix: str = "") -> AuditView:
    """The notes, tables and figures of one audit; ``root`` is where the store's image paths start."""
    c = audit.get("counts") or {}
    model = audit.get("model") or {}
    what = f"{model.get('backbone', '')} {audit.get('feature', '')}".strip()
    notes = [f"Audit of {what} ({audit.get('rows')} rows, {audit.get('search', 'exact')} cosine search of the "
             f"mean-centred features, {audit.get('seconds', 0):.1f} s): {c.get('duplicate_pairs', 0)} near-duplicate "
             f"pairs at cosine ≥ {audit.get('duplicate_threshold', 0):.3f} (the store's nearest-neighbour median "
             f"+ 1.5 MADs), {c.get('cross_split', 0)} of them across splits, {c.get('exact', 0)} exact. "
             "Full lists: `audit.json`."]
    leak_notes, head, rows = leak_table(run, audit.get("split_leaks") or {})
    notes += leak_notes
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    if rows:
        tables.append(("Accuracy without the leaked images", head, rows))
    issues = audit.get("label_issues") or []
    if issues:
        notes.append(f"{len(issues)} label-issue candidates: images whose out-of-fold probability for their own "
                     f"label is lowest ({audit.get('label_method')}); check the worst first.")
    dups = sorted(audit.get("duplicates") or [], key=lambda d: (not d.get("cross_split"), -d.get("similarity", 0)))
    if dups:
        tables.append(("Near-duplicates, leaks first", ["image", "split", "near-copy", "split", "cosine"],
                       [[d["paths"][0], d["splits"][0], d["paths"][1], d["splits"][1], f"{d['similarity']:.3f}"]
                        for d in dups[:LISTED]]))
    if issues:
        tables.append(("Label-issue candidates", ["image", "split", "given", "suggested", "p(given)"],
                       [[li["path"], li.get("split", ""), li["given"], li["suggested"], f"{li['score']:.3f}"]
                        for li in issues[:LISTED]]))
    outliers = audit.get("outliers") or []
    if outliers:
        tables.append(("Outliers", ["image", "split", "distance to k-th neighbour"],
                       [[o["path"], o.get("split", ""), f"{o['score']:.3f}"] for o in outliers[:5]]))
    return AuditView(notes, tables, _plots(audit, root, prefix, dups))


def _plots(audit: dict, root: Path | None, prefix: str, dups: list[dict]) -> list[Plot]:
    out: list[Plot] = []

    def add(name: str, title: str, caption: str, fig: Figure | None) -> None:
        if fig is not None:
            out.append(Plot(prefix + name, title, caption, P.to_png(fig)))

    pairs = [_tiles(root, [(d["paths"][0], f"{d['splits'][0]}: {_name(d['paths'][0])}"),
                           (d["paths"][1], f"{d['splits'][1]}, cos {d['similarity']:.3f}")]) for d in dups[:SHOWN]]
    add("audit_duplicates.png", "Near-duplicate pairs", "Each pair side by side, pairs across splits (leaks) first.",
        P.montage_figure([a + b for a, b in zip(pairs[::2], pairs[1::2] + [[]])], "Near-duplicates"))
    issues = (audit.get("label_issues") or [])[:SHOWN]
    rows = [_tiles(root, [(li["path"], f"given {P.short(li['given'], 12)}\n→ {P.short(li['suggested'], 12)} "
                                       f"(p={li['score']:.2f})")]
                   + [(p, f"neighbour: {P.short(str(lab), 12)}")
                      for p, lab in zip(li.get("neighbours", []), li.get("neighbour_labels") or [""] * 3)])
            for li in issues]
    add("audit_label_issues.png", "Label-issue candidates",
        "Worst first: the image with its given and suggested class, then its three nearest images.",
        P.montage_figure(rows, "Label-issue candidates and their neighbours"))
    mistakes = (audit.get("misclassified") or [])[:SHOWN]
    on = (audit.get("model") or {}).get("scored_on", "test")
    rows = [_tiles(root, [(m["path"], f"pred {P.short(str(m.get('predicted')), 12)}\ntrue {P.short(str(m.get('true')), 12)}")]
                   + [(nb["path"], f"train: {P.short(str(nb.get('label')), 12)}\ncos {nb['similarity']:.2f}")
                      for nb in m.get("neighbours", [])]) for m in mistakes]
    add("audit_mistake_neighbours.png", f"Misclassified {on} images and their nearest train images",
        "A near-copy with another label, or neighbours of the predicted class, show why a mistake was made.",
        P.montage_figure(rows, f"Mistakes of {(audit.get('model') or {}).get('model', 'the best model')}"))
    outliers = (audit.get("outliers") or [])[:SHOWN]
    add("audit_outliers.png", "Outliers", "The images farthest from their k-th nearest neighbour.",
        P.montage_figure(P.grid(_tiles(root, [(o["path"], f"{o.get('split', '')}, {o['score']:.2f}")
                                              for o in outliers])), "Outliers"))
    fm = audit.get("map")
    if fm and fm.get("points"):
        leaked = {p for s in (audit.get("split_leaks") or {}).values() for p in s.get("leaked_paths", [])}
        add("audit_map.png", "Map of the features",
            f"{fm.get('rows')} rows, {fm.get('method')}, coloured by class; triangles are val/test, "
            "red rings leaked images.", P.feature_map_figure(fm, leaked))
    return out
