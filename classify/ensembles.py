"""Feature ensembles as extra leaderboard rows: concatenated feature sets and a soft vote.

- ``concat``: the two best feature sets (two layers of one backbone, or two backbones) joined
  image by image (aligned by path, so two stores of one dataset in any row order work), then
  fitted like any feature set with rank 1's model type and logreg.
- ``soft-vote``: the average of the tied group's class probabilities (members without
  ``predict_proba`` are left out). Val and test come from the saved models on their own
  stores (val from a member's out-of-fold probabilities when it was refitted on train+val);
  under ``--select cv`` the CV score averages the members' saved out-of-fold
  probabilities fold by fold (every member used the same folds of the same images).

Ensemble rows are scored and paired like the others; the report says whether one beats the
best single model outside that model's interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from classify import stats
from classify.evaluate import evaluate, predict_tta, to_jsonable
from classify.features import FeatureSet, Split, load_features
from classify.persist import SavedVote, load_model, vote_of
from featcache.common.errors import BadInput
from featcache.store.rows import ResultRow

log = logging.getLogger(__name__)

MAX_MEMBERS = 5


def _align(paths: np.ndarray, ref: np.ndarray, where: str) -> np.ndarray:
    """Positions in ``paths`` of each of ``ref``'s paths."""
    pos = {p: i for i, p in enumerate(paths.tolist())}
    missing = [p for p in ref.tolist() if p not in pos]
    if missing:
        raise BadInput(f"{where}: {len(missing)} images of one feature set are missing from the other "
                         f"(e.g. {missing[0]!r}); only stores of the same images can be combined")
    return np.fromiter((pos[p] for p in ref.tolist()), dtype=np.int64, count=len(ref))


def _concat_split(a: Split, b: Split, where: str) -> Split:
    at = _align(b.paths, a.paths, where)
    if not np.array_equal(a.y, b.y[at]):
        raise BadInput(f"{where}: the two feature sets label the same images differently")
    flip = np.concatenate([a.flip, b.flip[at]], axis=1) if a.flip is not None and b.flip is not None else None
    X = np.concatenate([np.asarray(a.X, np.float32), np.asarray(b.X, np.float32)[at]], axis=1)
    return Split(X, a.y, a.paths, a.rows, None, flip)


def concat_features(a: FeatureSet, b: FeatureSet, label: str) -> FeatureSet:
    """``a`` and ``b`` side by side, image by image (views are not combined)."""
    if a.class_names != b.class_names:
        raise BadInput(f"{a.store} and {b.store}: different classes; only stores of one dataset can be combined")
    where = f"{a.store} + {b.store}"
    test = _concat_split(a.test, b.test, where) if a.test is not None and b.test is not None else None
    return replace(a, feature=label, spec={"concat": [a.spec, b.spec]}, cache_key=f"{a.cache_key}+{b.cache_key}",
                   train=_concat_split(a.train, b.train, where), val=_concat_split(a.val, b.val, where), test=test)


class PrecomputedProba:
    """An "estimator" whose probabilities were computed already: row i of X holds the index i.

    Lets the soft vote reuse :func:`classify.evaluate.evaluate` (every metric, the CI, the
    correctness bits) unchanged."""

    def __init__(self, proba: np.ndarray, classes: np.ndarray):
        self.proba, self.classes_ = proba, classes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.proba[np.asarray(X[:, 0], dtype=np.int64)]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


Member = tuple  # (probabilities, y, paths, class_names, classes) of one member on one split


def _saved_proba(row: ResultRow, split: str) -> Member | None:
    """A member that was not fitted in this process (resumed from an earlier run): its saved
    model on its own store's ``split``, or on val its saved out-of-fold probabilities."""
    saved = load_model(row.model_path)
    tta = row.extra.get("tta")
    data = load_features(row.store, saved.feature, flip=tta == "flip")
    s = data.val if split == "val" else data.test
    if s is None:
        return None
    if split == "val" and row.refit:
        # The saved model has seen val; its out-of-fold probabilities have not (repeat 1).
        oof = (row.cv or {}).get("oof")
        if not oof or not Path(oof).is_file():
            return None
        z = np.load(oof, allow_pickle=False)
        at = _align(z["paths"], s.paths, "oof")
        proba = z["proba"][0][at].astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True), s.y, s.paths, data.class_names, z["classes"]
    _, proba, _ = predict_tta(saved.model, np.asarray(s.X, np.float32),
                              np.asarray(s.flip, np.float32) if tta == "flip" else None)
    return proba, s.y, s.paths, data.class_names, np.asarray(saved.model.classes_)


def member_proba(row: ResultRow, split: str) -> Member | None:
    """(proba, y, paths, class_names, classes) of one member on ``split``: the probabilities its fit
    scored with, in memory (on val, a model refitted on train+val gives its out-of-fold ones)."""
    fitted = row.fitted
    if fitted is None:
        return _saved_proba(row, split) if row.model_path else None
    classes, names = np.asarray(fitted.estimator.classes_), fitted.saved.class_names
    got = fitted.proba.get(split)
    if got is None:
        return None
    proba, y, paths = got
    if split == "val" and row.refit:
        if fitted.oof is None:
            return None
        oof = fitted.oof.proba[0][_align(fitted.oof.paths, np.asarray(paths).astype(str), "oof")].astype(np.float64)
        return oof / oof.sum(axis=1, keepdims=True), y, paths, names, fitted.oof.classes
    return proba, y, paths, names, classes


def _vote_split(members: list[ResultRow], split: str, proba_of: Callable) -> dict | None:
    got = [proba_of(r, split) for r in members]
    if any(g is None for g in got):
        return None
    _, y, paths, class_names, classes = got[0]
    total = np.zeros_like(got[0][0], dtype=np.float64)
    for proba, _, p, _, cl in got:
        if not np.array_equal(cl, classes):
            raise BadInput(f"{split}: soft-vote members were trained on different classes")
        total += proba[_align(p, paths, split)]
    avg = total / len(got)
    return evaluate(PrecomputedProba(avg, classes), np.arange(len(y))[:, None], y, class_names=class_names,
                    paths=paths)


def _oof_of(row: ResultRow) -> dict | None:
    """A member's out-of-fold record (proba, paths, y, fold, classes): in memory, else its saved file."""
    if row.fitted is not None and row.fitted.oof is not None:
        o = row.fitted.oof
        return {"proba": o.proba, "paths": np.asarray(o.paths).astype(str), "y": o.y, "fold": o.fold,
                "classes": o.classes}
    path = (row.cv or {}).get("oof")
    if not path or not Path(path).is_file():
        return None
    return dict(np.load(path, allow_pickle=False))


def _vote_cv(members: list[ResultRow]) -> dict | None:
    """The members' out-of-fold probabilities averaged, scored fold by fold."""
    loaded = [_oof_of(r) for r in members]
    if any(z is None for z in loaded):
        return None
    ref = loaded[0]
    repeats = min(len(z["fold"]) for z in loaded)  # a member scored by one repeat (--budget auto) votes on it
    paths, y, fold = ref["paths"], ref["y"], ref["fold"][:repeats]
    total = np.zeros((repeats, *ref["proba"].shape[1:]), dtype=np.float64)
    for z in loaded:
        at = _align(z["paths"], paths, "oof")
        if not np.array_equal(z["fold"][:repeats, at], fold) or not np.array_equal(z["classes"], ref["classes"]):
            log.warning("soft vote: members' CV folds differ; no CV score for the soft vote")
            return None
        total += z["proba"][:repeats, at]
    pred = ref["classes"][total.argmax(axis=2)]  # (repeats, n)
    k = int(fold.max()) + 1
    scores = np.array([np.mean(pred[r][fold[r] == f] == y[fold[r] == f]) for r in range(repeats) for f in range(k)])
    balanced = np.array([balanced_accuracy_score(y[fold[r] == f], pred[r][fold[r] == f]) for r in range(repeats)
                         for f in range(k)])
    acc1 = float(np.mean(pred[0] == y))
    return {"mean": float(scores.mean()), "sd": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "balanced_mean": float(balanced.mean()),
            "balanced_sd": float(balanced.std(ddof=1)) if len(balanced) > 1 else 0.0,
            "scores": scores.tolist(), "folds": k, "repeats": repeats, "n": int(len(y)), "oof_accuracy": acc1,
            "ci": stats.accuracy_interval(acc1, len(y)),
            "repeat_accuracy": [float(np.mean(pred[r] == y)) for r in range(repeats)],
            **stats.correctness(pred[0], y, [str(p) for p in paths])}


def has_proba(row: ResultRow) -> bool:
    return row.val.get("log_loss") is not None and (row.fitted is not None or bool(row.model_path))


def vote_model(vote: ResultRow, members: list[ResultRow]) -> SavedVote:
    """``vote``'s members' models, as its model file holds them: each member's fit in memory (the
    model its own file has), or, for a member resumed from an earlier run, its file, verified."""
    by_label = {r.label: r for r in members}
    missing = [label for label in vote.members if label not in by_label]
    if missing:
        raise BadInput(f"soft vote: member {missing[0]!r} is not among the rows given")
    rows = [by_label[label] for label in vote.members]
    saved = [r.fitted.saved if r.fitted is not None else load_model(str(r.model_path)) for r in rows]
    return vote_of(saved, list(vote.members), name=vote.model, feature=vote.feature)


def soft_vote(members: list[ResultRow], proba_of: Callable | None = None, feature: str = "tied group"
              ) -> ResultRow | None:
    """The row of the average of ``members``' probabilities (at most :data:`MAX_MEMBERS`).

    ``proba_of(row, split)`` -> (proba, y, paths, class_names, classes) scores one member
    (default: :func:`member_proba`, in memory)."""
    proba_of = proba_of or member_proba
    members = [r for r in members if has_proba(r)][:MAX_MEMBERS]
    if len(members) < 2:
        return None
    val = _vote_split(members, "val", proba_of)
    test = _vote_split(members, "test", proba_of)
    cv = _vote_cv(members) if all(r.cv for r in members) else None
    if cv is None and any(r.cv for r in members):
        log.warning("soft vote skipped: its members were ranked by CV, and their out-of-fold predictions "
                    "cannot be combined")
        return None
    backbones = "+".join(dict.fromkeys(r.backbone for r in members))
    return ResultRow.from_dict(to_jsonable(ResultRow(
        backbone=backbones, feature=feature, model=f"soft-vote of {len(members)}", kind="soft-vote",
        members=[r.label for r in members], store=members[0].store, val=val, test=test, fit_s=0.0,
        params={"members": len(members)}, val_source=members[0].val_source or "", model_path=None,
        preprocess=[], extra={**({"cv": cv} if cv else {})}, dataset=members[0].dataset,
    ).to_dict()), "soft vote")
