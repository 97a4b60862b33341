"""report.md and report.html from one set of formatted cells, so the two always agree.

The HTML is a single offline file: inline CSS, plots as base64 data URIs, and a tiny
script that counts images that failed to decode (``body[data-broken-images]``) so a
headless browser test can prove nothing is broken.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from typing import Any

from classify import table as T
from classify.leaderboard import Leaderboard
from featcache.report.audit import AuditView
from featcache.report.plots import Plot
from featcache.report.provenance import (
    Extraction,
    environment_line,
    feature_rows,
    forward_pass_line,
    plural,
    skipped_files,
)
from featcache.report.results import across_datasets, ensemble_verdicts
from featcache.store.rows import ResultRow
from featcache.store.splits import VAL_HOLDOUT as HOLDOUT

TITLE = "Transfer-learning comparison"


def fmt(x: Any, digits: int = 3) -> str:
    """Metrics with fixed decimals; None (no probabilities, no test split) as a dash."""
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def leaderboard_table(run: Leaderboard, top: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The compact leaderboard (:func:`classify.table.columns`) as header and text cells, best
    first; leaderboard.csv and leaderboard.json keep every number exactly."""
    rows = run.rows[:top]
    cols = T.columns(rows, T.feature_tags(run.rows))
    return [c.head for c in cols], [[c.text(i) for c in cols] for i in range(len(rows))]


VARIANTS = ("", "+flip", "+views", "+views+flip")


def views_table(run: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Per feature set and model: val accuracy of each variant (center crops, ``+flip`` TTA,
    ``+views`` training, both) and its change against the first variant present; empty when
    no run has a variant to compare."""
    acc, bases = {}, {}
    for e in run.rows:
        base = e.model.replace("+views", "").replace("+flip", "")
        variant = e.model[len(base):] if e.model.startswith(base) else ""
        acc[(e.feature_set, base, variant)] = e.val.get("accuracy")
        bases.setdefault((e.feature_set, base), None)
    present = [v for v in VARIANTS if any((fs, m, v) in acc for fs, m in bases)]
    if len(present) < 2:
        return [], []
    head = ["feature set", "model"] + [f"val acc{v}" if i == 0 else f"{v} (change)" for i, v in enumerate(present)]
    rows = []
    for fs, m in bases:
        ref = acc.get((fs, m, present[0]))
        cells = [fs, m, fmt(ref)]
        for v in present[1:]:
            a = acc.get((fs, m, v))
            delta = f" ({(a - ref) * 100:+.1f} pt)" if isinstance(a, float) and isinstance(ref, float) else ""
            cells.append(fmt(a) + delta)
        rows.append(cells)
    return head, rows


VIEWS_NOTE = ("Heads trained on cached augmented views (extract `--views K`: K RandomResizedCrop + flip views "
              "per train image) and/or scored with flip test-time augmentation, against the same head on center "
              "crops. Change in points of val accuracy; on a small val split one image is worth several tenths "
              "of a point.")


def images_count(run: Leaderboard, exs: list[Extraction]) -> int | None:
    """Images of the run: each dataset's largest store (its backbones share the images), summed."""
    per: dict[str, int] = {}
    for ex in exs:
        n = ex.record.get("rows") or (ex.facts.info.n_rows if ex.facts.info else 0)
        ds = str(ex.record.get("dataset") or "")
        per[ds] = max(per.get(ds, 0), n or 0)
    total = sum(per.values())
    return total or None


def summary_line(run: Leaderboard, exs: list[Extraction]) -> str:
    n_img = images_count(run, exs)
    backbones = list(dict.fromkeys(b for name in [ex.backbone for ex in exs] + [e.backbone for e in run.rows
                                                                                 if e.kind == "model"]
                                   for b in name.split("+")))  # an ensemble's "a+b" is two backbones seen already
    parts = [plural(n_img, "image") if n_img else None, plural(len(backbones), "backbone"),
             plural(len({e.feature_set for e in run.rows if e.kind == "model"}), "feature set"),
             plural(len(run.models), "classifier"),
             plural(len(run.rows), "run"), f"{T.seconds(run.seconds)} total" if run.seconds is not None else None]
    data = run.config.get("data")
    data = [data] if isinstance(data, str) else list(data or [])
    return (", ".join(f"`{d}`" for d in data) + ": " if data else "") + " · ".join(p for p in parts if p)


VOTE_RULE = (" A soft vote (of the tied group, or of each backbone's best model) goes first when it is itself tied "
             "with the top score.")


def ranking_note(run: Leaderboard) -> str:
    metric = "balanced accuracy" if run.metric == "balanced_accuracy" else "accuracy"
    refit = (" Saved models (test, predict) were refitted on train+val with their chosen configuration."
             if any(e.refit for e in run.rows) else "")
    if run.selection == "cv":
        cv = run.top.cv if run.top else {}
        return (f"Ranked by the {metric} of repeated stratified CV of each model's chosen configuration over "
                f"train+val ({cv.get('folds', '?')}-fold x {cv.get('repeats', '?')}, {cv.get('n', '?')} images; "
                f"mean ± sd over folds), then val accuracy, balanced accuracy, macro-F1 and faster fit; val and "
                f"test are reported, not used to choose." + VOTE_RULE + refit)
    return f"Ranked by val {metric}, then accuracy, balanced accuracy, macro-F1 and faster fit." + VOTE_RULE + refit


def tied_note(run: Leaderboard, marked: str = "shaded") -> str:
    """The tied group in one sentence: one winner only when the data say so."""
    group, best = run.tied_group, run.top
    on = "out-of-fold predictions" if run.selection == "cv" else "val images"
    ref = next((e for e in run.rows if e.kind != "soft-vote"), best)  # what the others were paired with
    n = (ref.cv or {}).get("n") if run.selection == "cv" else ref.val.get("n")
    if len(group) > 1:
        k = len(group) - 1
        return (f"{k} row{'s' if k > 1 else ''} ({marked}) {'are' if k > 1 else 'is'} tied with rank 1: none is "
                f"significantly worse on the same {n} {on} (exact McNemar, p >= 0.05), so the data do not pick one "
                "winner among them.")
    paired = [e for e in run.rows[1:] if e.p_vs_best is not None]
    if not paired:
        return "No other row was scored on the same images, so none could be compared with rank 1."
    others = "the other row" if len(paired) == 1 else f"all {len(paired)} rows"
    return (f"Rank 1 is significantly better than {others} it could be paired with on the same {n} {on} "
            "(exact McNemar, p < 0.05).")


def few_shot_table(run: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """One row per feature set and model: accuracy (mean ± sd over the draws) at each shot count."""
    curves = run.few_shot
    if not curves:
        return [], []
    shots = list(dict.fromkeys(p["shots"] for c in curves for p in c["points"]))
    shots = sorted(s for s in shots if isinstance(s, int)) + [s for s in shots if not isinstance(s, int)]
    head = ["backbone", "feature", "model"] + [str(s) for s in shots]
    rows = []
    for c in curves:
        for m in dict.fromkeys(p["model"] for p in c["points"]):
            at = {p["shots"]: p for p in c["points"] if p["model"] == m}
            rows.append([T.short_backbone(c["backbone"]), c["feature"], m] + [
                f"{at[s]['mean']:.3f} ± {at[s]['sd']:.3f}" if s in at and s != "all" else
                fmt(at[s]["mean"]) if s in at else "-" for s in shots])
    return head, rows


def few_shot_note(run: Leaderboard) -> str:
    c = run.few_shot[0] if run.few_shot else {}
    return (f"Train images per class (columns) against {c.get('split', 'test')} accuracy on "
            f"{c.get('n_eval', '?')} images: L2-normalized logistic regression (C=1) and DINO's weighted 20-NN, "
            f"fitted on {c.get('draws', 5)} seeded draws per shot count (the same draws for every feature set); "
            "mean ± sd over the draws, and one fit on the whole train split under 'all'.")


def across_table(run: Leaderboard) -> tuple[list[str], list[list[str]]]:
    rows = across_datasets(run)
    names = run.datasets
    split = {n: next((r["split"][n] for r in rows), "val") for n in names}
    head = ["backbone", "layer", "pooling", "model"] + [f"{n} {split[n]} acc" for n in names] \
        + [f"{n} rank" for n in names] \
        + ["mean acc", "mean rank"]
    out = []
    for r in rows:
        layer, _, pool = r["feature"].rpartition("/")
        out.append([r["backbone"], layer or r["feature"], pool if layer else "", r["model"]]
                   + [fmt(r["accuracy"][n]) for n in names] + [str(r["rank"][n]) for n in names]
                   + [fmt(r["mean_accuracy"]), f"{r['mean_rank']:.1f}"])
    return head, out


def across_note(run: Leaderboard) -> str:
    splits = sorted({e.reported[0] for e in run.rows})
    return (f"Each backbone x feature x model present in all {len(run.datasets)} datasets: its accuracy on each "
            f"({' / '.join(splits)} split), its rank among that dataset's single-model rows (ranked by the "
            "dataset's own selection score), and the mean of both, best mean rank first (as in Kornblith et al., "
            "'Do Better ImageNet Models Transfer Better?').")


def ensemble_notes(run: Leaderboard) -> list[str]:
    out, tags = [], T.feature_tags(run.rows)
    for v in ensemble_verdicts(run):
        e, ref = v["entry"], v["best"]
        what = T.answer_text(e, run.rows, tags)
        iv = f" ({T.interval(ref.score_ci)})" if ref.score_ci else ""
        verdict = ("beats it outside that interval" if v["outside"] else
                   "does not beat it outside that interval" if v["delta"] > 0 else "does not beat it")
        p = f"; paired test p={T.p_value(v['p'])}" if v["p"] is not None else ""
        out.append(f"Ensemble: {what} scores {T.sig(e.score)} against the best single model's {T.sig(ref.score)}{iv} "
                   f"({T.answer_text(ref, run.rows, tags)}): {v['delta'] * 100:+.1f} pt, {verdict}{p}.")
    return out


def notes(run: Leaderboard, marked: str = "shaded") -> list[str]:
    """What the leaderboard needs said once: the tie, the ranking, the budget, the splits."""
    best, out = run.top, []
    if best is not None:
        out.append(tied_note(run, marked))
        out.append(ranking_note(run) + " Intervals are Wilson 95% score intervals.")
    if any(e.val_source == HOLDOUT for e in run.rows):
        out.append("Note: the data has no val split, so val is a stratified holdout from train "
                   "(the models were fitted on the rest of train).")
    selections = sorted({e.selection.split(" (")[0] for e in run.rows if e.selection})
    if selections:
        out.append("Model selection: " + "; ".join(selections) + " (sized from each feature set's rows; "
                   "a row's details give the time estimated before fitting).")
    if run.config.get("budget"):
        spent = f"; the run took {T.seconds(run.seconds)}" if run.seconds is not None else ""
        out.append(f"Run budget: {run.config['budget']} (backbones in the order given, each feature set's "
                   f"classifiers an equal share of what was left){spent}.")
    if any(e.test for e in run.rows):
        out.append("Test accuracy is computed once per model on the test split; it played no part in the ranking.")
    return out + ensemble_notes(run)


def misclassified_note(best: ResultRow | None, shown: int) -> str:
    if best is None:
        return ""
    wrong = len(best.val.get("misclassified") or [])
    if not wrong:
        return f"The best model misclassified none of the {best.val.get('n', '?')} val images."
    return f"The best model misclassified {wrong} of {best.val.get('n', '?')} val images; {shown} shown."


# --------------------------------------------------------------------------- Markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(head: list[str], rows: list[list[str]], bold_first: bool = False) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, row in enumerate(rows):
        cells = [_md_escape(c) for c in row]
        if bold_first and i == 0:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Section:
    """One dataset's part of the report (the whole report for a single dataset)."""

    name: str  # "" for a single-dataset run
    run: Leaderboard
    plots: list[Plot]
    extra: dict[str, str]
    exs: list[Extraction]
    audit: AuditView | None = None


def summary_block(run: Leaderboard) -> list[tuple[bool, str]]:
    """The summary's lines for a page, in order, as (is a command, text): not wrapped, no report path,
    the answer in bold."""
    lines = T.summary_lines(run.rows, run.skipped, run.seconds, None, width=10**6)
    tags = T.feature_tags(run.rows)
    for name in run.datasets:
        top = next(r for r in run.rows if r.dataset == name)
        answer = T.answer_text(top, [r for r in run.rows if r.dataset == name], tags)
        lines = [x.replace(f": {answer}, ", f": **{answer}**, ", 1) if x.startswith("Best") else x for x in lines]
    return [(f"{T.PROG} predict" in x, x.strip()) for x in lines]


def _md_summary(run: Leaderboard) -> list[str]:
    out = ["## Summary", ""]
    for command, line in summary_block(run):
        out += ["", "  ```", f"  {line}", "  ```"] if command else [f"- {line}"]
    return out + [""]


def _legend_text(run: Leaderboard) -> str:
    return "Feature sets: " + "; ".join(f"**{tag}** = {what}" for tag, what in sorted(T.legend(run.rows))) + "."


def skipped_section(run: Leaderboard) -> tuple[list[str], list[list[str]], list[str]]:
    """Skipped and approximated models in one grid (:func:`classify.table.skipped_table`)."""
    return T.skipped_table(run.skipped, run.rows)


SKIPPED_NOTE = ("Each cell: the fit time estimated before the model was left out (or approximated), by feature set; "
                "[n] is its reason, below.")


def _md_section(sec: Section, h: str) -> list[str]:
    run = sec.run
    out = [f"{h} Leaderboard", ""]
    if not run.rows:
        return out + ["No classifier results in this run.", ""]
    out += [T.markdown_table(run.rows), "", _legend_text(run), ""]
    out += [f"- {n}" for n in notes(run, marked="*tied* in vs #1")] + [""]
    out += [f"{h} Details", "", T.details_markdown(run.rows), ""]
    shead, srows, reasons = skipped_section(run)
    if srows:
        out += [f"{h} Skipped and approximated", "", SKIPPED_NOTE, "", markdown_table(shead, srows), ""]
        out += [f"{i}. {r}" for i, r in enumerate(reasons, 1)] + [""]
    vhead, vrows = views_table(run)
    if vrows:
        out += [f"{h} Augmented views", "", VIEWS_NOTE, "", markdown_table(vhead, vrows), ""]
    fhead, frows = few_shot_table(run)
    if frows:
        out += [f"{h} Few-shot curve", "", few_shot_note(run), "", markdown_table(fhead, frows), ""]
    out += [f"{h} Plots", ""]
    for p in sec.plots:
        out += [f"{h}# {p.title}", "", p.caption, "", f"![{p.title}]({p.name})", ""]
    if sec.extra.get("misclassified") and not any(p.name.endswith("misclassified.png") for p in sec.plots):
        out += [sec.extra["misclassified"], ""]
    if sec.audit:
        out += [f"{h} Data audit", ""] + [f"- {n}" for n in sec.audit.notes] + [""]
        for title, head, rows in sec.audit.tables:
            out += [f"{h}# {title}", "", markdown_table(head, rows), ""]
        for p in sec.audit.plots:
            out += [f"{h}# {p.title}", "", p.caption, "", f"![{p.title}]({p.name})", ""]
    return out


def render_markdown(run: Leaderboard, exs: list[Extraction], sections: list[Section]) -> str:
    out = [f"# {TITLE}", "", summary_line(run, exs), ""] + _md_summary(run)
    if run.multi:
        ahead, arows = across_table(run)
        out += ["## Across datasets", "", across_note(run), "", markdown_table(ahead, arows) if arows
                else "No model ran on every dataset.", ""]
        for sec in sections:
            out += [f"## Dataset: {sec.name}", "", summary_line(sec.run, sec.exs), ""] + _md_section(sec, "###")
    else:
        out += _md_section(sections[0], "##")
    out += ["## Provenance", ""]
    out += [f"- {forward_pass_line(ex)}" for ex in exs] + [""]
    fhead, frows = feature_rows(exs)
    out += [markdown_table(fhead, frows), ""] if frows else []
    out += [f"- {environment_line(ex)}" for ex in exs] + [""]
    for ex in exs:
        listed, more = skipped_files(ex)
        if listed:
            out += [f"Skipped (unreadable) images, {ex.backbone}:", ""]
            out += [f"- `{path}`: {reason}" for path, reason in listed]
            out += [f"- ... and {more} more (`pipeline.py info STORE --errors N`)"] if more else []
            out.append("")
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;margin:0;background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:18px 28px 48px;box-sizing:border-box}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:19px;margin:28px 0 8px;border-bottom:2px solid #dde1e6;padding-bottom:3px}
h3{font-size:15px;margin:0 0 6px}.meta{color:#4a5560;margin:0 0 10px}
.answer{background:#fff;border-left:5px solid #2f7d32;padding:8px 16px;margin:0 0 6px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.answer p{margin:3px 0}.nw{white-space:nowrap}.answer .lead{font-size:16px}.answer pre{margin:4px 0 6px;white-space:pre-wrap;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{padding:4px 8px;border-bottom:1px solid #e6e9ed;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eef1f4;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.legend{font-size:13px;color:#4a5560;margin:6px 0}
table.skipped{width:auto;min-width:50%}table.skipped td:first-child{padding-right:24px}
.notes li{margin:2px 0}.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px}
figure.wide{grid-column:1/-1}figure.wide img{max-width:960px}
figure{margin:0;background:#fff;padding:12px;box-shadow:0 1px 2px rgba(0,0,0,.06);min-width:0}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#4a5560;font-size:13px;margin:4px 0 8px}
code{font-size:12px;background:#eef1f4;padding:1px 4px;border-radius:3px;overflow-wrap:anywhere}
.small{font-size:12px;color:#4a5560}pre{overflow-x:auto}
""" + T.BOARD_CSS

# Counts script errors (data-script-errors) and images that failed to decode (data-broken-images),
# so a headless browser can prove neither happened; then makes the leaderboards sortable.
SCRIPT = """var featcacheErrors=0;window.addEventListener('error',function(){featcacheErrors++;
if(document.body)document.body.dataset.scriptErrors=String(featcacheErrors);});
window.addEventListener('load',function(){var n=0;document.querySelectorAll('img').forEach(function(i){
if(!i.complete||i.naturalWidth===0)n++;});document.body.dataset.brokenImages=String(n);
document.body.dataset.scriptErrors=String(featcacheErrors);});
document.addEventListener('DOMContentLoaded',function(){""" + T.SORT_JS + "});"

WIDE = {"accuracy_vs_fit_time.png", "audit_duplicates.png", "audit_label_issues.png", "audit_mistake_neighbours.png"}  # many labelled points: give it the page's width
NUMERIC = {"#", "val acc", "bal acc", "macro-F1", "log loss", "test acc", "fit s", "predict s", "dim", "skipped",
           "extraction s", "img/s", "val acc [95% CI]", "test acc [95% CI]", "cv acc (mean ± sd) [95% CI]", "est. s",
           "mean acc", "mean rank", "1", "2", "4", "8", "16", "all", "cosine", "p(given)", "dropped",
           "test acc, leaks dropped", "val acc, leaks dropped", "distance to k-th neighbour"}


def _inline_md(text: str) -> str:
    """The few Markdown marks the shared text uses (**bold**, `code`), escaped first."""
    out, parts = [], html.escape(text).split("`")
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{part}</code>")
        else:
            bits = part.split("**")
            out.append("".join(f"<b>{b}</b>" if j % 2 else b for j, b in enumerate(bits)))
    return "".join(out)


def html_table(head: list[str], rows: list[list[str]], table_id: str = "") -> str:
    """A plain table (provenance, audit, few-shot, across datasets); numbers right-aligned."""
    cls = ['class="n"' if h in NUMERIC else "" for h in head]
    th = "".join(f"<th {c}>{html.escape(h)}</th>" for c, h in zip(cls, head))
    body = "".join("<tr>" + "".join(f"<td {c}>{html.escape(v)}</td>" for c, v in zip(cls, row)) + "</tr>" for row in rows)
    return f"<table{f' id={table_id}' if table_id else ''}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_summary(run: Leaderboard) -> str:
    """The answer first: rank 1, how sure, the tie, test, the predict command, time and skips."""
    out = []
    for i, (command, line) in enumerate(summary_block(run)):
        if command:
            out.append(f"<pre><code>{html.escape(line)}</code></pre>")
            continue
        text = re.sub(r"\(95% CI [0-9.]+-[0-9.]+\)", r"<span class=nw>\g<0></span>", _inline_md(line))
        out.append(f'<p{" class=lead" if i == 0 else ""}>{text}</p>')
    return '<section class="answer" id="summary">' + "".join(out) + "</section>"


def _skipped_html(run: Leaderboard, h: int) -> list[str]:
    head, rows, reasons = skipped_section(run)
    if not rows:
        return []
    cells = [[html.escape(c) for c in r] for r in rows]
    cells = [[re.sub(r" \[(\d+)\]$", r" <sup>\1</sup>", c) for c in r] for r in cells]
    th = "".join(f"<th{'' if j == 0 else ' class=n'}>{html.escape(x)}</th>" for j, x in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{'' if j == 0 else ' class=n'}>{c}</td>" for j, c in enumerate(r)) + "</tr>"
                   for r in cells)
    return [f"<h{h}>Skipped and approximated</h{h}>", f"<p class=small>{_inline_md(SKIPPED_NOTE)}</p>",
            f"<table class=skipped><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>",
            "<ol class='notes small'>" + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ol>"]


def _html_section(sec: Section, h: int) -> list[str]:
    run = sec.run
    if not run.rows:
        return [f"<h{h}>Leaderboard</h{h}>", "<p>No classifier results.</p>"]
    board_id = f"board-{sec.name}" if sec.name else "board"
    parts = [f"<h{h}>Leaderboard</h{h}>",
             "<p class=small>Click a header to sort, <b>+</b> for a row's parameters, intervals, estimate and "
             "predict time. Shaded rows are tied with rank 1; green marks each metric's best value.</p>",
             T.html_table(run.rows, table_id=board_id),
             f"<p class=legend>{_inline_md(_legend_text(run))}</p>",
             '<ul class="notes">' + "".join(f"<li>{_inline_md(n)}</li>" for n in notes(run)) + "</ul>"]
    parts += _skipped_html(run, h)
    vhead, vrows = views_table(run)
    if vrows:
        parts += [f"<h{h}>Augmented views</h{h}>", f"<p>{_inline_md(VIEWS_NOTE)}</p>", html_table(vhead, vrows)]
    fhead, frows = few_shot_table(run)
    if frows:
        parts += [f"<h{h}>Few-shot curve</h{h}>", f"<p>{_inline_md(few_shot_note(run))}</p>", html_table(fhead, frows)]
    parts += [f"<h{h}>Plots</h{h}>", '<div class="plots">']
    parts += [_figure(p) for p in sec.plots]
    parts.append("</div>")
    if sec.extra.get("misclassified") and not any(p.name.endswith("misclassified.png") for p in sec.plots):
        parts.append(f"<p>{_inline_md(sec.extra['misclassified'])}</p>")
    if sec.audit:
        parts += [f"<h{h}>Data audit</h{h}>",
                  '<ul class="notes">' + "".join(f"<li>{_inline_md(n)}</li>" for n in sec.audit.notes) + "</ul>"]
        for title, head, rows in sec.audit.tables:
            parts += [f"<h3>{html.escape(title)}</h3>", html_table(head, rows)]
        parts.append('<div class="plots">')
        parts += [_figure(p) for p in sec.audit.plots]
        parts.append("</div>")
    return parts


def _figure(p: Plot) -> str:
    wide = ' class="wide"' if p.name.split("__")[-1] in WIDE else ""
    return (f'<figure{wide}><h3>{html.escape(p.title)}</h3><figcaption>{_inline_md(p.caption)}</figcaption>'
            f'<img src="{data_uri(p.png)}" alt="{html.escape(p.title)}"></figure>')


def render_html(run: Leaderboard, exs: list[Extraction], sections: list[Section]) -> str:
    parts = [f"<h1>{html.escape(TITLE)}</h1>", f'<p class="meta">{_inline_md(summary_line(run, exs))}</p>',
             _html_summary(run)]
    if run.multi:
        ahead, arows = across_table(run)
        parts += ["<h2>Across datasets</h2>", f"<p>{_inline_md(across_note(run))}</p>",
                  html_table(ahead, arows, "across") if arows else "<p>No model ran on every dataset.</p>"]
        for sec in sections:
            parts += [f'<h2 id="dataset-{html.escape(sec.name)}">Dataset: {html.escape(sec.name)}</h2>',
                      f'<p class="meta">{_inline_md(summary_line(sec.run, sec.exs))}</p>'] + _html_section(sec, 3)
    else:
        parts += _html_section(sections[0], 2)
    parts += ["<h2>Provenance</h2>",
              '<ul class="notes">' + "".join(f"<li>{_inline_md(forward_pass_line(ex))}</li>" for ex in exs) + "</ul>"]
    fhead, frows = feature_rows(exs)
    if frows:
        parts.append(html_table(fhead, frows))
    parts.append('<ul class="notes small">' + "".join(f"<li>{_inline_md(environment_line(ex))}</li>" for ex in exs)
                 + "</ul>")
    for ex in exs:
        listed, more = skipped_files(ex)
        if listed:
            items = "".join(f"<li><code>{html.escape(p)}</code>: {html.escape(r)}</li>" for p, r in listed)
            items += f"<li>... and {more} more</li>" if more else ""
            parts.append(f"<h3>Skipped (unreadable) images, {html.escape(ex.backbone)}</h3>"
                         f"<ul class='small'>{items}</ul>")
    config = html.escape(json.dumps(run.config, indent=1, sort_keys=True))
    parts.append(f"<details class='small'><summary>Run configuration</summary><pre>{config}</pre></details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{html.escape(TITLE)}</title>"
            f"<style>{CSS}</style><script>{SCRIPT}</script></head>\n<body><main>\n" + "\n".join(parts)
            + "\n</main></body></html>\n")
