#!/usr/bin/env python3
"""Which levers move test accuracy on data we never tuned on: the regression check of issue 23.

    python bench/heldout_study.py [--datasets dtd10,hymenoptera,imagenette] [--seeds 3] [--run]

For each dataset, EfficientNet-Lite0/1/2 features (the classifier's input, each backbone at its
native resolution) are extracted once into ``--cache-dir``. Then, per seed, the labelled images
are split again (stratified; seed 0 keeps the dataset's own train/val/test where it has all
three, later seeds redraw splits of the same sizes), and each lever is scored on that seed's
test images, which no choice saw:

- ``tutorial``: the seed tutorials' recipe: Lite0, hook on the pool, scikit-learn's
  ``LogisticRegression()`` on train (raw features, default C).
- ``logreg``: the project's probe (standardized, C chosen by CV over train+val), fitted on train.
- ``+ refit``: the same, refitted on train+val (``--final-fit auto`` under ``--select cv``).
- ``lite1`` / ``lite2``: one other backbone, refitted.
- ``concat 0+1+2``: the three feature sets side by side, refitted.
- ``vote 0+1+2``: the mean probability of the three refitted probes (the run's "best of each
  backbone" row when logreg is each backbone's best).

Wall time is what a user waits for the lever: extraction of the backbones it needs (measured
once, from a cold cache) plus its fits and CV. ``--run`` also times a default ``pipeline.py run``
on the dataset's own split (whole command, as a user types it) and prints what it ranked first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def extract_all(data: Path, cache: Path) -> dict[str, tuple[str, float]]:
    """{backbone: (store, seconds)}; seconds of the first (cold) extraction, kept beside the store."""
    from extract import extract_features

    out = {}
    for bb in BACKBONES:
        store = cache / f"{data.name}-{bb}.h5"
        timing = store.with_suffix(".seconds")
        if not store.is_file():
            t = time.perf_counter()
            extract_features(data, bb, store, progress=False)
            timing.write_text(f"{time.perf_counter() - t:.2f}")
        out[bb] = (str(store), float(timing.read_text()) if timing.is_file() else float("nan"))
    return out


def resplit(sets: list, seed: int, per_class: int | None) -> list:
    """The same stratified train/val/test redraw for every backbone's FeatureSet (aligned by path)."""
    from classify.features import Split

    ref = sets[0]
    parts = [s for s in (ref.train, ref.val, ref.test) if s is not None]
    paths = np.concatenate([p.paths for p in parts])
    y = np.concatenate([p.y for p in parts])
    own = ref.test is not None and ref.val_source == "val split"
    sizes = [len(ref.train), len(ref.val), len(ref.test)] if own else None
    rng = np.random.default_rng(seed)
    labels = np.empty(len(y), dtype="U5")
    if seed == 0 and own and per_class is None:
        labels[:] = ["train"] * len(ref.train) + ["val"] * len(ref.val) + ["test"] * len(ref.test)
    else:
        frac = np.array(sizes, float) / sum(sizes) if sizes else np.array([0.5, 0.2, 0.3])
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            if per_class:
                idx = idx[:per_class]
            a = int(round(frac[0] * len(idx)))
            b = a + int(round(frac[1] * len(idx)))
            labels[idx[:a]], labels[idx[a:b]], labels[idx[b:]] = "train", "val", "test"
    out = []
    for s in sets:
        sp = [p for p in (s.train, s.val, s.test) if p is not None]
        X = np.concatenate([np.asarray(p.X, np.float32) for p in sp])
        pp = np.concatenate([p.paths for p in sp])
        order = {p: i for i, p in enumerate(pp.tolist())}
        at = np.array([order[p] for p in paths.tolist()])

        def part(name: str) -> Split:
            m = labels == name
            return Split(X[at][m], y[m], paths[m])

        out.append(replace(s, train=part("train"), val=part("val"), test=part("test"), val_source="val split"))
    return out


def probe(data, final_fit: str, seed: int, out: Path):  # noqa: ANN001, ANN201
    from classify.fit import fit
    from classify.plan import Shape, plan_one

    t = time.perf_counter()
    [res] = fit(plan_one("logreg", Shape.of(data), seed=seed, select="cv", final_fit=final_fit), data)
    return res, time.perf_counter() - t


def levers(sets: list, seed: int, ext_s: dict[str, float]) -> dict[str, tuple[float, float]]:
    """{lever: (test accuracy, seconds)} on one seed's split."""
    from sklearn.linear_model import LogisticRegression

    from classify.ensembles import concat_features

    got: dict[str, tuple[float, float]] = {}
    d0 = sets[0]
    t = time.perf_counter()
    tut = LogisticRegression(max_iter=1000).fit(d0.train.X, d0.train.y)
    got["tutorial (lite0, sklearn logreg on train)"] = (
        float(tut.score(d0.test.X, d0.test.y)), ext_s[BACKBONES[0]] + time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        res, s = probe(d0, "train", seed, out)
        got["logreg lite0, fit on train"] = (res.test["accuracy"], ext_s[BACKBONES[0]] + s)
        probes = {}
        for bb, d in zip(BACKBONES, sets):
            probes[bb] = probe(d, "train+val", seed, out)
            r, s = probes[bb]
            got[f"logreg {bb.removeprefix('efficientnet_')}, refit on train+val"] = (r.test["accuracy"], ext_s[bb] + s)
        t = time.perf_counter()
        cat = concat_features(concat_features(sets[0], sets[1], "a"), sets[2], "0+1+2")
        r, s = probe(cat, "train+val", seed, out)
        got["concat lite0+1+2, refit"] = (r.test["accuracy"], sum(ext_s.values()) + s)
        proba = [r.estimator.predict_proba(np.asarray(d.test.X, np.float32)) for (r, _), d in zip(probes.values(), sets)]
        pred = probes[BACKBONES[0]][0].estimator.classes_[np.mean(proba, axis=0).argmax(1)]
        got["vote lite0+1+2, refit"] = (float(np.mean(pred == d0.test.y)),
                                        sum(ext_s.values()) + sum(s for _, s in probes.values()))
    return got


def time_run(data: Path) -> dict:
    """A default ``pipeline.py run`` as a user types it; its rank 1 and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "run", "--data", str(data), "--out", tmp,
                        "--quiet"], check=True, capture_output=True)
        wall = time.perf_counter() - t
        board = json.loads((Path(tmp) / "report" / "leaderboard.json").read_text())["rows"]
    top = board[0]
    return {"wall_s": wall, "rank1": f"{top['model']} on {top['backbone']} {top['feature']}",
            "rank1_test": top.get("test_accuracy")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="dtd10,hymenoptera,imagenette")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--per-class", default="imagenette=100",
                   help="images per class to keep, as NAME=N pairs (imagenette's 700 per class make CV slow)")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "heldout" / "features")
    p.add_argument("--run", action="store_true", help="also time a default pipeline.py run on each dataset")
    args = p.parse_args()

    from classify.features import load_features

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    caps = dict(kv.split("=") for kv in args.per_class.split(",") if kv)
    summary = {}
    for name in args.datasets.split(","):
        data = DATASETS / name
        if not data.is_dir():
            print(f"{name}: {data} not found; skipped")
            continue
        stores = extract_all(data, args.cache_dir)
        ext_s = {bb: s for bb, (_, s) in stores.items()}
        sets = [load_features(st) for st, _ in stores.values()]
        per_seed: dict[str, list[tuple[float, float]]] = {}
        for seed in range(args.seeds):
            split = resplit(sets, seed, int(caps[name]) if name in caps else None)
            for lever, v in levers(split, seed, ext_s).items():
                per_seed.setdefault(lever, []).append(v)
        counts = {k: len(getattr(split[0], k)) for k in ("train", "val", "test")}
        base = statistics.mean(a for a, _ in per_seed["tutorial (lite0, sklearn logreg on train)"])
        print(f"\n## {name}: {counts} images per seed, {args.seeds} seeds (seed 0: "
              f"{'the dataset split' if name not in caps and sets[0].test is not None else 'a redraw'}); "
              f"extraction {', '.join(f'{b[-5:]} {s:.1f} s' for b, s in ext_s.items())}\n")
        print("| lever | test acc (mean ± sd) | vs tutorial (points) | wall s (median) |")
        print("|---|---|---|---|")
        rows = {}
        for lever, vals in per_seed.items():
            accs = [a for a, _ in vals]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            wall = statistics.median(s for _, s in vals)
            rows[lever] = {"mean": statistics.mean(accs), "sd": sd, "wall_s": wall, "accs": accs}
            print(f"| {lever} | {statistics.mean(accs):.3f} ± {sd:.3f} | {100 * (statistics.mean(accs) - base):+.1f} "
                  f"| {wall:.1f} |")
        summary[name] = {"counts": counts, "extraction_s": ext_s, "levers": rows}
        if args.run:
            r = time_run(data)
            summary[name]["run"] = r
            print(f"\ndefault `pipeline.py run --data {data}`: {r['wall_s']:.0f} s; rank 1: {r['rank1']}, "
                  f"test {r['rank1_test']}")
        sys.stdout.flush()
    out = args.cache_dir.parent / "heldout_study.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"\n{out}")


if __name__ == "__main__":
    main()
