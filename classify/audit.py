"""Data quality from the cached features: duplicates and leaks, label issues, outliers.

One cosine k-nearest-neighbour search over every readable row (the chunked search of
:mod:`classify.knn`) gives three of the lists:

- **duplicates**: candidate pairs whose cosine similarity (of the mean-centred features: a
  pooled CNN vector is non-negative, so raw cosines start high for any two photos) is
  above a threshold calibrated on the store itself (the nearest-neighbour similarities'
  median plus ``DUP_MADS`` robust deviations, at least ``DUP_FLOOR``), ranked most similar
  first, cross-split pairs (a train photo again in val or test: a leak that inflates every
  score) flagged. On hymenoptera with Lite0, a train photo resized to 0.8x and re-encoded at
  JPEG quality 70 kept a centred cosine of 0.74-0.94 to its original, while the most similar
  pair of distinct photos had 0.695 (median nearest neighbour 0.48, MAD 0.13);
- **outliers**: the rows farthest from their k-th neighbour;
- and each label issue's nearest neighbours, to look at beside it.

**Label issues** follow confident learning's self-confidence ranking (Northcutt et al. 2021;
cleanlab's ``rank_by="self_confidence"``): out-of-fold probabilities from a standardized
logistic regression (5 folds; beyond ``LOGREG_MAX_ROWS`` rows, the leave-one-out vote of the
k neighbours already found), then the labeled rows whose probability for their given label is
lowest, worst first, with the class the model suggests. Near-duplicate pairs are kept in one
fold, so a photo's copy cannot vouch for its label.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

K = 10
DUP_FLOOR = 0.6  # never list a pair below this centred cosine
DUP_MADS = 1.5  # ... nor below median + 1.5 MADs of the nearest-neighbour similarities (a candidate list, ranked)
EXACT = 1.0 - 1e-5
LOGREG_MAX_ROWS = 20_000
FOLDS = 5
TOP = 200  # entries kept per list


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)


def dup_threshold(nn_sims: np.ndarray) -> float:
    """Where near-duplicates start in this store: far above the typical nearest neighbour."""
    med = float(np.median(nn_sims))
    mad = float(np.median(np.abs(nn_sims - med))) * 1.4826
    return float(min(max(DUP_FLOOR, med + DUP_MADS * mad), EXACT))


def _groups(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Union-find over duplicate pairs: a group id per row, so copies share a CV fold."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    return np.array([find(i) for i in range(n)])


def out_of_fold_proba(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(FOLDS, np.bincount(y).min())) if len(np.unique(y)) > 1 else 0
    if folds < 2:
        raise ValueError("label issues need at least 2 labeled rows in each of 2 classes")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, X, y, groups=groups, cv=cv, method="predict_proba")


def knn_loo_proba(idx: np.ndarray, sims: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Leave-one-out neighbour vote (self excluded), for stores too large for repeated fits."""
    P = np.zeros((len(idx), n_classes))
    w = np.exp((sims - 1.0) / 0.07)
    for j in range(idx.shape[1]):
        lab = y[idx[:, j]]
        ok = lab >= 0
        P[np.flatnonzero(ok), lab[ok]] += w[ok, j]
    return P / P.sum(1, keepdims=True).clip(1e-12)


def rank_label_issues(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidates worst first, self-confidence, suggested class): rows whose out-of-fold argmax is
    not their label, by the probability of their label (cleanlab's label quality "self_confidence")."""
    self_conf = P[np.arange(len(y)), y]
    suggested = P.argmax(1)
    order = np.argsort(self_conf, kind="stable")
    return order[suggested[order] != y[order]], self_conf, suggested


def audit(store: str | os.PathLike, feature: str | None = None, k: int = K, top: int = TOP) -> dict:
    """The three ranked lists of ``audit.json`` for one feature set of ``store``."""
    from classify.knn import neighbours
    from store import read_features, read_index, read_info, resolve_feature

    t0 = time.perf_counter()
    info = read_info(store)
    key = resolve_feature(info, feature)
    index = read_index(store)
    X = np.asarray(read_features(store, key, index["rows"]), dtype=np.float32)
    X = _unit(X - X.mean(0))
    y = np.asarray(index["y"], dtype=np.int64)
    paths, splits = np.asarray(index["paths"]).astype(str), np.asarray(index["split"]).astype(str)
    n = len(X)
    if n < 3:
        raise ValueError(f"{store}: an audit needs at least 3 readable rows, it has {n}")
    k = int(min(k, n - 1))
    sims, idx = neighbours(X, X, k + 1)
    sims, idx = _drop_self(sims, idx)
    thr = dup_threshold(sims[:, 0])

    pairs = {}
    for i, j in zip(*np.nonzero(sims >= thr)):
        a, b = sorted((int(i), int(idx[i, j])))
        pairs[(a, b)] = max(pairs.get((a, b), 0.0), float(sims[i, j]))
    ranked = sorted(pairs.items(), key=lambda kv: -kv[1])
    duplicates = [{"paths": [paths[a], paths[b]], "splits": [splits[a], splits[b]], "similarity": round(s, 6),
                   "exact": s >= EXACT, "cross_split": bool(splits[a] != splits[b])} for (a, b), s in ranked]

    labeled = np.flatnonzero(y >= 0)
    classes = list(info.class_names)
    label_issues: list[dict] = []
    method = "none"
    if len(np.unique(y[labeled])) > 1:
        if len(labeled) <= LOGREG_MAX_ROWS:
            groups = _groups(n, list(pairs))[labeled]
            P = out_of_fold_proba(X[labeled], y[labeled], groups)
            method = f"logistic regression, {FOLDS}-fold out-of-fold (duplicates kept in one fold)"
            present = np.unique(y[labeled])
            full = np.zeros((len(labeled), len(classes)))
            full[:, present] = P
            P = full
        else:
            P = knn_loo_proba(idx[labeled], sims[labeled], y, len(classes))
            method = f"leave-one-out vote of {k} cosine neighbours"
        order, self_conf, suggested = rank_label_issues(P, y[labeled])
        for o in order[:top]:
            r = labeled[o]
            label_issues.append({"path": paths[r], "split": splits[r], "given": classes[y[r]],
                                 "suggested": classes[suggested[o]], "score": round(float(self_conf[o]), 6),
                                 "neighbours": [paths[j] for j in idx[r, :3]]})

    far = 1.0 - sims[:, -1]
    outliers = [{"path": paths[r], "split": splits[r], "score": round(float(far[r]), 6)}
                for r in np.argsort(-far, kind="stable")[:top]]
    return {"store": str(Path(store).resolve()), "feature": key, "rows": n, "k": k,
            "duplicate_threshold": round(thr, 6), "label_method": method,
            "counts": {"duplicate_pairs": len(duplicates), "cross_split": sum(d["cross_split"] for d in duplicates),
                       "exact": sum(d["exact"] for d in duplicates)},
            "duplicates": duplicates[: max(top, 1000)], "label_issues": label_issues, "outliers": outliers,
            "seconds": round(time.perf_counter() - t0, 3)}


def _drop_self(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's own match out of its k+1 neighbours (an exact copy may outrank it: drop by index)."""
    n, m = idx.shape
    mine = idx == np.arange(n)[:, None]
    drop = np.where(mine.any(1), mine.argmax(1), m - 1)  # not found (ties): drop the last
    keep = np.ones_like(mine)
    keep[np.arange(n), drop] = False
    return sims[keep].reshape(n, m - 1), idx[keep].reshape(n, m - 1)


def write_audit(result: dict, out_dir: str | os.PathLike) -> Path:
    from store.files import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "audit.json"
    atomic_write(path, json.dumps(result, indent=2))
    return path
