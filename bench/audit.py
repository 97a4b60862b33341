#!/usr/bin/env python3
"""``pipeline.py audit`` at growing sizes: whole-command seconds and peak memory.

    python bench/audit.py [--rows 1000,20000,50000,200000,1000000] [--dim 1280]

Synthetic stores (bench/synthetic.py, 100 classes; float16 past 10^5 rows, to halve the disk).
Up to classify.audit.EXACT_MAX_ROWS the neighbour search is exact (one chunked matmul of every
row against every row, so rows squared); past it, faiss's IVF index on a PCA projection proposes
candidates that are rescored exactly. Label issues use a 5-fold logistic regression up to
classify.audit.LOGREG_MAX_ROWS rows, the neighbours' vote beyond.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from harness import pipeline_in_child
from synthetic import make_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1000,20000,50000,200000,1000000")
    p.add_argument("--dim", type=int, default=1280)
    args = p.parse_args()
    print(f"{'rows':>8s} {'wall s':>7s} {'peak RSS MB':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (int(r) for r in args.rows.split(",")):
            store = Path(tmp) / f"s{rows}.h5"
            make_store(store, rows, args.dim, classes=100, dtype="float16" if rows > 100_000 else "float32")
            wall, _, rss = pipeline_in_child(["audit", str(store), "--out", str(Path(tmp) / f"a{rows}"), "-q"])
            print(f"{rows:8d} {wall:7.1f} {rss:11.0f}")


if __name__ == "__main__":
    main()
