"""How accuracy grows with labels: the few-shot curve of one feature set.

The protocol of the few-shot linear-probe tables (CLIP, DINOv2): for 1, 2, 4, 8 and 16 train
images per class, and then all of them, draw that many per class (5 seeded draws, the same
draws for every model and every feature set of the store), fit an L2-normalized logistic
regression (C=1; too few rows to sweep anything) and DINO's weighted 20-NN, score them on test
(val when the store has no test split), and report mean +- sd over the draws. "all" is one
fit on the whole train split (sd 0).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from threadpoolctl import threadpool_limits

from classify.features import FeatureSet
from classify.knn import CosineKNN
from featcache.common.errors import BadInput

log = logging.getLogger(__name__)

SHOTS = (1, 2, 4, 8, 16)
DRAWS = 5
MAX_CLASSES = 100  # beyond this a 16-shot draw is itself a big fit per draw; the curve is skipped
MODELS = ("logreg", "knn-dino")


def make_model(name: str) -> object:
    if name == "logreg":
        return make_pipeline(Normalizer(), LogisticRegression(C=1.0, max_iter=1000))
    if name == "knn-dino":
        return CosineKNN(20, weights="dino")
    raise BadInput(f"few-shot model {name!r}: expected one of {', '.join(MODELS)}")


def draw(y: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """``shots`` rows of every class (all of a class that has fewer), seeded, sorted."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(y == c))[:shots] for c in np.unique(y)]
    return np.sort(np.concatenate(rows))


def few_shot_curve(data: FeatureSet, *, shots: tuple[int, ...] = SHOTS, draws: int = DRAWS, seed: int = 0,
                   models: tuple[str, ...] = MODELS) -> dict:
    """``{"split", "n_eval", "points": [{"model", "shots", "mean", "sd", "scores"}...]}`` (shots
    "all" last); ``{"skipped": why}`` above :data:`MAX_CLASSES` classes."""
    n_classes = len(np.unique(data.train.y))
    if n_classes > MAX_CLASSES:
        return {"skipped": f"{n_classes} classes > {MAX_CLASSES}"}
    split_name, ev = ("test", data.test) if data.test is not None else ("val", data.val)
    X, y = np.asarray(data.train.X, np.float32), data.train.y
    Xe = np.asarray(ev.X, np.float32)
    counts = np.bincount(y)[np.unique(y)]
    levels = [s for s in shots if s < counts.max()] + ["all"]
    points = []
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        for name in models:
            for s in levels:
                seeds = [None] if s == "all" else [seed + 101 * i for i in range(draws)]
                scores = []
                for d in seeds:
                    rows = np.arange(len(y)) if d is None else draw(y, int(s), d)
                    if len(np.unique(y[rows])) < 2:
                        continue
                    model = make_model(name).fit(X[rows], y[rows])
                    scores.append(float(np.mean(model.predict(Xe) == ev.y)))
                points.append({"model": name, "shots": s, "mean": float(np.mean(scores)),
                               "sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0, "scores": scores,
                               "train_rows": int(len(y)) if s == "all" else int(np.minimum(counts, s).sum())})
    log.info("few-shot curve on %s (%d images): %s in %.1fs", split_name, len(ev), "  ".join(
        f"{p['model']}@{p['shots']} {p['mean']:.3f}" for p in points), time.perf_counter() - start)
    return {"split": split_name, "n_eval": int(len(ev)), "draws": draws, "n_classes": n_classes, "points": points}
