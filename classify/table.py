"""A ranked leaderboard as people read it: a few columns, rounded numbers, short names.

One set of columns (:func:`columns`) rendered three ways: aligned plain text for a terminal
(:func:`text_table`, at most 100 characters wide), Markdown (:func:`markdown_table`) and an HTML
fragment (:func:`html_table`, with a details row per model and sortable headers). The console,
the report and a notebook all show the same table this way. :func:`summary_lines` is the answer
in a few plain lines: what to use, how sure that is, and the command that predicts with it.

Only formatting lives here; leaderboard.csv and leaderboard.json keep exact numbers and full
names. Rows are ranked :class:`store.rows.ResultRow`s. The standard library and the row type
only, so a notebook shows it without the report.
"""

from __future__ import annotations

import html
import math
import os
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcache.store.rows import ResultRow

WIDTH = 100  # the console table's and summary's widest line
TOP = 10  # rows the console shows
PROG = "python pipeline.py"


# --------------------------------------------------------------------------- numbers and names


def sig(x: Any, digits: int = 3) -> str:
    """``digits`` significant digits, trailing zeros kept so a column of scores aligns
    (0.9 -> 0.900); None, NaN and non-numbers as a dash."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:#.{digits}g}".rstrip(".")


def seconds(s: Any) -> str:
    """A duration as people say it: 0.42 ms, 16.2 s, 3 s, 3.1 min, 1.5 h (no trailing zeros)."""
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
        return "-"
    if s == 0:
        return "0 s"
    value, unit = (s * 1000, "ms") if s < 1 else (s, "s") if s < 60 else (s / 60, "min") if s < 3600 else (s / 3600, "h")
    return f"{_trim(sig(value, 2 if unit != 's' else 3))} {unit}"


def _trim(text: str) -> str:
    """``0.100`` -> ``0.1``, ``3.00`` -> ``3``: where no column has to align."""
    return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text


def p_value(p: Any) -> str:
    """Two significant digits; below 0.001 as ``<0.001``."""
    if not isinstance(p, (int, float)) or not math.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def interval(ci: Any, digits: int = 2) -> str:
    """``0.92-0.99``: a 95% interval in as few characters as it takes."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(isinstance(c, (int, float)) for c in ci):
        return "-"
    return f"{ci[0]:.{digits}f}-{ci[1]:.{digits}f}"


def param_text(params: dict) -> str:
    """``C=0.0316, penalty=l2``: parameters as people write them (3 significant digits, C=0.1 not 0.100)."""
    return ", ".join(f"{k}={_trim(sig(v)) if isinstance(v, float) else v}" for k, v in (params or {}).items()
                     if k != "note") or "-"


def short_backbone(name: str) -> str:
    """``efficientnet_lite0`` -> ``lite0``, ``timm:vit_small_patch14_dinov2.lvd142m`` ->
    ``vit_small_patch14_dinov2``, ``open_clip:ViT-B-32/laion2b`` -> ``ViT-B-32``; an ensemble's
    ``a+b`` part by part."""
    if "+" in name:
        return "+".join(sorted(short_backbone(n) for n in name.split("+")))
    n = name
    if n.startswith("timm:"):
        n = n[5:].split(".")[0]
    elif n.startswith("open_clip:"):
        n = n[10:].split("/")[0]
    if n.startswith("efficientnet_lite"):
        return n[len("efficientnet_"):]
    return n.replace("efficientnet", "effnet")


def shown_path(path: Any, start: str | None = None) -> str:
    """A path relative to the current directory when it lies below it, else as given."""
    if not path:
        return ""
    try:
        rel = os.path.relpath(os.fspath(path), start)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def short_layer(feature: str) -> str:
    """``_fc:in/none`` -> ``fc:in``, ``layer4/avg`` -> ``layer4/avg``: what tells feature sets apart."""
    layer, _, pool = feature.rpartition("/")
    layer = (layer or feature).lstrip("_")
    return layer if pool in ("", "none") else f"{layer}/{pool}"


def feature_tags(rows: Iterable[ResultRow]) -> dict[tuple[str, str], str]:
    """(backbone, feature) -> a short tag: the short backbone, plus the layer when the backbone
    has several feature sets in these rows (``lite0``, or ``lite0 fc:in`` and ``lite0 bn1``)."""
    return tags_of([(r.backbone, r.feature) for r in rows if r.kind == "model"])


def tags_of(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """:func:`feature_tags` of (backbone, feature) pairs."""
    sets = list(dict.fromkeys(pairs))
    per: dict[str, list[str]] = {}
    for bb, ft in sets:
        per.setdefault(bb, []).append(ft)
    shorts = {bb: short_backbone(bb) for bb in per}
    clash = {s for s in shorts.values() if list(shorts.values()).count(s) > 1}
    out = {}
    for bb, ft in sets:
        name = bb if shorts[bb] in clash else shorts[bb]
        out[(bb, ft)] = name if len(per[bb]) == 1 else f"{name} {short_layer(ft)}"
    return out


def legend(rows: Iterable[ResultRow]) -> list[tuple[str, str]]:
    """(tag, what it stands for): each feature set's backbone, layer and pooling, said once."""
    out = []
    for (bb, ft), tag in feature_tags(rows).items():
        layer, _, pool = ft.rpartition("/")
        out.append((tag, f"{bb}, layer {layer or ft}" + (f", pooling {pool}" if pool else "")))
    return out


def feature_text(r: ResultRow, tags: dict[tuple[str, str], str]) -> str:
    """The feature set a row was trained on, by its tag; a concatenation's tags; a vote's backbones."""
    if r.kind == "model":
        return tags.get((r.backbone, r.feature)) or f"{short_backbone(r.backbone)} {short_layer(r.feature)}"
    if r.kind == "concat":  # its members are feature sets, "<backbone> <layer>/<pool>"
        parts = [tuple(m.split(" ", 1)) for m in r.members]
        if parts and all(len(x) == 2 and x in tags for x in parts):
            return "+".join(tags[x] for x in parts)
    return short_backbone(r.backbone)


def model_text(r: ResultRow) -> str:
    """``logreg``; ``logreg (concat)``; a soft vote: ``vote: 5 tied`` or ``vote: best of each`` (backbone)."""
    if r.kind == "soft-vote":
        return "vote: best of each" if "best" in r.feature else f"vote: {len(r.members) or '?'} tied"
    if r.kind == "concat":
        return f"{r.model} (concat)"
    return r.model


def member_text(member: str, rows: Sequence[ResultRow], tags: dict[tuple[str, str], str]) -> str:
    """An ensemble member (a row's label, or a feature set) in short names: ``logreg on lite2``."""
    for r in rows:
        if r.label == member:
            return f"{r.model} on {feature_text(r, tags)}"
        if r.feature_set == member:
            return feature_text(r, tags)
    return member


def answer_text(r: ResultRow, rows: Sequence[ResultRow], tags: dict[tuple[str, str], str]) -> str:
    """Rank 1 in plain words: ``logreg on lite2``, ``soft vote of 3 models (logreg on lite2, ...)``."""
    if r.kind == "soft-vote":
        members = [member_text(m, rows, tags) for m in r.members]
        return f"soft vote of {len(members)} models ({', '.join(members)})"
    if r.kind == "concat":
        return f"{r.model} on concatenated {' + '.join(member_text(m, rows, tags) for m in r.members)}"
    return f"{r.model} on {feature_text(r, tags)}"


def score_name(rows: Sequence[ResultRow]) -> str:
    """What ranks the rows: ``cv acc``, ``val acc``, ``cv bal acc``, ``val bal acc``."""
    r = rows[0] if rows else None
    where = "cv" if r is not None and any(x.cv for x in rows) else "val"
    return f"{where} {'bal acc' if r is not None and r.metric == 'balanced_accuracy' else 'acc'}"


def versus(r: ResultRow) -> str:
    """The paired test against rank 1: ``best``, ``tied p=0.22``, ``worse p=0.012``, ``not paired``."""
    if r.rank == 1:
        return "best"
    if r.p_vs_best is None:
        return "not paired"
    return f"{'tied' if r.tied else 'worse'} p={p_value(r.p_vs_best)}"


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    """One column: header, formatted cells, the raw values (for sorting and the best mark)."""

    head: str
    cells: list[str]
    values: list[Any]  # numbers sort as numbers, text as text
    best: str = ""  # "max" or "min": mark the best value, as PyCaret does; "" for none
    numeric: bool = False
    title: str = ""  # what the header means, for a tooltip
    optional: int = 0  # dropped first (highest first) when the text table is too wide
    sub: list[str] | None = None  # a second, smaller value per cell (the score's interval)

    def text(self, i: int) -> str:
        """The cell as plain text: ``0.970 (0.92-0.99)``."""
        sub = self.sub[i] if self.sub else "-"
        return self.cells[i] if sub == "-" else f"{self.cells[i]} ({sub})"

    def best_rows(self) -> set[int]:
        nums = [v for v in self.values if isinstance(v, (int, float)) and math.isfinite(v)]
        if not self.best or len(nums) < 2:
            return set()
        top = max(nums) if self.best == "max" else min(nums)
        return {i for i, v in enumerate(self.values) if v == top}


def _get(d: dict | None, key: str) -> Any:
    return (d or {}).get(key)


def columns(rows: Sequence[ResultRow], tags: dict[tuple[str, str], str] | None = None) -> list[Column]:
    """The columns a person scans: rank, model, features, the ranking score and its interval, the
    paired test against rank 1, the other val metric, macro-F1, test accuracy (when any) and fit time."""
    tags = feature_tags(rows) if tags is None else tags
    bal = bool(rows) and rows[0].metric == "balanced_accuracy"
    other, other_head = ("accuracy", "val acc") if bal else ("balanced_accuracy", "bal acc")
    cols = [
        Column("#", [str(r.rank) for r in rows], [r.rank for r in rows], numeric=True),
        Column("model", [model_text(r) for r in rows], [model_text(r) for r in rows]),
        Column("features", [feature_text(r, tags) for r in rows], [feature_text(r, tags) for r in rows],
               title="feature set: the legend below names its backbone, layer and pooling"),
        Column(score_name(rows), [sig(r.score) for r in rows], [r.score for r in rows], "max", True,
               "what ranks the rows, with its Wilson 95% interval", sub=[interval(r.score_ci) for r in rows]),
        Column("vs #1", [versus(r) for r in rows], [r.p_vs_best for r in rows], numeric=True,
               title="exact McNemar test against rank 1 on the same images: tied when p >= 0.05"),
        Column(other_head, [sig(_get(r.val, other)) for r in rows], [_get(r.val, other) for r in rows], "max", True,
               f"{other.replace('_', ' ')} on val", optional=3),
        Column("F1", [sig(_get(r.val, "macro_f1")) for r in rows], [_get(r.val, "macro_f1") for r in rows], "max",
               True, "macro-F1 on val", optional=4),
    ]
    if any(r.test for r in rows):
        cols.append(Column("test acc", [sig(_get(r.test, "accuracy")) for r in rows],
                           [_get(r.test, "accuracy") for r in rows], "max", True, "accuracy on the test split"))
    fit = [None if r.kind == "soft-vote" else r.fit_s for r in rows]
    cols.append(Column("fit", [seconds(s) for s in fit], fit, numeric=True, title="time to fit", optional=2))
    return cols


def details(r: ResultRow) -> list[tuple[str, str]]:
    """(what, value) of one row beyond the visible columns: parameters, every interval, the
    estimate, predict time, where the model is."""
    v, cv, t = r.val or {}, r.cv or {}, r.test or {}
    params = {k: x for k, x in (r.params or {}).items() if not (r.members and k == "members")}
    out = [("parameters", param_text(params))]
    if _get(r.params, "note"):
        out.append(("note", str(r.params["note"])))
    vci = getattr(r, "val_ci", None) or v.get("accuracy_ci")
    out.append(("val accuracy", f"{sig(v.get('accuracy'))} ({interval(vci, 3)}, {v.get('n', '?')} images)"))
    if cv.get("mean") is not None:
        out.append(("cv accuracy", f"{sig(cv['mean'])} ± {sig(cv.get('sd'), 2)} over {cv.get('folds', '?')}-fold x "
                                   f"{cv.get('repeats', '?')} ({interval(cv.get('ci'), 3)}, {cv.get('n', '?')} images)"))
    if t.get("accuracy") is not None:
        ci = getattr(r, "test_ci", None) or t.get("accuracy_ci")
        out.append(("test accuracy", f"{sig(t['accuracy'])} ({interval(ci, 3)}, {t.get('n', '?')} images)"))
    if cv.get("balanced_mean") is not None:
        out.append(("cv balanced accuracy", f"{sig(cv['balanced_mean'])} ± {sig(cv.get('balanced_sd'), 2)}"))
    out += [("log loss", sig(v.get("log_loss"))),
            ("fit", seconds(r.fit_s) if r.kind != "soft-vote" else "-"), ("estimated", seconds(r.estimate_s)),
            ("predict (val)", seconds(v.get("predict_s")))]
    top = {k: x for k, x in (v.get("top_k") or {}).items() if k != "top1"}
    if top:
        out.append(("top-k", ", ".join(f"{k.replace('top', 'top-')} {sig(x)}" for k, x in top.items())))
    if r.members:
        out.append(("members", ", ".join(r.members)))
    out.append(("model file", shown_path(r.model_path) or "none"))
    return [(k, x) for k, x in out if x not in ("-", "")]


# --------------------------------------------------------------------------- renderings


def _take(rows: Sequence[ResultRow], top: int | None) -> list[ResultRow]:
    """The first ``top`` rows; of n datasets, the first ``top / (n + 1)`` of each."""
    names = list(dict.fromkeys(r.dataset for r in rows))
    if top is None:
        return list(rows)
    if len(names) < 2:
        return list(rows[:top])
    each = max(1, top // (len(names) + 1))  # room for each dataset's answer above the table
    return [r for n in names for r in [x for x in rows if x.dataset == n][:each]]


def _with_dataset(rows: Sequence[ResultRow], cols: list[Column]) -> list[Column]:
    if len({r.dataset for r in rows}) < 2:
        return cols
    return [Column("data", [r.dataset for r in rows], [r.dataset for r in rows])] + cols


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(n - 1, 1)] + "~"


def text_table(rows: Sequence[ResultRow], top: int | None = TOP, width: int = WIDTH) -> str:
    """Aligned plain text, at most ``width`` characters a line: long names are clipped (``~``)
    first, then optional columns dropped, never wrapped. A last line counts the rows not shown."""
    shown = _take(rows, top)
    cols = _with_dataset(shown, columns(shown, feature_tags(rows)))
    gap = 2

    def widths(cs: list[Column]) -> list[int]:
        return [max([len(c.head)] + [len(c.text(i)) for i in range(len(shown))]) for c in cs]

    ws = widths(cols)

    def clip(caps: dict[str, int]) -> None:
        """Narrow the name columns to their caps, widest first, while the table is too wide."""
        for i, c in enumerate(cols):
            over = sum(ws) + gap * (len(cols) - 1) - width
            if over > 0 and c.head in caps:
                ws[i] -= max(0, min(over, ws[i] - max(caps[c.head], len(c.head))))

    clip({"model": 18, "features": 14, "data": 10})  # long names give way first,
    while sum(ws) + gap * (len(cols) - 1) > width and any(c.optional for c in cols):  # then the optional columns,
        drop = max(cols, key=lambda c: c.optional)
        keep = [i for i, c in enumerate(cols) if c is not drop]
        cols, ws = [cols[i] for i in keep], [ws[i] for i in keep]
    clip({"model": 8, "features": 8, "data": 6})  # then the names again

    def line(cells: list[str]) -> str:
        out = [(_clip(x, w).rjust(w) if c.numeric else _clip(x, w).ljust(w)) for c, x, w in zip(cols, cells, ws)]
        return (" " * gap).join(out).rstrip()

    lines = [line([c.head for c in cols])] + [line([c.text(i) for c in cols]) for i in range(len(shown))]
    if len(rows) > len(shown):
        lines.append(f"({len(rows) - len(shown)} more rows in the report)")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[ResultRow], top: int | None = None) -> str:
    """The same columns as Markdown; rank 1 and each metric column's best value in bold."""
    shown = _take(rows, top)
    cols = _with_dataset(shown, columns(shown, feature_tags(rows)))
    best = [c.best_rows() for c in cols]
    out = ["| " + " | ".join(c.head for c in cols) + " |",
           "|" + "|".join("--:" if c.numeric else "---" for c in cols) + "|"]
    for i in range(len(shown)):
        cells = [_md(c.text(i)) for c in cols]
        cells = [f"**{x}**" if x and (i in b or shown[i].rank == 1 and j < 2) else x
                 for j, (x, b) in enumerate(zip(cells, best))]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def details_markdown(rows: Sequence[ResultRow], top: int | None = None) -> str:
    """Each row's details (parameters, intervals, estimates, predict time) as a second table."""
    shown = _take(rows, top)
    tags = feature_tags(rows)
    out = ["| # | model | features | details |", "|--:|---|---|---|"]
    for r in shown:
        text = "; ".join(f"{k} {x}" for k, x in details(r))
        out.append(f"| {r.rank} | {_md(model_text(r))} | {_md(feature_text(r, tags))} | {_md(text)} |")
    return "\n".join(out)


def _sort_key(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return ""
    if isinstance(v, (int, float)):
        return repr(float(v)) if math.isfinite(v) else ""
    return str(v)


def html_table(rows: Sequence[ResultRow], top: int | None = None, table_id: str = "board", styled: bool = False) -> str:
    """An HTML fragment: one row per model (rank 1 ``best``, the tied group ``tied``, each metric
    column's best cell ``top``), each followed by a hidden details row its ``+`` button opens.
    Headers carry ``data-sort``; :data:`SORT_JS` makes them sort (numbers by ``data-v``; a metric
    best first)."""
    shown = _take(rows, top)
    cols = _with_dataset(shown, columns(shown, feature_tags(rows)))
    best = [c.best_rows() for c in cols]
    e = html.escape
    heads = "".join(f"<th{_attrs(cls='n' if c.numeric else '', title=c.title)} data-sort="
                    f"\"{'n' if c.numeric else 't'}\"{' data-first=desc' if c.best == 'max' else ''}>{e(c.head)}</th>"
                    for c in cols)
    body = []
    for i, r in enumerate(shown):
        tds = []
        for j, c in enumerate(cols):
            text = e(c.cells[i])
            if c.sub and c.sub[i] != "-":
                text += f' <span class="ci">{e(c.sub[i])}</span>'
            if c.head == "model":
                text = f'<button class="more" type="button" aria-expanded="false" title="details">+</button>{text}'
            cls = " ".join(x for x in ("n" if c.numeric else "", "top" if i in best[j] else "") if x)
            tds.append(f"<td{_attrs(cls=cls)} data-v=\"{e(_sort_key(c.values[i]))}\">{text}</td>")
        mark = "best" if r.rank == 1 else "tied" if r.tied else ""
        body.append(f'<tr class="row{" " + mark if mark else ""}">{"".join(tds)}</tr>')
        info = "".join(f"<div><dt>{e(k)}</dt><dd>{e(x)}</dd></div>" for k, x in details(r))
        body.append(f'<tr class="details" hidden><td colspan="{len(cols)}"><dl>{info}</dl></td></tr>')
    style = f"<style>{BOARD_CSS}</style>" if styled else ""  # a notebook's cell: the table with its own look
    return (f'{style}<table class="board" id="{e(table_id)}"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _attrs(cls: str = "", title: str = "") -> str:
    """` class="..." title="..."`, each only when set."""
    return (f' class="{html.escape(cls)}"' if cls else "") + (f' title="{html.escape(title)}"' if title else "")


# The leaderboard's look: rank 1 and the tied rows shaded, each metric's best cell green, a details
# row under each model (the report adds its page styles around it; a notebook gets these alone).
BOARD_CSS = """
table.board td,table.board th{white-space:nowrap}table.board th{cursor:pointer;user-select:none}
table.board th[data-dir=asc]::after{content:" \\25B2";font-size:10px}
table.board th[data-dir=desc]::after{content:" \\25BC";font-size:10px}
table.board td.top{font-weight:700;background:#dff0d8}
table.board tr.best td{background:#fff4c2}table.board tr.best td:first-child{border-left:4px solid #e0a800}
table.board tr.tied td{background:#fffbe6}table.board tr.tied td:first-child{border-left:4px solid #f3d36b}
table.board tr.best td.top,table.board tr.tied td.top{background:#d4ebc4}
table.board span.ci{color:#5d6873;font-size:12px;font-weight:400}
table.board button.more{border:1px solid #c5ccd3;background:#fff;border-radius:3px;width:18px;height:18px;line-height:14px;
padding:0;margin-right:6px;font-size:12px;cursor:pointer;color:#34404c}
table.board tr.details td{background:#fafbfc;white-space:normal}
table.board tr.details dl{display:flex;flex-wrap:wrap;gap:2px 22px;margin:2px 0 4px 24px}
table.board tr.details dl div{display:flex;gap:6px;max-width:100%}
table.board tr.details dt{color:#5d6873;white-space:nowrap;flex:none}table.board tr.details dd{margin:0;overflow-wrap:anywhere}
"""

SORT_JS = """document.querySelectorAll('table.board').forEach(function(t){
var b=t.tBodies[0];t.querySelectorAll('th').forEach(function(h,i){h.addEventListener('click',function(){
var up=h.dataset.dir?h.dataset.dir!=='asc':h.dataset.first!=='desc';t.querySelectorAll('th').forEach(function(x){delete x.dataset.dir;});h.dataset.dir=up?'asc':'desc';
var rs=Array.prototype.slice.call(b.querySelectorAll('tr.row'));rs.sort(function(x,y){
var a=x.cells[i].dataset.v,c=y.cells[i].dataset.v;if(a===c)return 0;if(a==='')return 1;if(c==='')return -1;
var d=h.dataset.sort==='n'?parseFloat(a)-parseFloat(c):a.localeCompare(c);return up?d:-d;});
rs.forEach(function(r){var d=r.nextElementSibling;b.appendChild(r);if(d&&d.classList.contains('details'))b.appendChild(d);});});});
t.querySelectorAll('button.more').forEach(function(btn){btn.addEventListener('click',function(ev){ev.stopPropagation();
var d=btn.closest('tr').nextElementSibling;d.hidden=!d.hidden;btn.textContent=d.hidden?'+':'\\u2212';
btn.setAttribute('aria-expanded',String(!d.hidden));});});});"""


# --------------------------------------------------------------------------- summary


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False) or [""]


def predict_command(path: str, prog: str = PROG, width: int = WIDTH) -> list[str]:
    """``python pipeline.py predict --model PATH --out predictions.csv IMAGES``; when that passes
    ``width``, the path alone on a second line (a shell continuation), so it is never broken."""
    one = f"  {prog} predict --model {shown_path(path)} --out predictions.csv IMAGES"
    if len(one) <= width:
        return [one]
    return [f"  {prog} predict --out predictions.csv IMAGES --model \\", f"  {shown_path(path)}"]


def _paired_n(rows: Sequence[ResultRow]) -> Any:
    ref = next((r for r in rows if r.kind != "soft-vote"), rows[0])
    return (ref.cv or {}).get("n") if ref.cv else (ref.val or {}).get("n")


def _predictor(rows: Sequence[ResultRow]) -> ResultRow | None:
    """The row whose model file predicts for rank 1: rank 1's own (a soft vote's is one file too), or,
    for a vote saved without one (an older run, a member file that failed its check), its best member's."""
    best = rows[0]
    if best.model_path or best.kind != "soft-vote":
        return best if best.model_path else None
    return next((r for r in rows if r.label in best.members and r.model_path), None)


def _score_text(rows: Sequence[ResultRow]) -> str:
    """``CV accuracy 0.970 (95% CI 0.92-0.99)``: rank 1's score as the ranking computed it."""
    best = rows[0]
    name = score_name(rows).replace("cv ", "CV ").replace("acc", "accuracy").replace("bal ", "balanced ")
    return f"{name} {sig(best.score)}" + (f" (95% CI {interval(best.score_ci)})" if best.score_ci else "")


def _answer_lines(rows: Sequence[ResultRow], tags: dict, prog: str, width: int) -> list[str]:
    """The answer for one dataset: rank 1 with its score, the tie, the test score, the command."""
    best = rows[0]
    out = _wrap(f"Best: {answer_text(best, rows, tags)}, {_score_text(rows)}.", width)
    tied = [r for r in rows[1:] if r.tied]
    paired = [r for r in rows[1:] if r.p_vs_best is not None]
    on = f"on the same {_paired_n(rows)} {'out-of-fold predictions' if best.cv else 'images'}"
    if tied:
        are = f"{len(tied)} other rows are" if len(tied) > 1 else "1 other row is"
        what = f"{are} tied with it: the data cannot separate them (exact McNemar {on}, p >= 0.05)."
    elif paired:
        others = "the other row" if len(paired) == 1 else f"all {len(paired)} other rows"
        what = f"It is significantly better than {others} (exact McNemar {on}, p < 0.05)."
    else:
        what = "No other row was scored on the same images."
    out += _wrap(what, width)
    if best.test and best.test.get("accuracy") is not None:
        ci = best.test.get("accuracy_ci") or getattr(best, "test_ci", None)
        n = f" on {best.test['n']} images" if best.test.get("n") else ""
        out.append(f"Test accuracy: {sig(best.test['accuracy'])}" + (f" (95% CI {interval(ci)})" if ci else "") + f"{n}.")
    row = _predictor(rows)
    if row is not None:
        out += _wrap("Predict with it:" if row is best else f"Predict with its best member, {row.model} on "
                     f"{feature_text(row, tags)} (the vote has no model file):", width)
        out += predict_command(str(row.model_path), prog, width)
    return out


def _short_answer_lines(rows: Sequence[ResultRow], tags: dict, prog: str, width: int) -> list[str]:
    """The answer for one of several datasets, in as few lines: rank 1 and its score, the tie and
    test score, the command."""
    best = rows[0]
    what = f"soft vote of {len(best.members)} models" if best.kind == "soft-vote" else answer_text(best, rows, tags)
    out = _wrap(f"Best on {best.dataset}: {what}, {_score_text(rows)}.", width)
    tied = sum(1 for r in rows[1:] if r.tied)
    facts = [f"{tied} other row{'s' if tied > 1 else ''} tied with it (p >= 0.05)" if tied else "no other row tied"]
    if best.test and best.test.get("accuracy") is not None:
        facts.append(f"test accuracy {sig(best.test['accuracy'])}")
    row = _predictor(rows)
    if row is not None:
        facts.append("predict with it:" if row is best else f"predict with its best member, {row.model}:")
    out += _wrap("  " + "; ".join(facts) + ("" if row is not None else "."), width)
    return out + (predict_command(str(row.model_path), prog, width) if row is not None else [])


def _skipped_text(skipped: Sequence[dict], rows: Sequence[ResultRow]) -> str:
    models = [s for s in skipped if s.get("kind") not in ("finetune", "backbone")]
    parts = []
    if models:
        sets = {(s.get("dataset", ""), s.get("backbone"), s.get("feature")) for s in models}
        names = {s.get("model") for s in models}
        parts.append(f"{len(models)} model fit{'s' if len(models) > 1 else ''} ({len(names)} model"
                     f"{'s' if len(names) > 1 else ''} on {len(sets)} feature set{'s' if len(sets) > 1 else ''})")
    backbones = [short_backbone(str(s.get("backbone"))) for s in skipped if s.get("kind") == "backbone"]
    if backbones:
        parts.append("backbone " + ", ".join(backbones))
    if any(s.get("kind") == "finetune" for s in skipped):
        parts.append("fine-tuning")
    approx = sum(1 for r in rows if "approximated" in str((r.params or {}).get("note", "")))
    text = "skipped " + " and ".join(parts) if parts else "nothing skipped"
    return text + (f"; {approx} approximated" if approx else "")


def summary_lines(rows: Sequence[ResultRow], skipped: Sequence[dict] = (), total_s: float | None = None,
                  out: str | os.PathLike | None = None, prog: str = PROG, width: int = WIDTH) -> list[str]:
    """The answer in a few plain lines, at most ``width`` wide: rank 1 with its score and
    interval, how many rows are tied with it, its test score, the command that predicts with it
    (a soft vote's own file; its best member's, said so, when it has none), the ranking metric when it is not accuracy, the
    time and what was skipped, and where the report is. Of several datasets, one answer each."""
    if not rows:
        return ["No classifier results."]
    tags = feature_tags(rows)
    names = list(dict.fromkeys(r.dataset for r in rows))
    lines: list[str] = []
    for n in names:
        part = [r for r in rows if r.dataset == n]
        lines += (_short_answer_lines if len(names) > 1 else _answer_lines)(part, tags, prog, width)
    weighted = any(r.extra.get("class_weight") == "balanced" for r in rows)
    if rows[0].metric == "balanced_accuracy" or weighted:
        ranked = ("ranked by balanced accuracy (the mean of the per-class recalls)" if rows[0].metric ==
                  "balanced_accuracy" else "ranked by accuracy")
        fitted = ", models fitted with balanced class weights" if weighted else ""
        lines += _wrap(f"Each class counts the same: {ranked}{fitted} (--metric, --class-weight).", width)
    took = f"Took {seconds(total_s)}; " if total_s is not None else ""
    said = took + _skipped_text(skipped, rows) + (" (see the report)." if skipped else ".")
    lines += _wrap(said[0].upper() + said[1:], width)
    if out is not None:
        html_path = Path(out) / "report" / "report.html"
        lines.append(f"Report: {shown_path(html_path)}" if html_path.is_file() else f"Results: {shown_path(out)}")
    return lines


def console_text(rows: Sequence[ResultRow], skipped: Sequence[dict] = (), total_s: float | None = None,
                 out: str | os.PathLike | None = None, top: int = TOP, prog: str = PROG, width: int = WIDTH) -> str:
    """What ``run``, ``classify`` and ``report`` print on stdout: the summary, a blank line, the
    top ``top`` rows as aligned text."""
    return "\n".join(summary_lines(rows, skipped, total_s, out, prog, width)) + "\n\n" + text_table(rows, top, width)


def skipped_table(skipped: Sequence[dict], rows: Sequence[ResultRow] = ()) -> tuple[list[str], list[list[str]], list[str]]:
    """Skipped and approximated models in one grid: (header, rows, footnotes). Rows are models,
    columns feature sets; a cell holds the model's estimate and a footnote number, and each
    distinct reason is stated once (numbers that differ between cells shown as ``…``)."""
    tags = tags_of([(r.backbone, r.feature) for r in rows if r.kind == "model"]
                   + [_where(s) for s in skipped if s.get("kind") not in ("finetune", "backbone")])
    items = []  # (model, column, estimate, reason)
    for s in skipped:
        col = short_backbone(str(s.get("backbone") or "?"))
        if s.get("kind") not in ("finetune", "backbone"):  # a model on a feature set
            col = tags[_where(s)]
        if s.get("dataset"):
            col = f"{s['dataset']}: {col}"
        model = {"finetune": "fine-tune", "backbone": "every model"}.get(str(s.get("kind")), str(s.get("model")))
        items.append((model, col, s.get("estimate_s"), str(s.get("reason") or "")))
    for r in rows:
        note = str((r.params or {}).get("note") or "")
        if "approximated" in note:
            items.append((model_text(r), (f"{r.dataset}: " if r.dataset else "") + feature_text(r, tags), None,
                          note))
    if not items:
        return [], [], []
    templates: dict[str, list[str]] = {}  # a reason with its numbers taken out -> the reasons
    for *_, reason in items:
        templates.setdefault(NUMBER.sub("\0", reason), []).append(reason)
    notes, number = [], {}
    for key, reasons in templates.items():
        number[key] = len(notes) + 1
        notes.append(_merge_numbers(key, reasons))
    cols = list(dict.fromkeys(c for _, c, _, _ in items))
    models = list(dict.fromkeys(m for m, _, _, _ in items))
    grid = {(m, c): f"{seconds(est) if est is not None else 'approx.' if 'approximated' in why else 'skipped'} "
                    f"[{number[NUMBER.sub(chr(0), why)]}]"
            for m, c, est, why in items}
    families = {str(s["model"]): (str(s["family"]), list(s.get("family_models") or []))
                for s in skipped if s.get("family")}
    label = _families_dropped_everywhere(families, [c for c in cols if any(grid.get((m, c)) for m in models
                                                                           if m not in ("fine-tune", "every model"))],
                                         grid)
    rows = []
    for m in models:
        if label.get(m, m) is None:
            continue  # a second variant of a family dropped everywhere: in its family's row
        rows.append([label.get(m, m)] + [grid.get((m, c), "") for c in cols])
    used = {int(x) for r in rows for cell in r[1:] for x in re.findall(r"\[(\d+)\]", cell)}
    keep = [i for i in range(1, len(notes) + 1) if i in used]
    renumber = {old: new for new, old in enumerate(keep, 1)}
    rows = [[r[0]] + [re.sub(r"\[(\d+)\]", lambda x: f"[{renumber[int(x.group(1))]}]", c) for c in r[1:]] for r in rows]
    return ["model"] + cols, rows, [notes[i - 1] for i in keep]


def _families_dropped_everywhere(families: dict[str, tuple[str, list[str]]], cols: list[str], grid: dict
                                 ) -> dict[str, str | None]:
    """{model: its row's label}: a family (as the skipped records name it) whose every model is skipped
    on every feature set gets one row, named for the family and its models, in its first model's
    place (the others map to None)."""
    out: dict[str, str | None] = {}
    for fam, members in dict(families.values()).items():
        everywhere = cols and all(grid.get((m, c)) and "approx." not in grid[(m, c)] for m in members for c in cols)
        if len(members) > 1 and everywhere:
            out.update({m: None for m in members})
            out[members[0]] = f"{fam} ({', '.join(members)})"
    return out


NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _where(skip: dict) -> tuple[str, str]:
    return str(skip.get("backbone") or "?"), str(skip.get("feature") or "?")


def _merge_numbers(template: str, reasons: list[str]) -> str:
    """One reason for several cells: numbers all of them share kept, the others as ``…``."""
    nums = [NUMBER.findall(r) for r in reasons]
    parts = template.split("\0")
    out = parts[0]
    for i, rest in enumerate(parts[1:]):
        values = {n[i] for n in nums if i < len(n)}
        out += (values.pop() if len(values) == 1 else "…") + rest
    return out
