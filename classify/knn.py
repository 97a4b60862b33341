"""k nearest neighbours by cosine similarity, with k and the vote weighting chosen cheaply.

A grid search refits and searches once per (k, weighting, fold): 14 searches per fold for the
default grid. Here each fold runs one search for the largest k, and every grid point is scored
from those neighbours; the cost is one (held-out x fit rows) similarity matmul per fold, done a
chunk of queries at a time in float32.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from classify import progress
from classify.splits import SmallDataKFold
from classify.torch_heads import torch_threads
from classify.weights import class_weights
from featcache.common.errors import BadInput

QUERY_CHUNK = 1024
EXACT = 1e-6  # cosine distance below which a neighbour counts as an exact match
WEIGHTINGS = ("uniform", "distance", "dino")
DINO_TEMPERATURE = 0.07  # DINO's weighted k-NN: each of the 20 neighbours votes exp(similarity / 0.07)


class CosineKNN(ClassifierMixin, BaseEstimator):
    """k nearest neighbours by cosine distance, k capped at the number of training rows.

    The cap lets one k grid serve a 40-row CV fold and a 10,000-row store alike. Votes follow
    scikit-learn's ``KNeighborsClassifier`` (``distance``: weight 1/distance, exact matches
    alone when there are any); the search is a chunked float32 matmul and top-k, so predicting
    5,000 rows against 45,000 takes a second and memory bounded by the chunk.
    """

    def __init__(self, n_neighbors: int = 5, *, weights: str = "distance", temperature: float = DINO_TEMPERATURE,
                 class_weight: str | None = None):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.temperature = temperature
        self.class_weight = class_weight  # "balanced": each neighbour's vote times its class's weight

    def fit(self, X, y) -> CosineKNN:
        if self.weights not in WEIGHTINGS:
            raise BadInput(f"The 'weights' parameter of CosineKNN must be one of {WEIGHTINGS}. "
                             f"Got {self.weights!r} instead.")
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise BadInput(f"The 'temperature' parameter of CosineKNN must be a float > 0. "
                             f"Got {self.temperature!r} instead.")
        if not isinstance(self.n_neighbors, (int, np.integer)) or self.n_neighbors < 1:
            raise BadInput(f"The 'n_neighbors' parameter of CosineKNN must be an int >= 1. "
                             f"Got {self.n_neighbors!r} instead.")
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self.classes_, self.codes_ = np.unique(y, return_inverse=True)
        self.class_weight_ = class_weights(self.class_weight, self.classes_, self.codes_)
        self.n_neighbors_ = int(min(self.n_neighbors, len(y)))
        self.ref_ = np.asarray(X, dtype=np.float32)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "ref_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        sims, idx = neighbours(self.ref_, X, self.n_neighbors_)
        votes = vote(sims, self.codes_[idx], self.n_neighbors_, self.weights, len(self.classes_), self.temperature,
                     getattr(self, "class_weight_", None))
        return votes / votes.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]


def _unit(torch, X: np.ndarray):
    x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def neighbours(ref: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each (len(query), k), most similar first, by cosine."""
    import torch

    R = _unit(torch, ref)
    sims, idx = [], []
    with torch.no_grad():
        for start in range(0, len(query), QUERY_CHUNK):
            s, i = torch.topk(_unit(torch, query[start:start + QUERY_CHUNK]) @ R.T, k, dim=1)
            sims.append(s.numpy())
            idx.append(i.numpy())
    return np.concatenate(sims), np.concatenate(idx)


def vote(sims: np.ndarray, labels: np.ndarray, k: int, weights: str, n_classes: int,
         temperature: float = DINO_TEMPERATURE, class_weight: np.ndarray | None = None) -> np.ndarray:
    """(n, n_classes) votes of the first k neighbours (labels: their class codes), each class's
    votes times its ``class_weight`` when given (balanced votes).

    ``dino``: DINO's protocol (Caron et al. 2021, eval_knn.py), each vote exp(cosine / T); the
    largest similarity is subtracted first, which changes no ratio and keeps exp finite."""
    s, lab = sims[:, :k], labels[:, :k]
    if weights == "dino":
        s64 = s.astype(np.float64)
        w = np.exp((s64 - s64.max(axis=1, keepdims=True)) / temperature)
    elif weights == "distance":
        dist = 1.0 - s.astype(np.float64)
        exact = dist <= EXACT  # float32 similarities of a duplicate row land within ~1e-7 of 1
        w = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), 1.0 / np.maximum(dist, EXACT))
    else:
        w = np.ones_like(s, dtype=np.float64)
    votes = np.zeros((len(s), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(s)), k), lab.ravel()), w.ravel())
    return votes if class_weight is None else votes * class_weight[None, :]


def vote_accuracy(sims: np.ndarray, labels: np.ndarray, truth: np.ndarray, k: int, weights: str,
                  n_classes: int, class_weight: np.ndarray | None = None) -> float:
    """Accuracy of k-NN votes from precomputed neighbours (balanced accuracy when the votes are
    balanced: what a balanced model is chosen for)."""
    pred = vote(sims, labels, k, weights, n_classes, class_weight=class_weight).argmax(1)
    if class_weight is None:
        return float((pred == truth).mean())
    return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))


class SweptKNN(ClassifierMixin, BaseEstimator):
    """CosineKNN with ``n_neighbors`` x ``weights`` chosen over ``cv``'s folds from one neighbour
    search per fold; ties go to the first grid point (the largest k, the smoothest vote)."""

    def __init__(self, ks: tuple[int, ...] = (21, 15, 11, 7, 5, 3, 1), weightings: tuple[str, ...] = ("uniform", "distance"),
                 *, cv: object | None = None, n_jobs: int | None = None, random_state: int = 0,
                 class_weight: str | None = None):
        self.ks = ks
        self.class_weight = class_weight
        self.weightings = weightings
        self.cv = cv
        self.n_jobs = n_jobs  # torch threads for the searches (None: as set)
        self.random_state = random_state

    scoring = "accuracy"

    def fit(self, X, y, groups=None) -> SweptKNN:
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float16, np.float64])
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        cv = self.cv if self.cv is not None else SmallDataKFold(5, random_state=self.random_state)
        folds = list(cv.split(X, codes, groups))
        progress.set_total(len(folds) + 1)
        grid = [(k, w) for k in self.ks for w in self.weightings]
        scores = np.zeros((len(grid), len(folds)))
        for f, (fit_rows, held) in enumerate(folds):
            kmax = min(max(self.ks), len(fit_rows))
            with torch_threads(self.n_jobs):
                sims, idx = neighbours(X[fit_rows], X[held], kmax)
            labels = codes[fit_rows][idx]
            cw = class_weights(self.class_weight, self.classes_, codes[fit_rows])
            for g, (k, w) in enumerate(grid):
                scores[g, f] = vote_accuracy(sims, labels, codes[held], min(k, kmax), w, len(self.classes_), cw)
            progress.advance()
        mean = scores.mean(axis=1)
        best = int(np.argmax(mean))
        self.n_splits_ = len(folds)
        self.cv_results_ = {"params": [{"n_neighbors": k, "weights": w} for k, w in grid], "mean_test_score": mean}
        self.best_params_ = self.cv_results_["params"][best]
        self.best_score_ = float(mean[best])
        self.chosen_params_ = dict(self.best_params_)
        self.best_estimator_ = CosineKNN(**self.best_params_, class_weight=self.class_weight).fit(
            np.asarray(X, dtype=np.float32), y)
        progress.advance()
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(np.asarray(X, dtype=np.float32))
