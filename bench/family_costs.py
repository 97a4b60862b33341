#!/usr/bin/env python3
"""Each classifier family's fit and selection seconds at 10^2, 10^3 and 10^4 rows, beside its estimate.

    python bench/family_costs.py [--sizes 100,1000,10000] [--models default] [--jobs -1] [--out FILE.json]

"fit" is the model's own fit on train (its sweep included); "selection" is what ranks it under
``--select auto``: the out-of-fold predictions of its chosen configuration over train+val and the
train+val refit (none at 10^4 rows, where val alone ranks). One-off costs of a run (torch's first
steps, starting joblib's workers) are paid before the first model. Estimates are the plan's, on this
machine (``est``) and at the reference rate that ``--budget auto`` charges (``ref``).

Rows: 10^2 and 10^3 are dtd10's Lite0 features (1280-d, 10 classes; 100 = 8 train + 2 val per
class, 1,000 = its 600 train + 200 val, test its 400), read from a store made by
``pipeline.py extract`` (``--store``; skipped when absent). 5,000 is imagenette's Lite0 store
(``--imagenette``: 4,000 train + 1,000 val carved from its train split, test 2,000). 10^4 is a
synthetic store's arrays (bench/synthetic.py's generator: 8,000 train + 2,000 val, 1280-d, 10
classes).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from classify.api import compare  # noqa: E402
from classify.models import resolve_models  # noqa: E402


def dtd_arrays(store: str, per_class: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, splits) of a dtd10 store, train/val cut to ``per_class`` (train, val) images a class."""
    from classify.features import load_features

    d = load_features(store, None)
    parts = [(s, getattr(d, s)) for s in ("train", "val", "test")]
    X, y, where = [], [], []
    for name, split in parts:
        keep = np.arange(len(split.y))
        if per_class and name != "test":
            n = per_class[0 if name == "train" else 1]
            keep = np.concatenate([np.flatnonzero(split.y == c)[:n] for c in np.unique(split.y)])
        X.append(np.asarray(split.X, np.float32)[keep])
        y.append(split.y[keep])
        where += [name] * len(keep)
    return np.concatenate(X), np.concatenate(y), np.array(where)


def synthetic_arrays(train: int, val: int, test: int, dim: int = 1280, classes: int = 10,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled-CNN-like features (bench/synthetic.py's model) with train/val/test splits."""
    sys.path.insert(0, str(ROOT / "bench"))
    import synthetic

    rng = np.random.default_rng(seed)
    centers = synthetic._centers(rng, classes, synthetic.SPREAD)
    layer = rng.normal(0, 1 / np.sqrt(synthetic.LATENT), (synthetic.LATENT, dim)).astype(np.float32)
    n = train + val + test
    y = rng.integers(0, classes, n)
    z = centers[y, rng.integers(0, 2, n)] + rng.normal(0, 1, (n, synthetic.LATENT)).astype(np.float32)
    X = np.maximum(z @ layer, 0) + rng.normal(0, 0.05, (n, dim)).astype(np.float32)
    where = np.array(["train"] * train + ["val"] * val + ["test"] * test)
    return X.astype(np.float32), y, where


def measure(name: str, X: np.ndarray, y: np.ndarray, where: np.ndarray, jobs: int) -> dict:
    t = time.perf_counter()
    board = compare(X, y, splits=where, models=[name], budget="none", jobs=jobs, few_shot=False)
    wall = time.perf_counter() - t
    r = board.rows[0]
    extra = r.extra or {}
    cv = (extra.get("cv") or {}).get("seconds") or 0.0
    return {"model": name, "fit_s": r.fit_s, "selection_s": cv + (extra.get("refit_s") or 0.0), "wall_s": wall,
            "estimate_fit_s": extra.get("estimate_s"), "estimate_total_s": extra.get("estimate_total_s"),
            "val": r.val["accuracy"], "test": (r.test or {}).get("accuracy"),
            "cv": (extra.get("cv") or {}).get("mean"), "oof": (extra.get("cv") or {}).get("method")}


def warm_up(jobs: int) -> None:
    """What a run pays once, not per model: torch's first steps, and joblib's worker processes
    (``run`` starts them in the background while its first models fit)."""
    from classify import selection

    X, y, where = synthetic_arrays(60, 20, 0, dim=32, classes=2)
    compare(X, y, splits=where, models=["logreg", "linear", "knn"], budget="none", jobs=jobs, few_shot=False)
    selection.warm_workers(jobs)
    for thread in selection._warming:
        thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--models", default="default")
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--store", default=None, help="dtd10's Lite0 store (default: the first /tmp/fc_dtd/*lite0*.h5)")
    ap.add_argument("--imagenette", default="/tmp/fc_inet/lite0.h5",
                    help="imagenette's Lite0 store, for --sizes 5000 (its 4,000 train + 1,000 val, test 2,000)")
    ap.add_argument("--out", default=None, help="write the measurements as JSON")
    a = ap.parse_args()
    store = a.store or next(iter(sorted(glob.glob("/tmp/fc_dtd/efficientnet_lite0-*.h5"))), None)
    names = resolve_models(a.models)
    warm_up(a.jobs)
    results = []
    for size in (int(s) for s in a.sizes.split(",")):
        if size <= 2_000:
            if not store:
                print(f"{size} rows: no dtd10 store (--store); skipped")
                continue
            X, y, where = dtd_arrays(store, (8, 2) if size <= 200 else None)
        elif size <= 7_000:
            if not Path(a.imagenette).is_file():
                print(f"{size} rows: no imagenette store (--imagenette); skipped")
                continue
            X, y, where = dtd_arrays(a.imagenette, None)
        else:
            X, y, where = synthetic_arrays(int(size * 0.8), int(size * 0.2), 1_000)
        pool = int(np.sum(where != "test"))
        print(f"\n## {pool:,} rows (train+val), {X.shape[1]}-d, {len(np.unique(y))} classes", flush=True)
        print(f"{'model':12s} {'fit s':>7s} {'select s':>9s} {'total s':>8s} {'est s':>7s} {'est/meas':>8s} "
              f"{'val':>6s} {'test':>6s} {'cv':>6s}")
        for name in names:
            m = {"rows": pool, **measure(name, X, y, where, a.jobs)}
            results.append(m)
            total = m["fit_s"] + m["selection_s"]
            ratio = (m["estimate_total_s"] or 0) / total if total else float("nan")
            print(f"{name:12s} {m['fit_s']:7.2f} {m['selection_s']:9.2f} {total:8.2f} {m['estimate_total_s']:7.2f} "
                  f"{ratio:8.2f} {m['val']:6.3f} {m['test'] or float('nan'):6.3f} "
                  f"{m['cv'] if m['cv'] is not None else float('nan'):6.3f}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
