#!/usr/bin/env python3
"""Speed and memory of both stages, printed as ratios measured side by side in one run.

    python bench/bench.py                 # hymenoptera, hymenoptera x4 whole-process, 4000 synthetic JPEGs
    python bench/bench.py --quick         # a 96-image slice, hymenoptera x1 whole-process, 2 rounds

Sections (one module each): first runs that fill the model cache; torch and OpenVINO side by
side at each precision, e2e against the forward + decode ceiling (``extraction.py``); whole
commands with start-up against the seed tutorials' loop, and cache hits (``startup.py``);
feature agreement and a linear probe per runtime and precision (``agreement.py``); decoders
at identical crops (``decoders.py``); loader levers; memory, I/O and a synthetic set
(``memory_io.py``); Ray on one machine; the classify zoo against re-running the backbone
(``classify_cost.py``). These machines are noisy (throughput drifts 2x within minutes):
compare ratios taken within one round, as the medians over rounds printed here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from harness import CORES, HYMENOPTERA, RESULTS, START, repeated, say, section, spread_subset  # noqa: E402


def ray_overhead(data: Path, work: Path) -> None:
    """Single-machine cost of --engine ray against the plain run, same images, model and precision."""
    try:
        import ray
    except ImportError:
        section("Ray: not installed (pip install -r requirements-ray.txt), skipped")
        return
    from extraction import config, e2e
    from harness import fresh

    from extract.ray_engine import extract_ray

    section("Ray engine overhead on one machine (efficientnet_lite0, default runtime, bf16)")
    plain, _ = e2e(data, "efficientnet_lite0", "auto", "bf16", work)
    t = time.perf_counter()
    s = extract_ray(config(data, "efficientnet_lite0", "auto", "bf16", fresh(work / "ray-bench.h5")), workers=CORES)
    with_start = s.rows / (time.perf_counter() - t)
    ray.shutdown()
    say(f"plain {plain:.1f} img/s; ray {s.images_per_s:.1f} img/s excluding Ray start-up, {with_start:.1f} including: "
        f"ray/plain = {s.images_per_s / plain:.2f} ({with_start / plain:.2f} with start-up)")
    RESULTS["ray"] = {"plain_img_s": plain, "ray_img_s": s.images_per_s, "ray_with_startup_img_s": with_start}


SECTIONS = ("runtimes", "whole", "agreement", "decoders", "levers", "startup", "synthetic", "ray", "classify")


def capabilities() -> set[str]:
    """The precisions this CPU runs natively on OpenVINO (and so are worth comparing)."""
    try:
        import openvino as ov
    except ImportError:
        return {"fp32", "bf16"}
    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {"fp32"} | {p for p, c in (("bf16", "BF16"), ("int8", "INT8")) if c in caps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HYMENOPTERA)
    p.add_argument("--synthetic", type=int, default=4000, help="size of the generated JPEG set (0: skip)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "featcache-bench")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per ceiling (the best counts)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds of ceiling + e2e; medians are reported (default 3, --quick 2)")
    p.add_argument("--images", type=int, default=None,
                   help="e2e on this many images spread over --data (default all, --quick 96)")
    p.add_argument("--times", type=int, default=None,
                   help="the whole-process section runs on --data this many times over (default 4, --quick 1)")
    p.add_argument("--quick", action="store_true", help="fewer images, rounds and repeats")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--only", type=lambda s: set(s.split(",")), default=set(SECTIONS), metavar="SECTIONS",
                   help=f"comma list of sections to run (default all): {','.join(SECTIONS)}")
    args = p.parse_args()
    if args.quick:
        args.synthetic, args.repeats = min(args.synthetic, 1000), 1
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.images = args.images if args.images is not None else (96 if args.quick else 0)
    args.times = args.times or (1 if args.quick else 4)
    if args.rounds < 1 or args.repeats < 1 or args.images < 0 or args.times < 1:
        p.error("--rounds, --repeats and --times must be >= 1, --images >= 0")
    if args.only - set(SECTIONS):
        p.error(f"--only: unknown sections {sorted(args.only - set(SECTIONS))}; valid: {','.join(SECTIONS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FEATCACHE_HOME", str(args.work / "featcache-home"))  # the bench's own model cache
    import harness

    harness.WEIGHTS_DIR = args.work / "weights"
    torch.set_num_threads(CORES)
    say(f"# featcache bench: {CORES} cores, torch {torch.__version__}, data {args.data}, "
        f"model cache {os.environ['FEATCACHE_HOME']}")

    import agreement
    import classify_cost
    import decoders
    import extraction
    import memory_io
    import startup

    precisions = capabilities()
    data = spread_subset(args.data, args.images, args.work) if args.images else args.data
    run = args.only.__contains__
    if run("runtimes") or run("agreement"):
        extraction.cold_start(data, args.work, precisions)
        stores = extraction.runtimes_side_by_side(data, args.work, args.rounds, args.repeats,
                                                  warmups=1 if args.quick else 2, precisions_ok=precisions)
    else:  # the later sections need a torch fp32 store of the data
        stores = {("efficientnet_lite0", "torch", "fp32"): extraction.e2e(data, "efficientnet_lite0", "torch", "fp32",
                                                                          args.work)[1]}
    if run("whole"):
        startup.whole_process(repeated(args.data, args.times, args.work), args.work, args.rounds)
    if run("agreement"):
        agreement.agreement(stores)
    if run("decoders"):
        rt, spec = extraction.runtime_for(data, "efficientnet_lite0", "auto", "fp32", args.work)
        decoders.decoders(data, rt, spec, args.rounds)
    if run("levers"):
        extraction.loader_levers(data, args.work, args.rounds)
    if run("startup"):
        startup.help_and_info(args.work, stores[("efficientnet_lite0", "torch", "fp32")])
    if run("synthetic") and args.synthetic:
        memory_io.synthetic_and_memory(args.work, args.synthetic, "bf16" if "bf16" in precisions else "fp32")
    if run("ray"):
        ray_overhead(args.data, args.work)
    if run("classify"):
        section("Reading cached features")
        mbs = memory_io.read_speed(args.work)
        say(f"read_rows from page cache: {mbs:.0f} MB/s")
        RESULTS["read_mb_s"] = mbs
        classify_cost.zoo_vs_backbone_epoch(stores[("efficientnet_lite0", "torch", "fp32")], args.data, jobs=1,
                                            epoch_images=64 if args.quick else None)
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=2, default=str))
    say(f"\nmax RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
        f"bench wall time {time.perf_counter() - START:.0f} s")


if __name__ == "__main__":
    main()
