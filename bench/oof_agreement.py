#!/usr/bin/env python3
"""Do the out-of-fold shortcuts (classify/oof.py) rank models as the K-fold loop does?

    python bench/oof_agreement.py STORE.h5 [STORE.h5 ...] [--models linear,rf,logreg,svm-linear,knn-dino]

On each store, every model is scored twice by ``--select cv``: with its family's shortcut (the
batched linear head, out-of-bag forests) and with the K-fold loop it replaces (one fit per fold);
a model without a shortcut scores the same both times. Printed per model: both CV accuracies, their difference, both selection
times; per store: the order of the models under each, and whether rank 1 is the same row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from classify import oof, selection  # noqa: E402
from classify.api import compare  # noqa: E402


def scored(store: str, models: list[str], shortcut: bool) -> dict[str, tuple[float, float, str]]:
    """{model: (cv mean, selection seconds, method)}."""
    real = oof.shortcut
    if not shortcut:
        selection.oof.shortcut = lambda *a, **k: None
    try:
        board = compare(store, models=models, budget="none", jobs=-1, few_shot=False)
    finally:
        selection.oof.shortcut = real
    out = {}
    for r in board.rows:
        cv = r.extra["cv"]
        out[r.model] = (cv["mean"], cv["seconds"] + (r.extra.get("refit_s") or 0.0), cv.get("method", "k-fold"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--models", default="linear,rf,logreg,svm-linear,knn-dino")
    a = ap.parse_args()
    models = a.models.split(",")
    same_top = 0
    diffs = []
    for store in a.stores:
        t = time.perf_counter()
        fast, slow = scored(store, models, True), scored(store, models, False)
        print(f"\n## {Path(store).name} ({time.perf_counter() - t:.0f} s)")
        print(f"{'model':11s} {'method':15s} {'cv (shortcut)':>13s} {'cv (k-fold)':>11s} {'diff':>7s} "
              f"{'s (shortcut)':>12s} {'s (k-fold)':>10s}")
        for m in models:
            (a_cv, a_s, how), (b_cv, b_s, _) = fast[m], slow[m]
            diffs.append(a_cv - b_cv)
            print(f"{m:11s} {how:15s} {a_cv:13.3f} {b_cv:11.3f} {a_cv - b_cv:+7.3f} {a_s:12.2f} {b_s:10.2f}")
        order_fast = sorted(models, key=lambda m: -fast[m][0])
        order_slow = sorted(models, key=lambda m: -slow[m][0])
        same_top += order_fast[0] == order_slow[0]
        print(f"order (shortcut): {' > '.join(order_fast)}")
        print(f"order (k-fold):   {' > '.join(order_slow)}")
    print(f"\nrank 1 the same on {same_top} of {len(a.stores)} stores; cv differences: "
          f"mean {sum(diffs) / len(diffs):+.4f}, largest {max(diffs, key=abs):+.3f}")


if __name__ == "__main__":
    main()
