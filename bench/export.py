#!/usr/bin/env python3
"""``pipeline.py export`` at both ends: seconds and peak memory of the npy and Parquet exports.

    python bench/export.py [--rows 1000,200000] [--dim 1280]

Each size is a synthetic store (bench/synthetic.py); each export runs in its own process
(``harness.pipeline_in_child``: its peak RSS is its own), timed as a whole command, start-up
included, beside the store's size, so the MB/s and the memory per row are measured in one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness import pipeline_in_child
from synthetic import make_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1000,200000")
    p.add_argument("--dim", type=int, default=1280)
    args = p.parse_args()
    print(f"{'rows':>8s} {'store MB':>9s} {'format':8s} {'wall s':>7s} {'in-process s':>12s} {'MB/s':>7s} {'peak RSS MB':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (int(r) for r in args.rows.split(",")):
            store = Path(tmp) / f"s{rows}.h5"
            make_store(store, rows, args.dim, classes=100)
            mb = rows * args.dim * 4 / 1e6
            for fmt in ("npy", "parquet"):
                out = Path(tmp) / f"{fmt}{rows}"
                wall, inproc, rss = pipeline_in_child(["export", str(store), "--format", fmt, "--out", str(out), "-q"])
                assert json.loads((out / "index.json").read_text())["rows"] == rows
                print(f"{rows:8d} {mb:9.0f} {fmt:8s} {wall:7.2f} {inproc:12.2f} {mb / inproc:7.0f} {rss:11.0f}")


if __name__ == "__main__":
    main()
