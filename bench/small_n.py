#!/usr/bin/env python3
"""The small end: a default ``pipeline.py run`` at 10^2-10^4 images beside the tutorial script, in one run.

    python bench/small_n.py [--sets sample,dtd10,imagenette] [--work DIR]

For each image set, as a user times them (whole commands, start-up included), back to back:
1. ``bench/tutorial_script.py DATA``: the seed loop's extraction and twelve scikit-learn
   classifiers (the baseline the project grew from);
2. ``pipeline.py run --data DATA`` with its defaults, cold (no feature store yet; the model
   cache warm, as after a first run on the machine), split into extraction, fits (each model's
   sweep on train), selection (repeated CV of the chosen configurations and the train+val
   refits), few-shot curves, ensembles, and the rest (start-up, loading, saving, the report);
3. the same run again into a new RUN_DIR on the stores of step 2 (a warm store, every
   classifier fitted again): the figure the README's demo promises.
Then every model's estimate beside its measured time (fit alone, and fit + CV + refit).
Ratios are measured in this run: the machines are noisy. ``imagenette`` (7,000 photos) adds
~12 minutes, most of it the tutorial script.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETS = {"sample": ROOT / "data" / "sample", "dtd10": DATASETS / "dtd10", "imagenette": DATASETS / "imagenette"}


def timed(args: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return wall, r.stdout


def run_split(run_dir: Path) -> dict:
    """Where a run's seconds went, from what it recorded."""
    summary = json.loads((run_dir / "results.json").read_text())
    extraction = sum(e["seconds"] or 0.0 for e in summary["extraction"] if e["status"] != "hit")
    fits = selection = few_shot = 0.0
    models = []
    for metrics in sorted((run_dir / "classify").glob("*/metrics.json")):
        meta = json.loads(metrics.read_text())
        few_shot += meta.get("few_shot_s") or 0.0
        for r in meta["results"]:
            extra = r.get("extra") or {}
            cv = (extra.get("cv") or {}).get("seconds") or 0.0
            refit = extra.get("refit_s") or 0.0
            fits += r["fit_s"]
            selection += cv + refit
            models.append({"model": r["model"], "fit": r["fit_s"], "est": extra.get("estimate_s"),
                           "total": r["fit_s"] + cv + refit, "est_total": extra.get("estimate_total_s")})
    with open(run_dir / "report" / "leaderboard.csv") as f:
        top = next(csv.DictReader(f))
    phases = summary.get("phases", {})
    return {"extraction": extraction, "fits": fits, "selection": selection, "few_shot": few_shot,
            "ensembles": phases.get("ensembles_s", 0.0), "in_process": summary["seconds"], "models": models,
            "rank1": f"{top['model']} ({top['backbone']})", "rank1_test": float(top["test_accuracy"] or "nan"),
            "skipped": sum(1 for s in summary["skipped"] if s.get("kind") != "backbone")}


def ratio_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}..{max(values):.2f})" if values else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="sample,dtd10", help="comma-separated: " + ", ".join(SETS))
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = p.parse_args()
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    for n in names:
        if n not in SETS or not SETS[n].is_dir():
            raise SystemExit(f"--sets: {n!r} is not one of {', '.join(SETS)} or its folder {SETS.get(n)} is missing")
    work = args.work or Path(tempfile.mkdtemp(prefix="small-n-"))
    rows, estimates = [], []
    for n in names:
        data = SETS[n]
        print(f"## {n} ({data})", flush=True)
        tut_wall, out = timed(["bench/tutorial_script.py", str(data)])
        tut = json.loads(out.strip().splitlines()[-1])
        print(f"tutorial script: {tut_wall:.1f} s (extraction {tut['extraction_s']:.1f} s, 12 classifiers "
              f"{tut['classifiers_s']:.1f} s; best {tut['best']} {tut['scores'][tut['best']]:.3f}, logreg "
              f"{tut['scores']['logistic regression']:.3f})", flush=True)
        cold_dir, warm_dir = work / f"{n}-cold", work / f"{n}-warm"
        cold_wall, _ = timed(["pipeline.py", "-q", "run", "--data", str(data), "--out", str(cold_dir)])
        cold = run_split(cold_dir)
        print(f"default run, cold: {cold_wall:.1f} s = {cold_wall / tut_wall:.2f}x the tutorial script; rank 1 "
              f"{cold['rank1']} test {cold['rank1_test']:.3f}", flush=True)
        warm_wall, _ = timed(["pipeline.py", "-q", "run", "--data", str(data), "--out", str(warm_dir),
                              "--cache-dir", str(cold_dir / "features")])
        print(f"default run, warm store: {warm_wall:.1f} s", flush=True)
        rest = cold_wall - (cold["extraction"] + cold["fits"] + cold["selection"] + cold["few_shot"] + cold["ensembles"])
        rows.append((n, tut, tut_wall, cold, cold_wall, warm_wall, rest))
        estimates.append((n, cold["models"]))
    print("\n| set | tutorial script s | default run s (cold) | ratio | extraction | fits | selection | few-shot | "
          "ensembles | start-up, I/O, report | warm store s | rank 1 test | tutorial best / logreg test |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, tut, tut_wall, cold, cold_wall, warm_wall, rest in rows:
        print(f"| {n} | {tut_wall:.1f} | {cold_wall:.1f} | **{cold_wall / tut_wall:.2f}x** | {cold['extraction']:.1f} | "
              f"{cold['fits']:.1f} | {cold['selection']:.1f} | {cold['few_shot']:.1f} | {cold['ensembles']:.1f} | "
              f"{rest:.1f} | {warm_wall:.1f} | {cold['rank1_test']:.3f} | {tut['scores'][tut['best']]:.3f} / "
              f"{tut['scores']['logistic regression']:.3f} |")
    print("\nEstimates / measured, per model (median and range over the models of each set's default run):")
    print("| set | models | fit: estimate / measured | fit + CV + refit: estimate / measured | outside 2x |")
    print("|---|---|---|---|---|")
    for n, models in estimates:
        fit = [m["est"] / m["fit"] for m in models if m["est"] and m["fit"] >= 0.05]
        tot = [m["est_total"] / m["total"] for m in models if m["est_total"] and m["total"] >= 0.05]
        off = sorted({m["model"] for m in models if m["est_total"] and m["total"] >= 0.05
                      and not 0.5 <= m["est_total"] / m["total"] <= 2})
        print(f"| {n} | {len(models)} | {ratio_range(fit)} | {ratio_range(tot)} | {', '.join(off) or '-'} |")
    print(f"\n(scratch: {work})")


if __name__ == "__main__":
    main()
