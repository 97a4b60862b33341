"""Out-of-fold predictions at about one fit's cost, for the families that allow it.

:func:`classify.selection.cross_validate` scores a model's chosen configuration by repeated
K-fold CV over train+val: ten fits and a refit. Some families give the same predictions, or an
estimate of the same quantity, for far less; :func:`shortcut` returns them split by split, in
the shape the K-fold loop produces, so the scores, the paired tests and the soft votes read them
unchanged:

- the torch linear head: the ten folds and the train+val refit trained as one batched model
  (:mod:`classify.head_folds`). Exact: the same procedure on the same folds (other random draws).
- random forests: out-of-bag predictions of the train+val refit's trees, each image voted on by the
  ~37% of trees whose bootstrap left it out. Another standard estimate of the same accuracy (of a
  forest of ~a third of the trees), which read 1.1-2.2 points below the K-fold's on dtd10 and -1.2
  to +0.4 on the bundled sample (bench/oof_agreement.py): a tilt against the forest, never towards it. One fit,
  which is also the saved model, instead of 11.

Both repeats of an out-of-bag estimate hold the same predictions; the per-fold scores group them
by the K-fold's folds, so their spread is still shown. Models trained on augmented views keep the
K-fold loop (an image's views would sit in-bag for its own prediction). Measured, and left out:

- the MLP heads: on a CPU their folds are arithmetic-bound (the 1280x512 layer); batched, they ran
  1.2-1.5x slower than one by one;
- kNN: leave-one-out from one search saved 0.1 s a model (its K-fold is one search per fold) but
  read up to 3.0 points above the K-fold it replaced (n-1 rows per fit instead of 4/5 of them): on
  dtd10's Lite2 features it took rank 1 from logistic regression (bench/oof_agreement.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from classify.evaluate import predict_tta
from classify.torch_heads import TorchHead, torch_threads

METHODS = {
    "k-fold": "K-fold CV",
    "batched k-fold": "K-fold CV, the folds trained as one batched model",
    "out-of-bag": "out-of-bag predictions of the train+val forest",
}


@dataclass(frozen=True)
class Shortcut:
    """What the K-fold loop would have produced, and how it was obtained."""

    done: list  # per split: (classes, {tta: (predictions, probabilities)}) on its held-out rows
    method: str  # a key of METHODS
    refit: object | None = None  # the train+val fit, when the shortcut made it (the forest, the batched head)


def shortcut(model: object, X: np.ndarray, y: np.ndarray, flip: np.ndarray | None, splits: Sequence,
             ttas: Sequence[str | None], n_jobs: int | None = 1) -> Shortcut | None:
    """Out-of-fold predictions of ``model`` (a frozen, unfitted Pipeline) over the pool ``X``
    (``flip``: its mirrored crops) for each of ``splits`` without fitting it once per split,
    or None when its family has no shortcut."""
    if not isinstance(model, Pipeline):
        return None
    pre, (_, final) = model.steps[:-1], model.steps[-1]
    if isinstance(final, TorchHead) and not final.hidden and not final.log_dir:
        # on the head's own threads: one below 5,000 rows, where a second made small steps slower
        return _batched_head(model, X, y, flip, splits, ttas, final.n_jobs)
    if isinstance(final, RandomForestClassifier) and final.bootstrap and all(
            isinstance(s, StandardScaler) or s == "passthrough" for _, s in pre):
        return _out_of_bag(model, X, y, flip, splits, ttas, n_jobs)
    return None


def _batched_head(model: Pipeline, X, y, flip, splits, ttas, n_jobs) -> Shortcut | None:
    from classify.head_folds import fit_folds

    fits = [fit for fit, _ in splits] + [np.arange(len(y))]  # the last: the train+val refit
    pres, Xs = [], []
    for rows in fits:
        steps = [(n, clone(s)) for n, s in model.steps[:-1]]
        Z = X[rows]
        for _, s in steps:
            Z = s.fit_transform(Z)
        pres.append(steps)
        Xs.append(np.asarray(Z, np.float32))
    heads = fit_folds(model.steps[-1][1], Xs, [y[r] for r in fits], n_jobs=n_jobs)
    if heads is None:
        return None
    pipes = [Pipeline([*steps, (model.steps[-1][0], h)]) for steps, h in zip(pres, heads)]
    done = []
    for pipe, (_, held) in zip(pipes, splits):
        with torch_threads(n_jobs):
            done.append((np.asarray(pipe.classes_), {t: predict_tta(pipe, X[held], flip[held] if t == "flip" else None)[:2]
                                                     for t in ttas}))
    return Shortcut(done, "batched k-fold", pipes[-1])


def _out_of_bag(model: Pipeline, X, y, flip, splits, ttas, n_jobs) -> Shortcut:
    forest = clone(model)
    name = model.steps[-1][0]
    with threadpool_limits(limits=1), warnings.catch_warnings():  # the trees on n_jobs threads, as the folds were
        warnings.filterwarnings("ignore", "Some inputs do not have OOB scores")  # uniform then, as a vote of none
        forest.set_params(**{f"{name}__n_jobs": n_jobs, f"{name}__oob_score": True}).fit(X, y)
        rf = forest.steps[-1][1]
        center = _normalized(rf.oob_decision_function_)
        # flip TTA averages each image's center and mirrored crop, as predict_tta does
        out = {t: center if t is None else (center + _mirrored_oob(rf, _before(forest, flip))) / 2 for t in ttas}
    forest.set_params(**{f"{name}__n_jobs": model.steps[-1][1].n_jobs})
    classes = np.asarray(rf.classes_)
    done = [(classes, {t: (classes[out[t][held].argmax(1)], out[t][held]) for t in ttas}) for _, held in splits]
    return Shortcut(done, "out-of-bag", forest)


def _before(pipe: Pipeline, X: np.ndarray) -> np.ndarray:
    """``X`` through the pipeline's fitted steps before its classifier."""
    return np.asarray(pipe[:-1].transform(X) if len(pipe.steps) > 1 else X, np.float32)


def _mirrored_oob(rf: RandomForestClassifier, Z: np.ndarray) -> np.ndarray:
    """Out-of-bag votes on the mirrored crops: each from the trees that left its image out, found as
    scikit-learn finds them for ``oob_decision_function_`` (the bootstrap each tree's seed drew)."""
    from sklearn.ensemble._forest import _generate_unsampled_indices

    votes = np.zeros((len(Z), len(rf.classes_)))
    for tree in rf.estimators_:
        rows = _generate_unsampled_indices(tree.random_state, rf._n_samples, rf._n_samples_bootstrap,
                                           rf._sample_weight)
        votes[rows] += tree.predict_proba(Z[rows])
    return _normalized(votes)


def _normalized(votes: np.ndarray) -> np.ndarray:
    """Rows summing to 1; a row no tree left out (all but impossible with 200 trees) uniform."""
    votes = np.array(votes, dtype=np.float64)
    votes[votes.sum(axis=1) == 0] = 1.0
    return votes / votes.sum(axis=1, keepdims=True)
