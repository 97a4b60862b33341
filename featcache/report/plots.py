"""The report's figures, drawn with matplotlib's object API on Agg (no pyplot, no global state).

Each function returns a Figure (or None when there is nothing to draw); :func:`to_png`
renders it. Sizes grow with the number of classes or images so labels stay readable.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from classify import table as T
from featcache.report.images import Tile
from featcache.store.rows import ResultRow

DPI = 100
# zlib level of the PNGs: 3 instead of Pillow's 6 took the demo report's figures from 2.4 to 1.8 s
# for 6% more bytes (most are photos, which barely compress either way).
PNG_LEVEL = 3
MAX_BARS = 40
MAX_ANNOTATED_CLASSES = 25
BEST_COLOUR = "#d62728"


@dataclass(frozen=True)
class Plot:
    """A rendered figure and what the report says about it."""

    name: str  # file name, e.g. "confusion.png"
    title: str
    caption: str
    png: bytes


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs={"compress_level": PNG_LEVEL})
    return buf.getvalue()


def to_rgb(fig: Figure) -> np.ndarray:
    """(H, W, 3) uint8, for TensorBoard."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def short(text: str, n: int = 18) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def confusion_figure(best: ResultRow) -> Figure | None:
    """Counts in each cell, colour by the share of the true class (rows), so small classes still show."""
    cm = best.val.get("confusion_matrix") or {}
    labels, matrix = cm.get("labels") or [], np.asarray(cm.get("matrix") or [], dtype=float)
    if not labels or matrix.shape != (len(labels), len(labels)):
        return None
    n = len(labels)
    side = min(14.0, max(4.5, 0.45 * n + 2.5))
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
    ticks = np.arange(n)
    size = 10 if n <= 10 else 7 if n <= 40 else 5
    ax.set_xticks(ticks, [short(s) for s in labels], rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center",
                  fontsize=size)
    ax.set_yticks(ticks, [short(s) for s in labels], fontsize=size)
    if n <= MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=size + 1,
                        color="white" if share[i, j] > 0.55 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (val)", fontsize=10)
    return fig


MARKERS = "osD^vPXhp<>8d"
LABEL_OFFSETS = ((5, 4), (5, -11), (5, 13), (5, -20))  # points: staggered so neighbours' names do not collide


def _label_levels(points: Sequence[ResultRow], xs: Sequence[float], decades: float) -> list[int]:
    """Which LABEL_OFFSETS row each point's name goes on: a neighbour at the same accuracy
    less than ``decades`` to the left pushes it to the next row."""
    order = sorted(range(len(points)), key=lambda i: (points[i].val["accuracy"], xs[i]))
    levels = [0] * len(points)
    prev: dict[float, tuple[float, int]] = {}
    for i in order:
        acc, lx = points[i].val["accuracy"], math.log10(xs[i])
        if acc in prev and lx - prev[acc][0] < decades:
            levels[i] = (prev[acc][1] + 1) % len(LABEL_OFFSETS)
        prev[acc] = (lx, levels[i])
    return levels


def set_label(e: ResultRow, tags: dict) -> str:
    """A feature set's short name in a legend (``lite0``); an ensemble's with what it is."""
    text = T.feature_text(e, tags)
    return text if e.kind == "model" else f"{text} ({T.model_text(e)})"


def accuracy_vs_time_figure(entries: Sequence[ResultRow]) -> Figure | None:
    """Every run as a point: fit time (log) against val accuracy; colour = feature set, marker = model."""
    points = [e for e in entries if isinstance(e.val.get("accuracy"), (int, float))]
    if not points:
        return None
    sets = list(dict.fromkeys(e.feature_set for e in points))
    models = list(dict.fromkeys(e.model for e in points))
    cmap = colormaps["tab10" if len(sets) <= 10 else "tab20"]
    colour = {s: cmap(i % cmap.N) for i, s in enumerate(sets)}
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    xs = [max(e.fit_s, 1e-3) for e in points]
    fig = Figure(figsize=(10, 5.8), layout="constrained")
    ax = fig.add_subplot()
    for e, x in zip(points, xs):
        ax.scatter([x], [e.val["accuracy"]], s=52, color=colour[e.feature_set], marker=marker[e.model], alpha=0.9,
                   edgecolors="white", linewidths=0.6, zorder=3)
    span = max(math.log10(max(xs)) - math.log10(min(xs)), 1.0)
    for e, x, level in zip(points, xs, _label_levels(points, xs, decades=span / 9)):
        ax.annotate(e.model, (x, e.val["accuracy"]), xytext=LABEL_OFFSETS[level], textcoords="offset points",
                    fontsize=7, color="#333333", zorder=4)
    best = points[0] if points[0].rank == 1 else None
    if best is not None:
        ax.scatter([max(best.fit_s, 1e-3)], [best.val["accuracy"]], s=200, facecolors="none",
                   edgecolors=BEST_COLOUR, linewidths=1.8, zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("fit time (s, log scale)")
    ax.set_ylabel("val accuracy")
    accs = [e.val["accuracy"] for e in points]
    pad = max(0.015, (max(accs) - min(accs)) * 0.12)
    ax.set_ylim(max(0.0, min(accs) - pad), min(max(accs) + pad, 1.0 + pad / 2))
    ax.grid(True, which="both", alpha=0.25)
    tags, first = T.feature_tags(entries), {e.feature_set: e for e in reversed(points)}
    handles = [Line2D([], [], ls="", marker="o", color=colour[s], label=set_label(first[s], tags)) for s in sets]
    handles += [Line2D([], [], ls="", marker="o", mfc="none", mec=BEST_COLOUR, ms=11, mew=1.8, label="best")]
    fig.legend(handles=handles, fontsize=8, title="feature set (colour)", title_fontsize=8, loc="outside right upper")
    fig.legend(handles=[Line2D([], [], ls="", marker=marker[m], color="#555555", label=m) for m in models],
               fontsize=8, title="model (marker)", title_fontsize=8, loc="outside right lower")
    ax.set_title("Val accuracy vs fit time (every classifier x feature set)", fontsize=10)
    return fig


def per_class_figure(best: ResultRow) -> Figure | None:
    """Horizontal bars (class names stay readable); with many classes, the weakest ones."""
    per = best.val.get("per_class_accuracy") or {}
    if not per:
        return None
    items = list(per.items())
    title = "Per-class val accuracy"
    if len(items) > MAX_BARS:
        items = sorted(items, key=lambda kv: (kv[1] if kv[1] is not None else -1, kv[0]))[:MAX_BARS]
        title += f" ({MAX_BARS} lowest of {len(per)} classes)"
    names = [short(k, 28) for k, _ in items]
    values = [v if v is not None else 0.0 for _, v in items]
    fig = Figure(figsize=(6.5, max(2.2, 0.32 * len(items) + 1.3)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(items))
    overall = best.val.get("accuracy") if isinstance(best.val.get("accuracy"), (int, float)) else None
    ax.barh(y, values, height=0.6 if len(items) > 3 else 0.45,
            color=["#f58518" if overall is not None and v < overall else "#4c78a8" for v in values])
    for yi, v in zip(y, values):
        inside = v > 0.85
        ax.text(v - 0.01 if inside else v + 0.01, yi, f"{v:.2f}", va="center", ha="right" if inside else "left",
                fontsize=8, color="white" if inside else "#333333")
    ax.set_yticks(y, names, fontsize=8 if len(items) > 12 else 9)
    ax.set_ylim(len(items) - 0.5, -0.5)  # first class on top, no empty margin
    ax.set_xlim(0, 1.0)
    if overall is not None:
        ax.axvline(overall, color="#333333", linestyle="--", linewidth=1)
    ax.set_xlabel("accuracy (dashed: overall accuracy; orange: classes below it)")
    ax.set_title(title, fontsize=10)
    return fig


MONTAGE_GAP = 0.3  # of a tile, above each tile: room for its caption (two lines at 8 pt)
TITLE_IN = 0.4


def montage_figure(rows: Sequence[Sequence[tuple[Tile, str]]], title: str) -> Figure | None:
    """A grid of thumbnails with a caption over each; placeholders say why they are grey.

    The tiles are pasted into one image drawn on one axes, with the captions as text: an axes per
    tile under a constrained layout took ~1 s for a 6 x 4 grid, most of a report's time."""
    rows = [r for r in rows if r]
    if not rows:
        return None
    cols = max(len(r) for r in rows)
    size = max(t.pixels.shape[0] for r in rows for t, _ in r)
    gap = int(size * MONTAGE_GAP)
    cell = size + gap
    canvas = np.full((len(rows) * cell, cols * cell - gap // 2, 3), 255, dtype=np.uint8)
    height, width = canvas.shape[0] / DPI, canvas.shape[1] / DPI  # one figure pixel per tile pixel at DPI
    fig = Figure(figsize=(width, height + TITLE_IN))
    fig.suptitle(title, fontsize=11, y=1.0 - 0.1 / fig.get_figheight(), va="top")
    ax = fig.add_axes((0.0, 0.0, 1.0, height / fig.get_figheight()))
    ax.set_axis_off()
    for i, row in enumerate(rows):
        for j, (tile, caption) in enumerate(row):
            y0, x0 = i * cell + gap, j * cell + gap // 4
            h, w = tile.pixels.shape[:2]
            canvas[y0:y0 + h, x0:x0 + w] = tile.pixels
            ax.text(x0 + w / 2, y0 - 4, caption, ha="center", va="bottom", fontsize=8)
            if tile.problem:
                ax.text(x0 + w / 2, y0 + h / 2, tile.problem, ha="center", va="center", fontsize=11, color="#444444")
    ax.imshow(canvas, interpolation="none", aspect="auto")
    return fig


def grid(items: Sequence[tuple[Tile, str]], cols: int = 4) -> list[list[tuple[Tile, str]]]:
    """Split a flat list into rows of ``cols``."""
    return [list(items[i:i + cols]) for i in range(0, len(items), cols)] if items else []


def rows_by_class(items: Sequence[tuple[str, Tile]]) -> list[list[tuple[Tile, str]]]:
    """One montage row per class, in first-seen order; the class name over its first image."""
    out: dict[str, list[tuple[Tile, str]]] = {}
    for name, tile in items:
        out.setdefault(name, []).append((tile, "" if name in out else name))
    return list(out.values())


def n_cols(n: int) -> int:
    return max(1, min(4, math.ceil(math.sqrt(n))))


MAX_CURVES = 10


def few_shot_figure(curves: Sequence[dict]) -> Figure | None:
    """Accuracy against train images per class (log scale), one line per feature set and model,
    the band +-1 sd over the draws; "all" sits one step right of the largest shot count."""
    lines = [(c, m) for c in curves for m in dict.fromkeys(p["model"] for p in c.get("points", []))][:MAX_CURVES]
    if not lines:
        return None
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    numeric = sorted({p["shots"] for c, _ in lines for p in c["points"] if isinstance(p["shots"], int)})
    top = max(numeric) * 2 if numeric else 1
    colours = colormaps["tab10"]
    feature_sets = list(dict.fromkeys(f"{c['backbone']} {c['feature']}" for c, _ in lines))
    for c, m in lines:
        pts = [p for p in c["points"] if p["model"] == m]
        xs = np.array([p["shots"] if isinstance(p["shots"], int) else top for p in pts], dtype=float)
        mean = np.array([p["mean"] for p in pts])
        sd = np.array([p["sd"] for p in pts])
        colour = colours(feature_sets.index(f"{c['backbone']} {c['feature']}") % 10)
        style = "-" if m == "logreg" else "--"
        ax.plot(xs, mean, style, marker="o", ms=4, color=colour, label=f"{m}, {short(T.short_backbone(c['backbone']), 18)} {T.short_layer(c['feature'])}")
        ax.fill_between(xs, mean - sd, mean + sd, color=colour, alpha=0.12, linewidth=0)
    ax.set_xscale("log", base=2)
    ticks = numeric + [top]
    ax.set_xticks(ticks, [str(t) for t in numeric] + ["all"])
    ax.set_xlabel("train images per class")
    split = curves[0].get("split", "test")
    ax.set_ylabel(f"{split} accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def feature_map_figure(fm: dict, leaked: set[str] = frozenset()) -> Figure | None:
    """The audit's 2-D map: one colour per class (unlabeled grey), val/test as triangles, leaks ringed."""
    pts = fm.get("points") or []
    if not pts:
        return None
    xy = np.array([[p[0], p[1]] for p in pts], dtype=float)
    lab = np.array([int(p[2]) for p in pts])
    split = np.array([str(p[3]) for p in pts])
    classes = list(fm.get("classes") or [])
    fig = Figure(figsize=(7.5, 6.0), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["tab20" if len(classes) > 10 else "tab10"]
    held = np.isin(split, ("val", "test"))
    for c in np.unique(lab):
        colour = "#9aa0a6" if c < 0 else cmap(c % cmap.N)
        name = "unlabeled" if c < 0 else short(classes[c] if c < len(classes) else str(c), 18)
        m = lab == c
        ax.scatter(xy[m & ~held, 0], xy[m & ~held, 1], s=9, color=colour, alpha=0.7, linewidths=0,
                   label=name if len(classes) <= 20 else None)
        ax.scatter(xy[m & held, 0], xy[m & held, 1], s=16, color=colour, alpha=0.9, marker="^", linewidths=0)
    ring = np.array([str(p[4]) in leaked for p in pts])
    if ring.any():
        ax.scatter(xy[ring, 0], xy[ring, 1], s=60, facecolors="none", edgecolors=BEST_COLOUR, linewidths=1.2,
                   label="leaked")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(fm.get("method", ""), fontsize=10)
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=1.5, loc="best", ncols=2 if len(classes) > 10 else 1)
    return fig
