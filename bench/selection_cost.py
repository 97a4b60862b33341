#!/usr/bin/env python3
"""What ``--select cv`` costs as stores grow: the zoo's wall time ranked by val vs by repeated CV.

    python bench/selection_cost.py [--rows 2000,10000,20000] [--models logreg,knn-dino,mlp] [--jobs 2]

Synthetic stores (bench/synthetic.py: 1280-d, 100 classes, a 500-image val split, so
``--select auto`` would pick CV up to 5,000 images; this forces it beyond). Each size runs the same models
twice in one process, ``select=val`` then ``select=cv``, and prints both wall times and their
ratio (measured in the same run: this machine is noisy).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="2000,10000,20000")
    p.add_argument("--models", default="logreg,knn-dino,mlp")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    import synthetic

    from classify import progress
    from classify.job import run_classify

    progress.set_enabled(False)
    print(f"{'rows':>7} {'val s':>8} {'cv s':>8} {'cv/val':>7}  cv folds (mean ± sd) per model")
    for n in (int(x) for x in args.rows.split(",")):
        with tempfile.TemporaryDirectory() as d:
            store = Path(d) / "s.h5"
            synthetic.make_store(store, n + 500, dim=1280, classes=100, val_fraction=500 / (n + 500))
            t0 = time.perf_counter()
            run_classify(store, models=args.models, jobs=args.jobs, out_dir=Path(d) / "val", select="val")
            t_val = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = run_classify(store, models=args.models, jobs=args.jobs, out_dir=Path(d) / "cv", select="cv")
            t_cv = time.perf_counter() - t0
        cv = "  ".join(f"{r.model} {r.extra['cv']['mean']:.3f} ± {r.extra['cv']['sd']:.3f}" for r in res)
        print(f"{n:>7,} {t_val:>8.1f} {t_cv:>8.1f} {t_cv / t_val:>7.2f}  {cv}", flush=True)


if __name__ == "__main__":
    main()
