#!/usr/bin/env python3
"""``pipeline.py audit`` at growing sizes: whole-command seconds and peak memory.

    python bench/audit.py [--rows 1000,20000,60000] [--dim 1280]

Synthetic stores (bench/synthetic.py, 100 classes). The neighbour search is exact (one chunked
matmul of every row against every row), so its cost grows with rows squared: past ~10^5 rows
the audit needs an approximate index, which this measures the need for. Label issues use a
5-fold logistic regression up to classify.audit.LOGREG_MAX_ROWS rows, the neighbours' vote beyond.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from synthetic import make_store  # noqa: E402

CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import pipeline
code = pipeline.main(["audit", {store!r}, "--out", {out!r}, "-q"])
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(hwm / 1024, code)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1000,20000,60000")
    p.add_argument("--dim", type=int, default=1280)
    args = p.parse_args()
    print(f"{'rows':>8s} {'wall s':>7s} {'peak RSS MB':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (int(r) for r in args.rows.split(",")):
            store = Path(tmp) / f"s{rows}.h5"
            make_store(store, rows, args.dim, classes=100)
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), store=str(store),
                                                                   out=str(Path(tmp) / f"a{rows}"))],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(r.stderr[-2000:])
            print(f"{rows:8d} {time.perf_counter() - t:7.1f} {float(r.stdout.split()[-2]):11.0f}")


if __name__ == "__main__":
    main()
