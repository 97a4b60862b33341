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
import logging
import os
import time
from pathlib import Path

import numpy as np

from classify.knn import neighbours
from classify.stats import canonical_order, images_key
from featcache.common.errors import BadInput
from featcache.common.files import atomic_write
from featcache.store import read_features, read_index, read_info, resolve_feature
from featcache.store.results import AUDIT_FILE
from featcache.store.splits import assign

K = 10
DUP_FLOOR = 0.6  # never list a pair below this centred cosine
DUP_MADS = 1.5  # ... nor below median + 1.5 MADs of the nearest-neighbour similarities (a candidate list, ranked)
EXACT = 1.0 - 1e-5
LOGREG_MAX_ROWS = 20_000
FOLDS = 5
TOP = 200  # entries kept per list
EXACT_MAX_ROWS = 50_000  # past this, an approximate index (faiss IVF) replaces the exact n x n search
PCA_DIMS = 128  # the approximate index searches a PCA projection, then candidates are rescored exactly
CANDIDATES = 4  # x k candidates from the index, rescored on the full vectors
NPROBE = 32  # with 4k candidates: recall@10 0.994 of the exact search on imagenette's Lite0 features
MAP_POINTS = 2_000  # rows drawn on the 2-D map (t-SNE of 2,000 rows: ~3 s on 2 cores)
MISCLASSIFIED = 64  # misclassified images given their nearest train neighbours


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)


def centred_unit(X: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Mean-centred unit rows, in place and by chunks: 10^6 x 1280 float32 rows are 5 GB, and a
    temporary copy of them would double the audit's peak."""
    mean = X.mean(0, dtype=np.float64).astype(np.float32)
    for s in range(0, len(X), chunk):
        part = X[s:s + chunk]
        part -= mean
        part /= np.sqrt(np.einsum("nd,nd->n", part, part))[:, None].clip(1e-12)
    return X


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
        raise BadInput("label issues need at least 2 labeled rows in each of 2 classes")
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


def knn_graph(X: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(similarities, indices) of each row's k nearest other rows, most similar first, and how.

    Exact up to ``EXACT_MAX_ROWS`` (an n x n search: 78 s at 60k rows); past it, faiss's IVF
    index on a PCA projection proposes ``CANDIDATES * k`` rows, rescored on the full vectors, so
    the similarities are exact and only a missed neighbour is approximate."""
    n = len(X)
    if n > EXACT_MAX_ROWS:
        try:
            import faiss  # noqa: F401
        except ImportError:
            logging.getLogger(__name__).warning(
                "audit: %d rows searched exactly (n x n); install faiss-cpu for the approximate index", n)
        else:
            sims, idx = approximate_neighbours(X, k + 1, seed)
            return (*_drop_self(sims, idx), f"approximate (faiss IVF on PCA-{min(PCA_DIMS, X.shape[1])}, "
                                            f"nprobe {NPROBE}, rescored exactly)")
    sims, idx = neighbours(X, X, k + 1)
    return (*_drop_self(sims, idx), "exact")


def approximate_neighbours(X: np.ndarray, k: int, seed: int = 0, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """``k`` neighbours of every row of the unit rows ``X`` (itself included) through an IVF index."""
    import faiss

    n, d = X.shape
    rng = np.random.default_rng(seed)
    dims = min(PCA_DIMS, d)
    Z = X
    if dims < d:
        pca = faiss.PCAMatrix(d, dims)
        pca.train(np.ascontiguousarray(X[rng.choice(n, min(n, 100_000), replace=False)]))
        Z = np.concatenate([pca.apply(np.ascontiguousarray(X[s:s + 65536])) for s in range(0, n, 65536)])
        Z /= np.linalg.norm(Z, axis=1, keepdims=True).clip(1e-12)
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 training rows per list
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(Z[rng.choice(n, min(n, 40 * nlist), replace=False)]))
    index.add(np.ascontiguousarray(Z))
    index.nprobe = NPROBE
    m = min(n, CANDIDATES * k)
    sims, idx = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    for s in range(0, n, chunk):
        _, cand = index.search(np.ascontiguousarray(Z[s:s + chunk]), m)
        rows = np.arange(s, s + len(cand))
        cand[:, 0] = np.where((cand == rows[:, None]).any(1), cand[:, 0], rows)  # itself, always a candidate
        exact = np.einsum("nd,nmd->nm", X[s:s + chunk], X[np.maximum(cand, 0)])
        exact[cand < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        sims[s:s + chunk] = np.take_along_axis(exact, order, 1)
        idx[s:s + chunk] = np.take_along_axis(cand, order, 1)
    return sims, idx


def effective_splits(y: np.ndarray, splits: np.ndarray, where: str) -> np.ndarray:
    """The splits classify scores on: a store without val gets its stratified holdout marked ``val``."""
    out = splits.astype(object).copy()
    if (y >= 0).any() and len(np.unique(y[y >= 0])) > 1:
        try:
            at, _ = assign(y, splits, where)
        except ValueError:
            return splits
        for name, rows in at.items():
            out[rows] = name
    return out.astype(str)


def split_leaks(pairs: dict[tuple[int, int], float], paths: np.ndarray, splits: np.ndarray) -> dict:
    """Per scored split, the images with a near-copy in a split the models learnt from (val: train;
    test: train or val), as positions in the sorted-path order of the per-image correctness bits,
    so the report can drop them from any row's score without the store."""
    learnt = {"val": {"train"}, "test": {"train", "val"}}
    out = {}
    for split, sources in learnt.items():
        rows = np.flatnonzero(splits == split)
        if not len(rows):
            continue
        leaked = {r for a, b in pairs for r, other in ((a, b), (b, a))
                  if splits[r] == split and splits[other] in sources}
        order = rows[canonical_order(paths[rows])]
        positions = [i for i, r in enumerate(order) if r in leaked]
        out[split] = {"images": images_key(paths[rows]), "n": int(len(rows)), "leaked": positions,
                      "leaked_paths": [str(paths[order[i]]) for i in positions]}
    return out


def train_neighbours(X: np.ndarray, rows: np.ndarray, train: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``rows``'s ``k`` most similar train rows (similarities, store rows)."""
    sims, pos = neighbours(X[train], X[rows], min(k, len(train)))
    return sims, train[pos]


def feature_map(X: np.ndarray, y: np.ndarray, splits: np.ndarray, paths: np.ndarray,
                points: int = MAP_POINTS, seed: int = 0) -> dict:
    """2-D coordinates of up to ``points`` rows: PCA to 50 dimensions, then UMAP when installed, else
    t-SNE (scikit-learn), both of which keep neighbourhoods that a linear projection folds together."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(X), min(points, len(X)), replace=False))
    Z = PCA(min(50, len(take) - 1, X.shape[1]), random_state=seed).fit_transform(X[take])
    method = "PCA"
    if len(take) >= 10:
        try:
            import umap

            Z = umap.UMAP(n_components=2, random_state=seed).fit_transform(Z)
            method = "PCA 50, then UMAP"
        except ImportError:
            from sklearn.manifold import TSNE

            Z = TSNE(2, init="pca", random_state=seed, perplexity=float(min(30, (len(take) - 1) / 3)),
                     max_iter=500).fit_transform(Z)
            method = "PCA 50, then t-SNE"
    Z = Z[:, :2]
    return {"method": method, "rows": int(len(take)),
            "points": [[round(float(a), 3), round(float(b), 3), int(c), str(s), str(p)]
                       for a, b, c, s, p in zip(Z[:, 0], Z[:, 1], y[take], splits[take], paths[take])]}


def audit(store: str | os.PathLike, feature: str | None = None, k: int = K, top: int = TOP,
          misclassified: list[dict] | None = None, map_points: int = MAP_POINTS) -> dict:
    """The ranked lists of ``audit.json`` for one feature set of ``store``.

    ``misclassified``: a model's mistakes (``{"path", "true", "predicted"}``), each given its
    nearest train images; ``map_points``: rows on the 2-D map (0: no map)."""
    t0 = time.perf_counter()
    info = read_info(store)
    key = resolve_feature(info, feature)
    index = read_index(store)
    X = centred_unit(np.asarray(read_features(store, key, index["rows"]), dtype=np.float32))
    y = np.asarray(index["y"], dtype=np.int64)
    paths = np.asarray(index["paths"]).astype(str)
    splits = effective_splits(y, np.asarray(index["split"]).astype(str), str(store))
    n = len(X)
    if n < 3:
        raise BadInput(f"{store}: an audit needs at least 3 readable rows, it has {n}")
    k = int(min(k, n - 1))
    sims, idx, search = knn_graph(X, k)
    thr = dup_threshold(sims[:, 0])

    pairs: dict[tuple[int, int], float] = {}
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
                                 "neighbours": [paths[j] for j in idx[r, :3]],
                                 "neighbour_labels": [classes[y[j]] if y[j] >= 0 else None for j in idx[r, :3]]})

    far = 1.0 - sims[:, -1]
    outliers = [{"path": paths[r], "split": splits[r], "score": round(float(far[r]), 6)}
                for r in np.argsort(-far, kind="stable")[:top]]
    result = {"store": str(Path(store).resolve()), "feature": key, "rows": n, "k": k, "search": search,
              "duplicate_threshold": round(thr, 6), "label_method": method,
              "counts": {"duplicate_pairs": len(duplicates), "cross_split": sum(d["cross_split"] for d in duplicates),
                         "exact": sum(d["exact"] for d in duplicates)},
              "duplicates": duplicates[: max(top, 1000)], "label_issues": label_issues, "outliers": outliers,
              "split_leaks": split_leaks(pairs, paths, splits)}
    if misclassified:
        result["misclassified"] = _misclassified_neighbours(X, paths, y, splits, classes, misclassified)
    if map_points:
        result["map"] = {**feature_map(X, y, splits, paths, map_points), "classes": classes}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _misclassified_neighbours(X: np.ndarray, paths: np.ndarray, y: np.ndarray, splits: np.ndarray,
                              classes: list[str], wrong: list[dict]) -> list[dict]:
    """The train images closest to each mistake: a near-copy with the other label, or a class the
    features cannot tell apart, shows at a glance."""
    row_of = {p: i for i, p in enumerate(paths)}
    picked = [(m, row_of[str(m.get("path"))]) for m in wrong if str(m.get("path")) in row_of][:MISCLASSIFIED]
    train = np.flatnonzero(splits == "train")
    if not picked or not len(train):
        return []
    sims, nn = train_neighbours(X, np.array([r for _, r in picked]), train)
    return [{"path": str(m["path"]), "true": m.get("true"), "predicted": m.get("predicted"),
             **({"confidence": m["confidence"]} if "confidence" in m else {}),
             "neighbours": [{"path": str(paths[j]), "label": classes[y[j]] if y[j] >= 0 else None,
                             "similarity": round(float(s), 6)} for j, s in zip(nn[i], sims[i])]}
            for i, (m, _) in enumerate(picked)]


def _drop_self(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's own match out of its k+1 neighbours (an exact copy may outrank it: drop by index)."""
    n, m = idx.shape
    mine = idx == np.arange(n)[:, None]
    drop = np.where(mine.any(1), mine.argmax(1), m - 1)  # not found (ties): drop the last
    keep = np.ones_like(mine)
    keep[np.arange(n), drop] = False
    return sims[keep].reshape(n, m - 1), idx[keep].reshape(n, m - 1)


def write_audit(result: dict, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / AUDIT_FILE
    atomic_write(path, json.dumps(result, indent=2))
    return path
