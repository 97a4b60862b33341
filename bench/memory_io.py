"""Memory and I/O: peak RSS of an extraction at N and 4N images, HDF5 read speed, the synthetic JPEG set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from harness import RESULTS, ROOT, fresh, median_time, say, section, subset, synthetic_set

from extract.runner import ExtractConfig, extract


def peak_rss_mb(data: Path, work: Path, name: str, precision: str) -> float:
    """The extraction's own high-water mark (VmHWM): ``getrusage``'s ru_maxrss would include the RSS of
    this bench process, which a fork-then-exec child inherits on Linux."""
    out = fresh(work / f"rss-{data.name}.h5")
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from extract.runner import ExtractConfig, extract\n"
        "extract(ExtractConfig(data=%r, backbone=%r, out=%r, precision=%r, progress=False, overwrite=True))\n"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    ) % (str(ROOT), str(data), name, str(out), precision)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(r.stdout.strip().splitlines()[-1]) / 1024


def synthetic_and_memory(work: Path, n_images: int, precision: str) -> None:
    section(f"Synthetic set: {n_images} JPEGs, 320x240..1600x1200 (default runtime, {precision})")
    synth = synthetic_set(work, n_images)
    for draft in (False, True):
        out = fresh(work / f"synthetic-{draft}.h5")
        s = extract(ExtractConfig(data=str(synth), backbone="efficientnet_lite0", out=str(out), precision=precision,
                                  draft=draft, progress=False))
        say(f"efficientnet_lite0 {precision}{' --draft' if draft else ''}: {s.images_per_s:.1f} img/s")
        RESULTS[f"synthetic/{precision}/draft={draft}"] = {"img_s": s.images_per_s}
    n = max(100, n_images // 4)
    small, big = subset(synth, n, work), subset(synth, 4 * n, work)
    r1 = peak_rss_mb(small, work, "efficientnet_lite0", precision)
    r4 = peak_rss_mb(big, work, "efficientnet_lite0", precision)
    section(f"Peak RSS: {n} images {r1:.0f} MB, {4 * n} images {r4:.0f} MB, ratio {r4 / r1:.3f}")
    RESULTS["rss_mb"] = {"n": n, "at_n": r1, "at_4n": r4, "ratio": r4 / r1}


def read_speed(work: Path, rows: int = 50_000, dim: int = 1280) -> float:
    from featcache.store import FeatureSpec, Manifest, open_for_write, read_rows, write_lock

    path = work / "read-bench.h5"
    if not path.exists():
        m = Manifest("/", [f"{i}.jpg" for i in range(rows)], np.zeros(rows, np.int64), ["train"] * rows, ["a"], "x")
        with write_lock(path):
            w = open_for_write(path, m, [FeatureSpec("fc", "input", "none", dim)], cache_key="b", spec={},
                               provenance={}, default_feature="fc:in/none")
            for s in range(0, rows, 4096):
                r = np.arange(s, min(s + 4096, rows))
                w.write(r, {"fc:in/none": np.random.rand(len(r), dim).astype("f4")})
            w.finish()
    read_rows(path)  # into page cache
    seconds = median_time(lambda: read_rows(path), 3)
    return rows * dim * 4 / seconds / 1e6
