#!/usr/bin/env python3
"""The small end: a default ``pipeline.py run`` at 10^2-10^4 images beside the tutorial script, in one run.

    python bench/small_n.py [--sets sample,dtd10,imagenette] [--rounds 1] [--compare CHECKOUT] [--work DIR]

For each image set, as a user times them (whole commands, start-up included), back to back in
each round:
1. ``bench/tutorial_script.py DATA``: the seed loop's extraction and twelve scikit-learn
   classifiers (the baseline the project grew from);
2. ``pipeline.py run --data DATA`` with its defaults, cold (no feature store yet; the model
   cache warm, as after a first run on the machine);
3. with ``--compare CHECKOUT`` (another commit's work tree, e.g. ``git worktree add /tmp/old
   REV``), the same cold command from that checkout, with this interpreter: before and after on
   one machine, alternated;
4. in the first round, the same run again into a new RUN_DIR on the stores of step 2 (a warm
   store, every classifier fitted again): the figure the README's demo promises.
Ratios are medians over the rounds, with their range: the machines are noisy.

Where a cold run's wall-clock seconds go, from what it recorded (they add up to its wall time):
the extractions one after another in this process; the classifying that was still running after
the last extraction (the zoos run on worker processes beside the extractions); ensembles; audit;
and start-up, the report and exit. Beside them, the zoos' model-seconds (each model's fit, and its
CV and refit), which overlap the extractions and each other (on run's workers, CPU seconds), then every model's estimate
beside its measured time. ``imagenette`` (7,000 photos) adds ~12 minutes a round, most of it the tutorial
script. The machine line says whether the CPU computes bf16 natively: extraction takes about half
the time there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETS = {"sample": ROOT / "data" / "sample", "dtd10": DATASETS / "dtd10", "imagenette": DATASETS / "imagenette"}


def timed(args: list[str], cwd: Path = ROOT) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} (in {cwd}) failed ({r.returncode}): {r.stderr[-2000:]}")
    return wall, r.stdout


def machine() -> str:
    """CPU model, cores and whether bf16 is native (what decides the extraction's speed here)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    bf16 = "native bf16" if {"avx512_bf16", "amx_bf16"} & flags else "no native bf16"
    return f"{info.get('model name') or platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores, {bf16}"


def run_split(run_dir: Path, wall: float) -> dict:
    """Where a run's wall-clock seconds went, and its zoos' model-seconds, from what it recorded."""
    summary = json.loads((run_dir / "results.json").read_text())
    phases = summary.get("phases", {})
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
    return {"wall": wall, "extraction": extraction,
            # extraction and classifying share a phase: what is left of it once the last store is written
            "classify_after": max(phases.get("extract_and_classify_s", 0.0) - extraction, 0.0),
            "ensembles": phases.get("ensembles_s", 0.0), "audit": phases.get("audit_s", 0.0),
            "finetune": phases.get("finetune_s", 0.0),
            "outside": wall - summary["seconds"],  # start-up, the report, exit
            "fits": fits, "selection": selection, "few_shot": few_shot, "models": models,
            "rank1": f"{top['model']} ({top['backbone']})", "rank1_test": float(top["test_accuracy"] or "nan")}


def ratio_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}..{max(values):.2f})" if values else "-"


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" + (f" ({min(values):.1f}..{max(values):.1f})" if len(values) > 1 else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="sample,dtd10", help="comma-separated: " + ", ".join(SETS))
    p.add_argument("--rounds", type=int, default=1, help="rounds per set (medians and ranges over them)")
    p.add_argument("--compare", type=Path, default=None, metavar="CHECKOUT",
                   help="another commit's work tree whose default run is timed in each round too")
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = p.parse_args()
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    for n in names:
        if n not in SETS or not SETS[n].is_dir():
            raise SystemExit(f"--sets: {n!r} is not one of {', '.join(SETS)} or its folder {SETS.get(n)} is missing")
    if args.rounds < 1:
        raise SystemExit(f"--rounds: expected at least 1, got {args.rounds}")
    if args.compare is not None and not (args.compare / "pipeline.py").is_file():
        raise SystemExit(f"--compare: {args.compare} has no pipeline.py (a checkout of another commit, e.g. "
                         "`git worktree add /tmp/old REV`)")
    work = args.work or Path(tempfile.mkdtemp(prefix="small-n-"))
    print(f"machine: {machine()}", flush=True)
    results = []
    for n in names:
        data = SETS[n]
        print(f"## {n} ({data})", flush=True)
        tuts, cold, other, warm = [], [], [], None
        for r in range(1, args.rounds + 1):
            wall, out = timed(["bench/tutorial_script.py", str(data)])
            tut = json.loads(out.strip().splitlines()[-1])
            tuts.append((wall, tut))
            print(f"round {r}: tutorial script {wall:.1f} s (extraction {tut['extraction_s']:.1f} s, 12 classifiers "
                  f"{tut['classifiers_s']:.1f} s; best {tut['best']} {tut['scores'][tut['best']]:.3f})", flush=True)
            cold_dir = work / f"{n}-cold-{r}"
            wall, _ = timed(["pipeline.py", "-q", "run", "--data", str(data), "--out", str(cold_dir)])
            cold.append(run_split(cold_dir, wall))
            print(f"round {r}: default run, cold: {wall:.1f} s = {wall / tuts[-1][0]:.2f}x the tutorial script; "
                  f"rank 1 {cold[-1]['rank1']} test {cold[-1]['rank1_test']:.3f}", flush=True)
            if args.compare is not None:
                other_dir = work / f"{n}-compare-{r}"
                wall, _ = timed([str((args.compare / "pipeline.py").resolve()), "-q", "run", "--data", str(data),
                                 "--out", str(other_dir)], cwd=args.compare)
                other.append(run_split(other_dir, wall))
                print(f"round {r}: {args.compare}'s default run, cold: {wall:.1f} s = {wall / tuts[-1][0]:.2f}x",
                      flush=True)
            if warm is None:
                warm, _ = timed(["pipeline.py", "-q", "run", "--data", str(data), "--out", str(work / f"{n}-warm"),
                                 "--cache-dir", str(cold_dir / "features")])
                print(f"default run, warm store: {warm:.1f} s", flush=True)
        results.append((n, tuts, cold, other, warm))

    print(f"\nMedians over {args.rounds} round(s), (min..max); seconds, whole commands. Machine: {machine()}.")
    print("\n| set | run | tutorial script s | default run s (cold) | ratio | extraction | classifying after it | "
          "ensembles | audit | start-up, report, exit | warm store s | rank 1 test | tutorial best test |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, tuts, cold, other, warm in results:
        tut_walls = [w for w, _ in tuts]
        best = [t["scores"][t["best"]] for _, t in tuts]
        for label, runs, warm_s in (("this checkout", cold, warm), (str(args.compare), other, None)):
            if not runs:
                continue
            ratios = [c["wall"] / w for c, w in zip(runs, tut_walls)]
            print(f"| {n} | {label} | {med(tut_walls)} | {med([c['wall'] for c in runs])} | **{ratio_range(ratios)}** | "
                  + " | ".join(med([c[k] for c in runs]) for k in ("extraction", "classify_after", "ensembles", "audit",
                                                                    "outside"))
                  + f" | {'-' if warm_s is None else f'{warm_s:.1f}'} | {statistics.median(c['rank1_test'] for c in runs):.3f}"
                  f" | {statistics.median(best):.3f} |")
    print("\nThe zoos' model-seconds in the cold runs (fits; CV and refits; few-shot curves), which overlap the "
          "extractions and each other:")
    for n, _, cold, other, _ in results:
        for label, runs in (("this checkout", cold), (str(args.compare), other)):
            if runs:
                print(f"- {n}, {label}: fits {med([c['fits'] for c in runs])}, CV and refits "
                      f"{med([c['selection'] for c in runs])}, few-shot {med([c['few_shot'] for c in runs])}")
    print("\nEstimates / measured, per model (median and range over the models of each set's first cold run; the "
          "estimates are for one job on an idle core; fits on run's workers are timed in their thread's CPU seconds, "
          "in-process ones by the wall clock):")
    print("| set | models | fit: estimate / measured | fit + CV + refit: estimate / measured | outside 2x |")
    print("|---|---|---|---|---|")
    for n, _, cold, _, _ in results:
        models = cold[0]["models"]
        fit = [m["est"] / m["fit"] for m in models if m["est"] and m["fit"] >= 0.05]
        tot = [m["est_total"] / m["total"] for m in models if m["est_total"] and m["total"] >= 0.05]
        off = sorted({m["model"] for m in models if m["est_total"] and m["total"] >= 0.05
                      and not 0.5 <= m["est_total"] / m["total"] <= 2})
        print(f"| {n} | {len(models)} | {ratio_range(fit)} | {ratio_range(tot)} | {', '.join(off) or '-'} |")
    print(f"\n(scratch: {work})")


if __name__ == "__main__":
    main()
