"""Whole commands as a user times them: start-up included, against the seed tutorials' loop.

Each round runs, back to back: the seed-style loop (``bench/seed_loop.py``), ``pipeline.py
extract`` with default options into a fresh store, and the same command again (a cache hit).
The model cache is warmed first by one cold run, whose fixed costs (``-v``) are printed too:
that is what a user's very first extraction of a backbone costs.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import RESULTS, ROOT, fresh, say, section, spread

from extract.images import list_images


def _run(args: list[str], env: dict | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return seconds, r.stderr


def _fixed_costs(stderr: str) -> str:
    m = re.search(r"fixed costs: (.*)", stderr)
    return m.group(1) if m else "-"


def whole_process(data: Path, work: Path, n_rounds: int, backbone: str = "efficientnet_lite0") -> None:
    n = len(list_images(data))
    section(f"2. Whole process on {data.name} ({n} images), start-up included: seed-style loop vs "
            f"`pipeline.py extract` with default options vs the same command again (cache hit), {n_rounds} rounds")
    home = work / "featcache-home-cold"
    env = {**os.environ, "FEATCACHE_HOME": str(home)}
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    out = work / "whole.h5"
    cmd = ["pipeline.py", "-v", "extract", "--data", str(data), "--backbone", backbone, "--out", str(out)]
    cold, err = _run(cmd, env)
    fresh(out)
    say(f"first run on this machine (empty model cache): {cold:.1f} s; {_fixed_costs(err)}")
    rounds = []
    for _ in range(n_rounds):
        seed, _ = _run(["bench/seed_loop.py", str(data), str(work / "seed.npy"), "--backbone", backbone])
        fresh(out)
        ours, err = _run(cmd, env)
        hit, hit_err = _run(cmd, env)
        rounds.append({"seed_s": seed, "extract_s": ours, "hit_s": hit, "speedup": seed / ours,
                       "hit_share": hit / ours})
        say(f"round: seed loop {seed:.1f} s, extract {ours:.1f} s ({seed / ours:.2f}x), cache hit {hit:.2f} s "
            f"({100 * hit / ours:.1f}% of the extraction)")
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    say(f"median: seed loop {med['seed_s']:.1f} s = {n / med['seed_s']:.1f} img/s; extract {med['extract_s']:.1f} s = "
        f"{n / med['extract_s']:.1f} img/s; speedup {spread([r['speedup'] for r in rounds])}x (target >= 4x); "
        f"cache hit {med['hit_s']:.2f} s = {spread([100 * r['hit_share'] for r in rounds])}% of the extraction "
        f"(target <= 10%)")
    say(f"fixed costs of a warm extraction: {_fixed_costs(err)}")
    say(f"fixed costs of a cache hit: {_fixed_costs(hit_err)}")
    RESULTS["whole_process"] = {"images": n, "cold_s": cold, **med, "rounds": rounds}


def help_and_info(work: Path, store: Path) -> None:
    """Commands that should not pay for torch or scikit-learn."""
    section("Start-up of commands that need no model")
    for args in (["pipeline.py", "--help"], ["pipeline.py", "info", str(store)], ["pipeline.py", "classify", "--help"]):
        times = [_run(args)[0] for _ in range(3)]
        say(f"{' '.join(args[:2]):28s} {statistics.median(times):.2f} s")
        RESULTS[f"startup/{' '.join(args[:2])}"] = statistics.median(times)
