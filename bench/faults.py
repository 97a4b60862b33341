#!/usr/bin/env python3
"""What the reliability guards cost at users' scale: checksums on write and read, the per-batch
disk check, ``info --verify``, and reading a store while it is written.

    python bench/faults.py            # 10^5 x 1280 float32 and 10^6 x 256 float16 stores
    python bench/faults.py --quick    # 10^4 and 10^5 rows

Each guarded step is timed beside the same step without the guard, alternately, in one run
(these machines are noisy); medians of the rounds. No torch: the stores are synthetic.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import featcache.store.write as store_write  # noqa: E402
from featcache.store import FeatureSpec, Manifest, open_for_write, read_rows, write_lock  # noqa: E402
from featcache.store.verify import verify_store  # noqa: E402

BATCH = 256  # rows per write, as an extraction's batches


@contextmanager
def unguarded():
    """The writer as it was before: no fletcher32 filter, no free-space check per batch."""
    create, check = h5py.Group.create_dataset, store_write.StoreWriter._check_space

    def plain(self, name, *args, **kwargs):  # noqa: ANN001, ANN202
        kwargs.pop("fletcher32", None)
        return create(self, name, *args, **kwargs)

    h5py.Group.create_dataset = plain
    store_write.StoreWriter._check_space = lambda self, rows, view_at: None
    try:
        yield
    finally:
        h5py.Group.create_dataset, store_write.StoreWriter._check_space = create, check


def write_store(out: Path, n: int, dim: int, dtype: str) -> float:
    out.unlink(missing_ok=True)
    feat = FeatureSpec("fc", "input", "none", dim)
    m = Manifest("/data", [f"img{i}.jpg" for i in range(n)], np.arange(n) // 2 % 2, ["train", "val"] * (n // 2),
                 ["a", "b"], "fp")
    block = np.random.default_rng(0).normal(size=(BATCH, dim)).astype(dtype)
    t = time.perf_counter()
    with write_lock(out):
        w = open_for_write(out, m, [feat], cache_key="bench", spec={"backbone": "bench"}, provenance={},
                           default_feature=feat.key, dtype=dtype)
        for a in range(0, n, BATCH):
            rows = np.arange(a, min(a + BATCH, n))
            w.write(rows, {feat.key: block[:len(rows)]})
        w.finish()
    return time.perf_counter() - t


def read_store(path: Path) -> float:
    t = time.perf_counter()
    read_rows(path)
    return time.perf_counter() - t


def concurrent_reads(work: Path, n: int, dim: int) -> tuple[int, float]:
    """Reads of a store while tests/slow_writer.py writes it: how many, and the median seconds each."""
    out = work / "live.h5"
    writer = subprocess.Popen([sys.executable, str(ROOT / "tests" / "slow_writer.py"), str(out), str(n), str(dim),
                               "500", "0.005"])
    times = []
    from featcache.store import partial_path

    while not partial_path(out).exists() and writer.poll() is None:
        time.sleep(0.01)
    while writer.poll() is None:
        t = time.perf_counter()
        try:
            read_rows(out, allow_partial=True)
        except Exception as e:  # noqa: BLE001 - the store finished between the check and the read
            if writer.poll() is None:
                raise RuntimeError(f"a read of the live store failed: {e}") from e
            break
        times.append(time.perf_counter() - t)
    assert writer.wait() == 0
    return len(times), statistics.median(times) if times else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes = [(10_000, 1280, "float32"), (100_000, 256, "float16")] if args.quick else \
        [(100_000, 1280, "float32"), (1_000_000, 256, "float16")]
    with tempfile.TemporaryDirectory(prefix="bench-faults-", dir=ROOT.parent if (ROOT.parent / "tmp").is_dir()
                                     else None) as tmp:
        work = Path(tmp)
        for n, dim, dtype in sizes:
            mb = n * dim * np.dtype(dtype).itemsize / 1e6
            w_on, w_off, r_on, r_off, v = [], [], [], [], []
            for _ in range(args.rounds):
                with unguarded():
                    w_off.append(write_store(work / "plain.h5", n, dim, dtype))
                w_on.append(write_store(work / "sums.h5", n, dim, dtype))
                r_off.append(read_store(work / "plain.h5"))
                r_on.append(read_store(work / "sums.h5"))
                t = time.perf_counter()
                assert verify_store(work / "sums.h5").ok
                v.append(time.perf_counter() - t)
            med = statistics.median
            print(f"{n:>9,} rows x {dim} {dtype} ({mb:,.0f} MB), medians of {args.rounds} rounds:")
            print(f"  write  {mb / med(w_on):7.0f} MB/s with fletcher32 + disk check, {mb / med(w_off):7.0f} MB/s "
                  f"without: {med(w_on) / med(w_off):.2f}x the time")
            print(f"  read   {mb / med(r_on):7.0f} MB/s with checksums, {mb / med(r_off):7.0f} MB/s without: "
                  f"{med(r_on) / med(r_off):.2f}x the time (page cache)")
            print(f"  verify {mb / med(v):7.0f} MB/s: {med(v):.2f} s for the whole store")
        n, dim = sizes[0][0] // 2, 512
        reads, each = concurrent_reads(work, n, dim)
        print(f"live store ({n:,} rows x {dim}, written in batches of 500): {reads} reads with --allow-partial "
              f"while it was written, median {each * 1e3:.0f} ms each, none failed")


if __name__ == "__main__":
    main()
