"""report.md and report.html from one set of formatted cells, so the two always agree.

The HTML is a single offline file: inline CSS, plots as base64 data URIs, and a tiny
script that counts images that failed to decode (``body[data-broken-images]``) so a
headless browser test can prove nothing is broken.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from typing import Any

from classify.ranking import Entry
from report.audit import AuditView
from report.plots import Plot
from report.provenance import Extraction, environment_line, feature_rows, forward_pass_line, plural, skipped_files
from report.results import Run, across_datasets, ensemble_verdicts
from store.splits import VAL_HOLDOUT as HOLDOUT

TITLE = "Transfer-learning comparison"


def fmt(x: Any, digits: int = 3) -> str:
    """Metrics with fixed decimals; None (no probabilities, no test split) as a dash."""
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def fmt_s(x: Any) -> str:
    """Seconds with three significant digits: 0.00042 and 123 both stay readable."""
    return "-" if not isinstance(x, (int, float)) else f"{x:.3g}"


def params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "-"


def with_ci(x: Any, ci: list | None) -> str:
    """``0.980 [0.895, 0.996]``: an accuracy and its 95% interval."""
    return fmt(x) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")


def cv_text(cv: dict | None, ci: bool = True) -> str:
    """``0.962 ± 0.035 [0.913, 0.983]``: mean ± sd over folds, and the Wilson interval of the
    pooled out-of-fold accuracy (every image predicted once by a model that never saw it)."""
    if not cv or cv.get("mean") is None:
        return "-"
    iv = cv.get("ci") if ci else None
    return f"{cv['mean']:.3f} ± {cv.get('sd') or 0:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")


def versus_best(e: Entry) -> str:
    """The paired test's verdict against rank 1, as the leaderboard shows it."""
    if e.rank == 1:
        return "best (vote of the tied)" if e.kind == "soft-vote" else "best"
    if e.p_vs_best is None:
        return "not paired"
    return f"{'tied' if e.tied else 'worse'} (p={e.p_vs_best:.2g})"


def leaderboard_table(run: Run, top: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows, best first; CV, top-k and test columns only when some row has them.

    Every accuracy carries its Wilson 95% interval; "vs #1" is the exact McNemar test against
    rank 1 on the same images (tied: not significantly worse at the 5% level)."""
    ks = run.top_ks
    k = ks[-1] if ks and ks[-1] != "top1" else None
    has_test = any(e.test for e in run.entries)
    cv = run.selection == "cv"
    cv_bal = cv and run.metric == "balanced_accuracy"
    head = ["#", "backbone", "layer", "pooling", "model"] + (["cv acc (mean ± sd) [95% CI]"] if cv else []) \
        + (["cv bal acc (mean ± sd)"] if cv_bal else []) \
        + ["val acc [95% CI]", "vs #1", "bal acc", "macro-F1", "log loss"] \
        + ([f"top-{k[3:]}"] if k else []) + (["test acc [95% CI]", "test bal acc"] if has_test else []) \
        + ["fit s", "est. s", "predict s", "params"]
    rows = []
    for e in run.entries[:top]:
        v = e.val
        cells = [str(e.rank), e.backbone, e.layer, e.pooling, e.model] + ([cv_text(e.cv)] if cv else [])
        if cv_bal:
            b = (e.cv or {}).get("balanced_mean")
            cells += [f"{fmt(b)} ± {fmt((e.cv or {}).get('balanced_sd'))}" if b is not None else "-"]
        cells += [with_ci(v.get("accuracy"), e.val_ci), versus_best(e), fmt(v.get("balanced_accuracy")),
                  fmt(v.get("macro_f1")), fmt(v.get("log_loss"))]
        cells += [fmt((v.get("top_k") or {}).get(k))] if k else []
        cells += [with_ci(e.test.get("accuracy") if e.test else None, e.test_ci),
                  fmt(e.test.get("balanced_accuracy") if e.test else None)] if has_test else []
        cells += [fmt_s(e.fit_s), fmt_s(e.estimate_s), fmt_s(v.get("predict_s")), params_text(e.params)]
        rows.append(cells)
    return head, rows


VARIANTS = ("", "+flip", "+views", "+views+flip")


def views_table(run: Run) -> tuple[list[str], list[list[str]]]:
    """Per feature set and model: val accuracy of each variant (center crops, ``+flip`` TTA,
    ``+views`` training, both) and its change against the first variant present; empty when
    no run has a variant to compare."""
    acc, bases = {}, {}
    for e in run.entries:
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


def images_count(run: Run, exs: list[Extraction]) -> int | None:
    """Images of the run: each dataset's largest store (its backbones share the images), summed."""
    per: dict[str, int] = {}
    for ex in exs:
        n = ex.record.get("rows") or (ex.facts.info.n_rows if ex.facts.info else 0)
        ds = str(ex.record.get("dataset") or "")
        per[ds] = max(per.get(ds, 0), n or 0)
    total = sum(per.values())
    return total or None


def summary_line(run: Run, exs: list[Extraction]) -> str:
    n_img = images_count(run, exs)
    backbones = list(dict.fromkeys(b for name in [ex.backbone for ex in exs] + [e.backbone for e in run.entries
                                                                                 if e.kind == "model"]
                                   for b in name.split("+")))  # an ensemble's "a+b" is two backbones seen already
    parts = [plural(n_img, "image") if n_img else None, plural(len(backbones), "backbone"),
             plural(len({e.feature_set for e in run.entries if e.kind == "model"}), "feature set"),
             plural(len(run.models), "classifier"),
             plural(len(run.entries), "run"), f"{run.seconds:.1f} s total" if run.seconds is not None else None]
    data = run.config.get("data")
    data = [data] if isinstance(data, str) else list(data or [])
    return (", ".join(f"`{d}`" for d in data) + ": " if data else "") + " · ".join(p for p in parts if p)


VOTE_RULE = (" A soft vote (of the tied group, or of each backbone's best model) goes first when it is itself tied "
             "with the top score.")


def ranking_note(run: Run) -> str:
    metric = "balanced accuracy" if run.metric == "balanced_accuracy" else "accuracy"
    refit = (" Saved models (test, predict) were refitted on train+val with their chosen configuration."
             if any(e.refit for e in run.entries) else "")
    if run.selection == "cv":
        cv = run.best.cv if run.best else {}
        return (f"Ranked by the {metric} of repeated stratified CV of each model's chosen configuration over "
                f"train+val ({cv.get('folds', '?')}-fold x {cv.get('repeats', '?')}, {cv.get('n', '?')} images; "
                f"mean ± sd over folds), then val accuracy, balanced accuracy, macro-F1 and faster fit; val and "
                f"test are reported, not used to choose." + VOTE_RULE + refit)
    return f"Ranked by val {metric}, then accuracy, balanced accuracy, macro-F1 and faster fit." + VOTE_RULE + refit


def tied_note(run: Run) -> str:
    """The tied group in words: one winner only when the data say so."""
    best, group = run.best, run.tied_group
    on = "the same out-of-fold predictions" if run.selection == "cv" else "the same val images"
    ref = next((e for e in run.entries if e.kind != "soft-vote"), best)  # what the others were paired with
    n = (ref.cv or {}).get("n") if run.selection == "cv" else ref.val.get("n")

    def score(e: Entry) -> str:
        return cv_text(e.cv) if run.selection == "cv" else with_ci(e.val.get("accuracy"), e.val_ci)

    if len(group) == 1:
        paired = [e for e in run.entries[1:] if e.p_vs_best is not None]
        return (f"Best: **{best.model}** on {best.feature_set} ({score(best)}), significantly better than all "
                f"{len(paired)} rows it could be paired with on {on} ({n} images; exact McNemar, p < 0.05).")
    singles = [e for e in group if e.kind != "soft-vote"]
    names = ", ".join(f"{e.model} on {e.feature_set}" for e in singles[:12]) + (
        f" and {len(singles) - 12} more" if len(singles) > 12 else "")
    text = (f"**{len(singles)} rows are tied with the best**: none is significantly worse than the top score on {on} "
            f"({n} images; exact McNemar, p >= 0.05), so the data do not pick one winner among them: {names}.")
    if best.kind == "soft-vote":
        return text + (f" Rank 1 is their soft vote ({best.model}: {', '.join(best.members)}; {score(best)}), "
                       f"itself tied with the top score: averaging rows the data cannot separate is the lower-"
                       f"variance pick. The best single model is {ref.model} on {ref.feature_set} ({score(ref)}), "
                       f"saved at `{ref.model_path}`.")
    return text + f" Rank 1 ({best.model} on {best.feature_set}, {score(best)}) leads by the ranking's tie-breaks."


def few_shot_table(run: Run) -> tuple[list[str], list[list[str]]]:
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
            rows.append([c["backbone"], c["feature"], m] + [
                f"{at[s]['mean']:.3f} ± {at[s]['sd']:.3f}" if s in at and s != "all" else
                fmt(at[s]["mean"]) if s in at else "-" for s in shots])
    return head, rows


def few_shot_note(run: Run) -> str:
    c = run.few_shot[0] if run.few_shot else {}
    return (f"Train images per class (columns) against {c.get('split', 'test')} accuracy on "
            f"{c.get('n_eval', '?')} images: L2-normalized logistic regression (C=1) and DINO's weighted 20-NN, "
            f"fitted on {c.get('draws', 5)} seeded draws per shot count (the same draws for every feature set); "
            "mean ± sd over the draws, and one fit on the whole train split under 'all'.")


def across_table(run: Run) -> tuple[list[str], list[list[str]]]:
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


def across_note(run: Run) -> str:
    splits = sorted({e.reported[0] for e in run.entries})
    return (f"Each backbone x feature x model present in all {len(run.datasets)} datasets: its accuracy on each "
            f"({' / '.join(splits)} split), its rank among that dataset's single-model rows (ranked by the "
            "dataset's own selection score), and the mean of both, best mean rank first (as in Kornblith et al., "
            "'Do Better ImageNet Models Transfer Better?').")


def ensemble_notes(run: Run) -> list[str]:
    out = []
    for v in ensemble_verdicts(run):
        e, ref = v["entry"], v["best"]
        what = (f"{e.model} ({', '.join(e.members)})" if e.kind == "soft-vote"
                else f"{e.model} on concatenated {' + '.join(e.members)}")
        ci = ref.score_ci
        iv = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        verdict = ("beats it outside that interval" if v["outside"] else
                   "does not beat it outside that interval" if v["delta"] > 0 else "does not beat it")
        p = f"; paired test p={v['p']:.2g}" if v["p"] is not None else ""
        out.append(f"Ensemble: {what} scores {e.score:.3f} against the best single model's {ref.score:.3f}{iv} "
                   f"({ref.model} on {ref.feature_set}): {v['delta'] * 100:+.1f} pt, {verdict}{p}.")
    return out


def notes(run: Run) -> list[str]:
    best, out = run.best, []
    if best is not None:
        out.append(tied_note(run))
        out.append(ranking_note(run) + " Intervals are Wilson 95% score intervals.")
    if any(e.val_source == HOLDOUT for e in run.entries):
        out.append("Note: the data has no val split, so val is a stratified holdout from train "
                   "(the models were fitted on the rest of train).")
    selections = sorted({e.selection.split(" (")[0] for e in run.entries if e.selection})
    if selections:
        out.append("Model selection: " + "; ".join(selections) + " (sized from each feature set's rows; "
                   "est. s is the time estimated before fitting).")
    if run.config.get("budget"):
        spent = f"; the run took {run.seconds:.0f} s" if run.seconds is not None else ""
        out.append(f"Run budget: {run.config['budget']} (backbones in the order given, each feature set's "
                   f"classifiers an equal share of what was left){spent}.")
    for sk in run.skipped:
        if sk.get("kind") == "finetune":
            out.append(f"Fine-tuning {sk.get('backbone')}: not run ({sk.get('reason')}).")
        elif sk.get("kind") == "backbone":
            out.append(f"Skipped under the budget: backbone {sk.get('backbone')} (not extracted): {sk.get('reason')}.")
        else:
            out.append(f"Skipped under the budget: {sk.get('model')} on {sk.get('backbone')} {sk.get('feature')}: "
                       f"{sk.get('reason')}.")
    if any(e.test for e in run.entries):
        out.append("Test accuracy is computed once per model on the test split; it played no part in the ranking.")
    return out + ensemble_notes(run)


def misclassified_note(best: Entry | None, shown: int) -> str:
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
    run: Run
    plots: list[Plot]
    extra: dict[str, str]
    exs: list[Extraction]
    audit: AuditView | None = None


def _md_section(sec: Section, h: str) -> list[str]:
    run = sec.run
    head, rows = leaderboard_table(run)
    out = [f"{h} Leaderboard", ""]
    out += [markdown_table(head, rows, bold_first=True) if rows else "No classifier results in this run.", ""]
    out += [f"- {n}" for n in notes(run)] + [""]
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


def render_markdown(run: Run, exs: list[Extraction], sections: list[Section]) -> str:
    out = [f"# {TITLE}", "", summary_line(run, exs), ""]
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
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:32px 0 10px;border-bottom:2px solid #dde1e6;padding-bottom:4px}
h3{font-size:15px;margin:0 0 6px}.summary{color:#4a5560;margin:0 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{padding:5px 8px;border-bottom:1px solid #e6e9ed;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600;position:sticky;top:0}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#fff4c2;font-weight:600}tr.best td:first-child{border-left:4px solid #e0a800}
tr.tied td{background:#fffbe6}tr.tied td:first-child{border-left:4px solid #f3d36b}
.notes li{margin:2px 0}.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px}
figure.wide{grid-column:1/-1}figure.wide img{max-width:960px}
figure{margin:0;background:#fff;padding:12px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#4a5560;font-size:13px;margin:4px 0 8px}
code{font-size:12px;background:#eef1f4;padding:1px 4px;border-radius:3px}.small{font-size:12px;color:#4a5560}
"""

SCRIPT = """window.addEventListener('load',function(){var n=0;document.querySelectorAll('img').forEach(function(i){
if(!i.complete||i.naturalWidth===0)n++;});document.body.dataset.brokenImages=String(n);});"""

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


def html_table(head: list[str], rows: list[list[str]], best_first: bool = False, tied: set[int] = frozenset()) -> str:
    cls = ['class="n"' if h in NUMERIC else "" for h in head]
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        tds = "".join(f"<td {c}>{html.escape(v)}</td>" for c, v in zip(cls, row))
        mark = ' class="best"' if best_first and i == 0 else ' class="tied"' if i in tied else ""
        body.append(f"<tr{mark}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_section(sec: Section, h: int) -> list[str]:
    run = sec.run
    head, rows = leaderboard_table(run)
    parts = [f"<h{h}>Leaderboard</h{h}>",
             html_table(head, rows, best_first=True, tied={i for i, e in enumerate(run.entries) if e.tied})
             if rows else "<p>No classifier results.</p>",
             '<ul class="notes">' + "".join(f"<li>{_inline_md(n)}</li>" for n in notes(run)) + "</ul>"]
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


def render_html(run: Run, exs: list[Extraction], sections: list[Section]) -> str:
    parts = [f"<h1>{html.escape(TITLE)}</h1>", f'<p class="summary">{_inline_md(summary_line(run, exs))}</p>']
    if run.multi:
        ahead, arows = across_table(run)
        parts += ["<h2>Across datasets</h2>", f"<p>{_inline_md(across_note(run))}</p>",
                  html_table(ahead, arows) if arows else "<p>No model ran on every dataset.</p>"]
        for sec in sections:
            parts += [f'<h2 id="dataset-{html.escape(sec.name)}">Dataset: {html.escape(sec.name)}</h2>',
                      f'<p class="summary">{_inline_md(summary_line(sec.run, sec.exs))}</p>'] + _html_section(sec, 3)
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
