#!/usr/bin/env python3
"""Imbalanced training classes: balanced accuracy with and without ``--class-weight``/``--metric auto``.

    python bench/imbalance_study.py --store DTD10_LITE0.h5 [--seeds 5] [--models default]

dtd10 (10 texture classes, 60 train images each) made imbalanced: per seed, five classes (drawn
by the seed) keep 15 of their train images, the other five all 60; val is cut the same way, and
the untouched test split scores every model. Each seed compares the zoo twice on the same
arrays through the Python API (``classify.compare``): today's defaults before this change
(``metric="accuracy", class_weight="none"``) and the new ones (``auto``: balanced accuracy ranks,
every model fitted with balanced class weights). It prints, per setting, rank 1's and each
model's test balanced accuracy: the median and the range over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classify.api import compare  # noqa: E402
from featcache.store import read_features, read_index, read_info, resolve_feature  # noqa: E402

SETTINGS = {"before (accuracy, unweighted)": {"metric": "accuracy", "class_weight": "none"},
            "auto (balanced accuracy, balanced weights)": {"metric": "auto", "class_weight": "auto"}}


def arrays(store: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    info = read_info(store)
    index = read_index(store)
    X = np.asarray(read_features(store, resolve_feature(info, None), index["rows"]), np.float32)
    return X, index["y"], index["split"].astype(str)


def cut(y: np.ndarray, split: np.ndarray, seed: int, keep: int = 15) -> np.ndarray:
    """Rows kept: five classes (by the seed) keep ``keep`` train and val rows (in proportion), the rest all."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    small = set(rng.choice(classes, len(classes) // 2, replace=False).tolist())
    kept = np.ones(len(y), bool)
    for c in small:
        for s, n in (("train", keep), ("val", max(1, keep // 3))):
            rows = np.flatnonzero((y == c) & (split == s))
            kept[rng.permutation(rows)[n:]] = False
    return kept


def balanced(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a dtd10 store (extract or run made it)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", default="default")
    ap.add_argument("--json", help="write the numbers here too")
    args = ap.parse_args()
    X, y, split = arrays(args.store)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in SETTINGS}
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for seed in range(args.seeds):
        kept = cut(y, split, seed)
        Xs, ys, ss = X[kept], y[kept], split[kept]
        test = ss == "test"
        for name, options in SETTINGS.items():
            t = time.perf_counter()
            board = compare(Xs, ys, splits=ss, models=args.models, seed=seed, **options)
            seconds[name].append(time.perf_counter() - t)
            for r in board.rows:
                score = balanced(ys[test], r.fitted.estimator.predict(Xs[test]))
                results[name].setdefault(r.model, []).append(score)
                if r.rank == 1:
                    results[name].setdefault("rank 1", []).append(score)
            top = board.rows[0]
            print(f"seed {seed} {name}: rank 1 {top.model} test balanced acc {results[name]['rank 1'][-1]:.3f} "
                  f"({seconds[name][-1]:.1f} s)", file=sys.stderr)
    print(f"dtd10 imbalanced (5 classes at 15 train images, 5 at 60), {args.seeds} seeds, test balanced accuracy "
          "(median [min, max]):\n")
    models = list(dict.fromkeys(m for per in results.values() for m in per))
    print("| model | " + " | ".join(SETTINGS) + " |")
    print("|---|" + "---|" * len(SETTINGS))
    for m in models:
        cells = []
        for name in SETTINGS:
            v = results[name].get(m) or []
            cells.append(f"{statistics.median(v):.3f} [{min(v):.3f}, {max(v):.3f}]" if v else "-")
        print(f"| {m} | " + " | ".join(cells) + " |")
    print("| seconds per compare | " + " | ".join(f"{statistics.median(seconds[n]):.1f}" for n in SETTINGS) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
