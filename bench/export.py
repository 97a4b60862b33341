#!/usr/bin/env python3
"""``pipeline.py export`` at both ends: seconds and peak memory of the npy and Parquet exports.

    python bench/export.py [--rows 1000,200000] [--dim 1280]

Each size is a synthetic store (bench/synthetic.py); each export runs in its own process
(peak RSS from ``/proc/self/status`` VmHWM, which an exec resets, unlike
``ru_maxrss``, which would report the parent's), timed as a whole command, start-up
included, beside the store's size, so the MB/s and the memory per row are measured in one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthetic import make_store  # noqa: E402

CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import pipeline
t = time.perf_counter()
code = pipeline.main(["export", {store!r}, "--format", {fmt!r}, "--out", {out!r}, "-q"])
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(time.perf_counter() - t, hwm / 1024, code)
"""


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
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), store=str(store), fmt=fmt,
                                                                       out=str(out))], capture_output=True, text=True)
                wall = time.perf_counter() - t
                if r.returncode != 0:
                    raise SystemExit(r.stderr[-2000:])
                inproc, rss, _ = r.stdout.split()[-3:]
                assert json.loads((out / "index.json").read_text())["rows"] == rows
                print(f"{rows:8d} {mb:9.0f} {fmt:8s} {wall:7.2f} {float(inproc):12.2f} {mb / float(inproc):7.0f} "
                      f"{float(rss):11.0f}")


if __name__ == "__main__":
    main()
