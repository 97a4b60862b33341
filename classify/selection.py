"""Scores that hold on small data: repeated stratified CV of each model's chosen configuration
over train+val.

A val split of 50-100 images gives every accuracy a +-5-10 point interval, so ranking dozens of
rows by it mostly ranks noise. ``--select cv`` pools train and val, and scores each model's
*chosen configuration* (its sweep's best parameters, frozen; torch heads keep their own early
stopping) by 5-fold stratified CV repeated twice over the pool, grouped by image so that an
image's augmented views never sit on both sides of a fold, and each held-out image scored as
val is (center crop, or the flip average under TTA). Every image is then predicted twice
(once per repeat) by a model that never saw it, and the ranking uses the mean over 10 folds of
~5x the images val has. Val and test accuracies are still reported beside it; the hyperparameters
were chosen on train alone, the same for every row.

Repeat 1's out-of-fold predictions are kept per image (as bits, for the paired test against
rank 1) and with their probabilities in ``oof.npz`` (for soft-vote ensembles).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from classify import clock, oof, progress, stats
from classify.config import FINAL_FIT_CHOICES, SELECT_CHOICES
from classify.evaluate import predict_tta
from classify.features import FeatureSet
from classify.knn import CosineKNN, SweptKNN
from classify.linear_probe import LinearProbe
from classify.model_inputs import fit_params, model_input
from classify.splits import RepeatedSmallDataKFold
from featcache.common.errors import BadInput
from featcache.common.interrupt import ignore_sigint_in_worker

log = logging.getLogger(__name__)

CV_BELOW = 1_000  # val images under which --select auto scores by CV
CV_POOL_MAX = 5_000  # ... unless train+val is bigger: at 10,500 rows CV made the zoo 7.3x slower (bench/selection_cost.py)
FOLDS, REPEATS = 5, 2
PARALLEL_FROM = 2_000  # pool images from which the folds run on --jobs processes
# Below PARALLEL_FROM, a fold of at least this many seconds sends the other folds to the workers.
# At 0.3 s the bundled sample's MLP folds (0.3-0.4 s) started the workers while the first models fit,
# whose imports then slowed those fits on 2 cores (8.5 s before the first fit instead of ~3), and
# its folds still ran here; dtd10's (~0.75 s a fold) go to the workers either way.
PARALLEL_FOLD_S = 0.5


def choose_select(select: str, n_val: int, n_pool: int = 0) -> str:
    """``auto``: CV when val has fewer than :data:`CV_BELOW` images and train+val at most
    :data:`CV_POOL_MAX`, else val."""
    if select not in SELECT_CHOICES:
        raise BadInput(f"--select {select!r}: expected one of {', '.join(SELECT_CHOICES)}")
    if select == "auto":
        return "cv" if n_val < CV_BELOW and n_pool <= CV_POOL_MAX else "val"
    return select


def choose_final_fit(final_fit: str, select: str) -> str:
    """What the saved model (the one test and ``predict`` see) is fitted on. ``auto``: train+val
    when rows are ranked by CV over train+val (val is then no longer needed as a holdout, and
    a third more images moved dtd10's test accuracy +1.5 to +2 points, bench/heldout_study.py);
    train alone under ``--select val``, whose ranking needs val unseen."""
    if final_fit not in FINAL_FIT_CHOICES:
        raise BadInput(f"--final-fit {final_fit!r}: expected one of {', '.join(FINAL_FIT_CHOICES)}")
    if final_fit == "auto":
        return "train+val" if select == "cv" else "train"
    return final_fit


def refit_on_pool(model: object, data: FeatureSet, *, views: bool) -> object:
    """``frozen(model)`` fitted on every train and val image (and the train images' views): the
    protocol of the published linear probes (choose the configuration, refit on train+val, score
    test once). Val scores stay those of the train-only fit."""
    p = pool(data)
    est = frozen(model)
    X, y, groups = fold_arrays(p, np.arange(len(p)), views)
    with threadpool_limits(limits=1):
        est.fit(model_input(est, X), y, **fit_params(est, groups))
    return est


def frozen(model: object) -> object:
    """An unfitted copy of ``model`` with the configuration its fit chose, and no sweep left."""
    if hasattr(model, "best_params_") and hasattr(model, "estimator") and hasattr(model, "param_grid"):
        return model.unfitted_final(model.best_params_)  # a Sweep
    if isinstance(model, Pipeline):
        steps = list(model.steps)
        name, final = steps[-1]
        steps = [(n, clone(s)) for n, s in steps[:-1]]
        if isinstance(final, LinearProbe):
            steps.append((name, clone(final).set_params(C=float(final.best_params_["C"]))))
        elif isinstance(final, SweptKNN):
            steps.append((name, CosineKNN(**final.best_params_, class_weight=final.class_weight)))
        else:
            steps.append((name, clone(final)))
        return Pipeline(steps)
    if isinstance(model, SweptKNN):
        return CosineKNN(**model.best_params_, class_weight=model.class_weight)
    return clone(model)


@dataclass(frozen=True)
class Pool:
    """Train then val, as one set of images for CV (views exist for the train part only)."""

    X: np.ndarray
    y: np.ndarray
    paths: np.ndarray
    n_train: int
    views: np.ndarray | None  # (n_train, K, d)
    flip: np.ndarray | None

    def __len__(self) -> int:
        return len(self.y)


def pool(data: FeatureSet) -> Pool:
    tr, va = data.train, data.val
    X = np.concatenate([np.asarray(tr.X, np.float32), np.asarray(va.X, np.float32)])
    flip = np.concatenate([tr.flip, va.flip]) if tr.flip is not None and va.flip is not None else None
    return Pool(X, np.concatenate([tr.y, va.y]), np.concatenate([tr.paths, va.paths]), len(tr), tr.views, flip)


def fold_arrays(p: Pool, idx: np.ndarray, views: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(X, y, groups) to fit on the images ``idx``: their centers, then the views of those that have them."""
    if not views or p.views is None:
        return p.X[idx], p.y[idx], None
    with_views = np.flatnonzero(idx < p.n_train)
    k = p.views.shape[1]
    V = p.views[idx[with_views]].reshape(len(with_views) * k, -1)
    X = np.concatenate([p.X[idx], V])
    y = np.concatenate([p.y[idx], np.repeat(p.y[idx[with_views]], k)])
    groups = np.concatenate([np.arange(len(idx)), np.repeat(with_views, k)])
    return X, y, groups


_warming: list = []  # the one warm-up thread of this process


def _warm_worker() -> int:
    """Import in a worker what the folds and sweeps will need (torch alone took ~2 s here)."""
    import sklearn.ensemble  # noqa: F401
    import torch  # noqa: F401

    import classify.torch_heads  # noqa: F401
    return os.getpid()


def warm_workers(n_jobs: int) -> None:
    """Start joblib's worker processes, and their imports, on a background thread while the first
    models fit here: the first fold sent to a cold pool waited ~5 s for them (dtd10's mlp CV:
    10.9 s cold, 5.8 s warm). joblib keeps the pool alive from model to model; once a process."""
    if n_jobs == 1 or (os.cpu_count() or 1) < 2 or _warming:
        return
    thread = threading.Thread(target=lambda: Parallel(n_jobs=n_jobs)(delayed(_warm_worker)() for _ in range(
        os.cpu_count() if n_jobs == -1 else n_jobs)), name="warm-joblib-workers", daemon=True)
    _warming.append(thread)
    thread.start()


def cross_validate(model: object, data: FeatureSet, *, views: bool, ttas: Sequence[str | None], seed: int,
                   folds: int = FOLDS, repeats: int = REPEATS, n_jobs: int = 1
                   ) -> tuple[dict[str | None, tuple[dict, np.ndarray | None]], np.ndarray, object | None]:
    """Repeated stratified CV of ``frozen(model)`` over train+val, one fit per fold scored under each
    TTA setting -> ({tta: (the ``cv`` record, out-of-fold probabilities (repeats, n, classes) in
    pool order, or None for a model without predict_proba)}, each image's fold per repeat, the
    train+val refit when the out-of-fold shortcut made it, else None).

    Families with a cheaper way to the same predictions (:mod:`classify.oof`: the batched linear
    head, out-of-bag forests, leave-one-out kNN) take it; the record's ``method`` says which."""
    start = clock.now()
    p = pool(data)
    classes = np.unique(p.y)
    splitter = RepeatedSmallDataKFold(folds, repeats, random_state=seed)
    k = splitter.get_n_splits(p.X, p.y) // repeats  # folds per repeat (fewer for a rare class)
    splits = list(splitter.split(p.X, p.y))
    scores = {t: [] for t in ttas}
    balanced = {t: [] for t in ttas}
    oof_pred = {t: np.full((repeats, len(p)), -1, dtype=np.int64) for t in ttas}
    fold_of = np.full((repeats, len(p)), -1, dtype=np.int16)
    proba: dict = {t: np.zeros((repeats, len(p), len(classes)), dtype=np.float32) for t in ttas}
    progress.set_total(len(splits))
    # Folds are independent fits: on --jobs processes (each fit on one thread) once the pool is
    # big enough to pay for starting them (a worker's torch import alone took 3 s here); never on
    # threads, where torch heads would share one global RNG. A list, not a generator: joblib's
    # Ray backend does not support those.
    # Below PARALLEL_FROM the first folds run here and time the rest: a model whose fold takes
    # PARALLEL_FOLD_S or more (torch heads, forests, the kernel SVM) sends the others to the
    # workers, which joblib keeps alive from model to model, so their start-up is paid once a run.
    # The second fold is the one timed: the first pays one-off costs (torch's first step on one
    # thread took 1.3 s of a linear head's 0.15 s folds), and sent cheap models to the workers.
    fast = oof.shortcut(frozen(model), p.X, p.y, p.flip, splits, ttas, n_jobs) if not views or p.views is None else None
    wide, done = len(p) >= PARALLEL_FROM, list(fast.done) if fast else []
    if fast is None and n_jobs != 1 and not wide and len(splits) > 3:
        done.append(_fold(model, p, *splits[0], views, ttas))
        t = time.perf_counter()
        done.append(_fold(model, p, *splits[1], views, ttas))
        wide = time.perf_counter() - t >= PARALLEL_FOLD_S
    if fast is None:
        done += Parallel(n_jobs=n_jobs if wide else 1)(
            delayed(_fold)(model, p, fit_idx, held, views, ttas) for fit_idx, held in splits[len(done):])
    for f, ((_, held), (est_classes, per_tta)) in enumerate(zip(splits, done)):
        r = f // k
        fold_of[r, held] = f % k
        cols = np.searchsorted(classes, est_classes)
        for t, (pred, prob) in per_tta.items():
            scores[t].append(float(np.mean(pred == p.y[held])))
            balanced[t].append(float(balanced_accuracy_score(p.y[held], pred)))
            oof_pred[t][r, held] = pred
            if prob is None or proba[t] is None:
                proba[t] = None
            else:
                proba[t][r, held[:, None], cols[None, :]] = prob
        progress.advance()
    seconds = clock.now() - start
    out = {}
    for t in ttas:
        s, b = np.asarray(scores[t]), np.asarray(balanced[t])
        acc1 = float(np.mean(oof_pred[t][0] == p.y))
        out[t] = ({
            "mean": float(s.mean()), "sd": float(s.std(ddof=1)) if len(s) > 1 else 0.0, "scores": s.tolist(),
            "balanced_mean": float(b.mean()), "balanced_sd": float(b.std(ddof=1)) if len(b) > 1 else 0.0,
            "folds": int(k), "repeats": int(repeats), "n": int(len(p)),
            "oof_accuracy": acc1, "ci": stats.accuracy_interval(acc1, len(p)),
            "repeat_accuracy": [float(np.mean(oof_pred[t][i] == p.y)) for i in range(repeats)],
            **stats.correctness(oof_pred[t][0], p.y, [str(x) for x in p.paths]),
            "groups": "image" if views and p.views is not None else "none", "seconds": seconds,
            "method": fast.method if fast else "k-fold",
        }, proba[t])
    return out, fold_of, (fast.refit if fast else None)


def _fold(model: object, p: Pool, fit_idx: np.ndarray, held: np.ndarray, views: bool,
          ttas: Sequence[str | None]) -> tuple[np.ndarray, dict]:
    """Fit ``frozen(model)`` on one fold -> (its classes, {tta: (predictions, probabilities)} on the held-out images)."""
    ignore_sigint_in_worker()  # Ctrl-C is the parent's to handle: it finishes this model's CV first
    est = frozen(model)
    X, y, groups = fold_arrays(p, fit_idx, views)
    with threadpool_limits(limits=1):
        est.fit(model_input(est, X), y, **fit_params(est, groups))
    out = {}
    for t in ttas:
        flip = model_input(est, p.flip[held]) if t == "flip" and p.flip is not None else None
        pred, prob, _ = predict_tta(est, model_input(est, p.X[held]), flip)
        out[t] = (pred, prob)
    return np.asarray(est.classes_), out
