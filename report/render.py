"""report.md and report.html from one set of formatted cells, so the two always agree.

The HTML is a single offline file: inline CSS, plots as base64 data URIs, and a tiny
script that counts images that failed to decode (``body[data-broken-images]``) so a
headless browser test can prove nothing is broken.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from report.plots import Plot
from report.provenance import Extraction, environment_line, feature_rows, forward_pass_line, plural, skipped_files
from report.results import HOLDOUT, Entry, Run

TITLE = "Transfer-learning comparison"


def fmt(x: Any, digits: int = 3) -> str:
    """Metrics with fixed decimals; None (no probabilities, no test split) as a dash."""
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def fmt_s(x: Any) -> str:
    """Seconds with three significant digits: 0.00042 and 123 both stay readable."""
    return "-" if not isinstance(x, (int, float)) else f"{x:.3g}"


def params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "-"


def leaderboard_table(run: Run, top: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows, best first; top-k and test columns only when some row has them."""
    ks = run.top_ks
    k = ks[-1] if ks and ks[-1] != "top1" else None
    has_test = any(e.test for e in run.entries)
    head = ["#", "backbone", "layer", "pooling", "model", "val acc", "bal acc", "macro-F1", "log loss"] \
        + ([f"top-{k[3:]}"] if k else []) + (["test acc"] if has_test else []) + ["fit s", "est. s", "predict s", "params"]
    rows = []
    for e in run.entries[:top]:
        v = e.val
        cells = [str(e.rank), e.backbone, e.layer, e.pooling, e.model, fmt(v.get("accuracy")),
                 fmt(v.get("balanced_accuracy")), fmt(v.get("macro_f1")), fmt(v.get("log_loss"))]
        cells += [fmt((v.get("top_k") or {}).get(k))] if k else []
        cells += [fmt(e.test.get("accuracy") if e.test else None)] if has_test else []
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
    counts = [ex.record.get("rows") or (ex.facts.info.n_rows if ex.facts.info else 0) for ex in exs]
    return max(counts) if counts and max(counts) else None


def summary_line(run: Run, exs: list[Extraction]) -> str:
    n_img = images_count(run, exs)
    backbones = list(dict.fromkeys([ex.backbone for ex in exs] + [e.backbone for e in run.entries]))
    parts = [plural(n_img, "image") if n_img else None, plural(len(backbones), "backbone"),
             plural(len(run.feature_sets), "feature set"), plural(len(run.models), "classifier"),
             plural(len(run.entries), "run"), f"{run.seconds:.1f} s total" if run.seconds is not None else None]
    data = run.config.get("data")
    return (f"data `{data}`: " if data else "") + " · ".join(p for p in parts if p)


def notes(run: Run) -> list[str]:
    best, out = run.best, []
    if best is not None:
        out.append(f"Best: **{best.model}** on {best.feature_set}, val accuracy {fmt(best.val.get('accuracy'))} "
                   f"on {best.val.get('n', '?')} images. Ranked by val accuracy, then balanced accuracy, macro-F1 "
                   f"and faster fit.")
    if any(e.val_source == HOLDOUT for e in run.entries):
        out.append("Note: the data has no val split, so val is a stratified holdout from train "
                   "(the models were fitted on the rest of train).")
    selections = sorted({e.selection.split(" (")[0] for e in run.entries if e.selection})
    if selections:
        out.append("Model selection: " + "; ".join(selections) + " (sized from each feature set's rows; "
                   "est. s is the time estimated before fitting).")
    for sk in run.skipped:
        out.append(f"Skipped under the budget: {sk.get('model')} on {sk.get('backbone')} {sk.get('feature')}: "
                   f"{sk.get('reason')}.")
    if any(e.test for e in run.entries):
        out.append("Test accuracy is computed once per model on the test split; it played no part in the ranking.")
    return out


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


def render_markdown(run: Run, exs: list[Extraction], plots: list[Plot], extra: dict[str, str]) -> str:
    head, rows = leaderboard_table(run)
    out = [f"# {TITLE}", "", summary_line(run, exs), "", "## Leaderboard", ""]
    out += [markdown_table(head, rows, bold_first=True) if rows else "No classifier results in this run.", ""]
    out += [f"- {n}" for n in notes(run)] + [""]
    vhead, vrows = views_table(run)
    if vrows:
        out += ["## Augmented views", "", VIEWS_NOTE, "", markdown_table(vhead, vrows), ""]
    out += ["## Plots", ""]
    for p in plots:
        out += [f"### {p.title}", "", p.caption, "", f"![{p.title}]({p.name})", ""]
    if extra.get("misclassified") and not any(p.name == "misclassified.png" for p in plots):
        out += [extra["misclassified"], ""]
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
.notes li{margin:2px 0}.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px}
figure.wide{grid-column:1/-1}figure.wide img{max-width:960px}
figure{margin:0;background:#fff;padding:12px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#4a5560;font-size:13px;margin:4px 0 8px}
code{font-size:12px;background:#eef1f4;padding:1px 4px;border-radius:3px}.small{font-size:12px;color:#4a5560}
"""

SCRIPT = """window.addEventListener('load',function(){var n=0;document.querySelectorAll('img').forEach(function(i){
if(!i.complete||i.naturalWidth===0)n++;});document.body.dataset.brokenImages=String(n);});"""

WIDE = {"accuracy_vs_fit_time.png"}  # many labelled points: give it the page's width
NUMERIC = {"#", "val acc", "bal acc", "macro-F1", "log loss", "test acc", "fit s", "predict s", "dim", "skipped",
           "extraction s", "img/s"}


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


def html_table(head: list[str], rows: list[list[str]], best_first: bool = False) -> str:
    cls = ['class="n"' if h in NUMERIC else "" for h in head]
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        tds = "".join(f"<td {c}>{html.escape(v)}</td>" for c, v in zip(cls, row))
        body.append(f'<tr class="best">{tds}</tr>' if best_first and i == 0 else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(run: Run, exs: list[Extraction], plots: list[Plot], extra: dict[str, str]) -> str:
    head, rows = leaderboard_table(run)
    parts = [f"<h1>{html.escape(TITLE)}</h1>", f'<p class="summary">{_inline_md(summary_line(run, exs))}</p>',
             "<h2>Leaderboard</h2>",
             html_table(head, rows, best_first=True) if rows else "<p>No classifier results.</p>",
             '<ul class="notes">' + "".join(f"<li>{_inline_md(n)}</li>" for n in notes(run)) + "</ul>"]
    vhead, vrows = views_table(run)
    if vrows:
        parts += ["<h2>Augmented views</h2>", f"<p>{_inline_md(VIEWS_NOTE)}</p>", html_table(vhead, vrows)]
    parts += ["<h2>Plots</h2>", '<div class="plots">']
    for p in plots:
        wide = ' class="wide"' if p.name in WIDE else ""
        parts.append(f'<figure{wide}><h3>{html.escape(p.title)}</h3><figcaption>{_inline_md(p.caption)}</figcaption>'
                     f'<img src="{data_uri(p.png)}" alt="{html.escape(p.title)}"></figure>')
    parts.append("</div>")
    if extra.get("misclassified") and not any(p.name == "misclassified.png" for p in plots):
        parts.append(f"<p>{_inline_md(extra['misclassified'])}</p>")
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
