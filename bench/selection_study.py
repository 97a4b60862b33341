#!/usr/bin/env python3
"""Does the row ranked first hold up on new data? ``--select val`` against ``--select cv``.

    python bench/selection_study.py [--draws 5] [--tasks hymenoptera,imagenette] [--out runs/selection_study]

Small-data tasks drawn from the real datasets, each scored on a large held-out test set that
neither selection sees:

- hymenoptera: 30 train + 20 val images per class from all 398 photos; test = the other ~300;
- imagenette: 10 train + 10 val per class from its train split; test = its 2,000 test photos.

Features come from one EfficientNet-Lite0 store per dataset (extracted once, reused from the
cache) at four layers (the classifier input, the last conv stage, and the middle blocks 10 and
6, where rows differ more). Each draw runs the default zoo on every layer (``classify.fit.fit`` with
``select="cv"``, so val and CV scores come from the same fits), ranks the rows by val and by CV
as the report does, and compares the rank-1 row's test accuracy with the best row's and with
the seed tutorials' loop: a plain scikit-learn ``LogisticRegression`` on the classifier input,
fitted on train. Prints one line per draw, then the medians and means over draws.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASETS = ROOT.parent / "shared" / "datasets"
LAYERS = ("default", "_bn1", "_blocks.10", "_blocks.6")
TASKS = {"hymenoptera": dict(train=30, val=20, test="rest"), "imagenette": dict(train=10, val=10, test="test")}


def extract(dataset: str, cache: Path) -> dict:
    from featcache.driver.config import RunConfig
    from featcache.driver.run import extract_all

    cfg = RunConfig(data=(str(DATASETS / dataset),), out=str(cache), cache_dir=str(cache), layers=LAYERS,
                    pools=("avg",))
    return extract_all(cfg, str(DATASETS / dataset), progress=False)[0]


def load_all(store: str, features: list[str]) -> tuple[dict, dict]:
    from featcache.store import read_features, read_index, read_info

    index = read_index(store)
    info = read_info(store)
    X = {k: np.asarray(read_features(store, k, index["rows"]), np.float32) for k in features}
    return {**index, "class_names": list(info.class_names)}, X


def draw(index: dict, task: dict, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, split = index["y"], index["split"]
    pool = np.flatnonzero(split == "train") if task["test"] == "test" else np.arange(len(y))
    tr, va = [], []
    for c in np.unique(y[pool]):
        rows = rng.permutation(pool[y[pool] == c])
        tr.append(rows[:task["train"]])
        va.append(rows[task["train"]:task["train"] + task["val"]])
    tr, va = np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))
    te = np.flatnonzero(split == "test") if task["test"] == "test" else np.setdiff1d(np.arange(len(y)), np.r_[tr, va])
    return tr, va, te


def feature_set(store: str, key: str, index: dict, X: np.ndarray, parts: tuple) -> object:
    from classify.features import FeatureSet, Split

    def split(rows: np.ndarray) -> Split:
        return Split(X[rows], index["y"][rows].astype(np.int64), index["paths"][rows], index["rows"][rows])

    tr, va, te = parts
    return FeatureSet(store=Path(store), feature=key, class_names=index["class_names"], spec={}, cache_key="study",
                      complete=True, train=split(tr), val=split(va), test=split(te), val_source="val split")


def soft_vote_of(tied: list[dict], index: dict, parts: tuple) -> dict | None:
    """The tied group's soft vote. The study's feature sets are in-memory draws, not stores, so
    the members' saved models are scored here on the draw's val and test rows."""
    from classify import ensembles

    def member_proba(row: dict, split: str):
        from classify.persist import load_model

        saved = load_model(row["model_path"])
        fs = STUDY_SETS[row["feature"]]
        s = fs.val if split == "val" else fs.test
        return saved.model.predict_proba(np.asarray(s.X, np.float32)), s.y, s.paths, fs.class_names, \
            np.asarray(saved.model.classes_)

    return ensembles.soft_vote(tied, member_proba)


STUDY_SETS: dict = {}


def one_draw(store: str, index: dict, X: dict, parts: tuple, out: Path, jobs: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    from classify.fit import fit
    from classify.models import DEFAULT_MODELS
    from classify.outputs import save_files
    from classify.plan import Shape, plan_one
    from featcache.report.results import parse_results

    rows = []
    for key, Xk in X.items():
        fs = feature_set(store, key, index, Xk, parts)
        STUDY_SETS[key] = fs
        (out / key.replace("/", "_") / "models").mkdir(parents=True, exist_ok=True)
        for name in DEFAULT_MODELS:
            for r in fit(plan_one(name, Shape.of(fs), jobs=jobs, seed=0, select="cv"), fs):
                r = save_files(out / key.replace("/", "_"), r)
                rows.append({**r.to_dict(), "backbone": "efficientnet_lite0", "feature": key, "store": store})
    rows_val = [{**r, "extra": {k: v for k, v in r["extra"].items() if k != "cv"}} for r in rows]
    ranked = {}
    for sel, rs in (("cv", rows), ("val", rows_val)):
        run = parse_results({"results": rs}, out)
        tied = [next(r for r in rs if (r["feature"], r["model"]) == (e.feature, e.model)) for e in run.rows
                if e.tied]
        vote = soft_vote_of(tied, index, parts)
        ranked[sel] = parse_results({"results": rs + ([vote] if vote else [])}, out)
    by_cv, by_val = ranked["cv"], ranked["val"]
    tests = [r["test"]["accuracy"] for r in rows]
    tr, _, te = parts
    default = next(k for k in X if k.startswith("_fc"))
    seed_lr = LogisticRegression(max_iter=2000).fit(X[default][tr], index["y"][tr])
    seed_acc = float(np.mean(seed_lr.predict(X[default][te]) == index["y"][te]))

    def summary(run) -> dict:
        best = run.rows[0]
        tied = run.tied_group
        vote = next((e for e in run.rows if e.kind == "soft-vote"), None)
        single = next(e for e in run.rows if e.kind == "model")
        return {"rank1": f"{best.model} on {best.feature}", "rank1_test": best.test["accuracy"],
                "single_rank1": f"{single.model} on {single.feature}", "single_rank1_test": single.test["accuracy"],
                "vote_test": vote.test["accuracy"] if vote else None, "vote_rank": vote.rank if vote else None,
                "tied": len(tied), "tied_test_mean": float(np.mean([e.test["accuracy"] for e in tied]))}

    table = [{"model": r["model"], "feature": r["feature"], "val": r["val"]["accuracy"],
              "cv": (r["extra"].get("cv") or {}).get("mean"), "test": r["test"]["accuracy"]} for r in rows]
    return {"table": table, "rows": len(rows), "best_test": max(tests), "median_test": float(np.median(tests)),
            "seed_logreg_test": seed_acc, "val": summary(by_val), "cv": summary(by_cv),
            "test_n": int(len(te)), "val_n": int(len(parts[1])), "train_n": int(len(tr))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--tasks", default="hymenoptera,imagenette")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "study_features")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "selection_study.json")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from classify import progress

    progress.set_enabled(False)
    results = {}
    for task in args.tasks.split(","):
        rec = extract(task, args.cache)
        index, X = load_all(rec["store"], list(rec["features"]))
        results[task] = []
        for d in range(args.draws):
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                r = one_draw(rec["store"], index, X, draw(index, TASKS[task], 1000 + d), Path(tmp), args.jobs)
            r["seconds"] = time.perf_counter() - t0
            results[task].append(r)
            print(f"{task} draw {d}: {r['rows']} rows, train {r['train_n']} val {r['val_n']} test {r['test_n']}; "
                  f"best test {r['best_test']:.3f}, seed logreg {r['seed_logreg_test']:.3f}; "
                  f"val-rank1 {r['val']['rank1']} test {r['val']['rank1_test']:.3f} (tied {r['val']['tied']}); "
                  f"cv-rank1 {r['cv']['rank1']} test {r['cv']['rank1_test']:.3f} (tied {r['cv']['tied']}); "
                  f"soft vote test val {r['val']['vote_test']} cv {r['cv']['vote_test']} "
                  f"[{r['seconds']:.0f} s]", flush=True)
        for sel in ("val", "cv"):
            gap = [r["best_test"] - r[sel]["rank1_test"] for r in results[task]]
            vs_seed = [r[sel]["rank1_test"] - r["seed_logreg_test"] for r in results[task]]
            print(f"{task} select={sel}: rank-1 test below best by median {statistics.median(gap) * 100:.1f} pt "
                  f"(mean {statistics.mean(gap) * 100:.1f}, within 1 pt in {sum(g <= 0.01 for g in gap)}/{len(gap)}); "
                  f"vs seed logreg median {statistics.median(vs_seed) * 100:+.1f} pt "
                  f"(>= in {sum(v >= 0 for v in vs_seed)}/{len(vs_seed)}); tied group median "
                  f"{statistics.median(r[sel]['tied'] for r in results[task])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
