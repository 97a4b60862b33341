"""Out-of-fold shortcuts (classify.oof, classify.head_folds): the same predictions as the K-fold
loop, or the standard estimate they stand for, at about one fit's cost."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from classify import oof, selection
from classify.features import load_features
from classify.head_folds import fit_folds
from classify.knn import CosineKNN
from classify.splits import RepeatedSmallDataKFold, stratified_holdout
from classify.torch_heads import TorchHead


def blobs(n: int = 120, d: int = 12, classes: int = 3, seed: int = 0, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(0, noise, (n, d)).astype(np.float32) + 2.0 * np.eye(classes, d, dtype=np.float32)[y]
    return X, y


def test_batched_folds_each_stop_on_their_own_and_keep_their_best_epoch():
    X, y = blobs()
    rng = np.random.default_rng(1)
    noisy = y.copy()  # fold 1: labels mostly noise, so its val loss stops improving at another epoch
    flip = rng.random(len(y)) < 0.6
    noisy[flip] = rng.integers(0, 3, flip.sum())
    head = TorchHead((16,), dropout=0.2, batchnorm=True, lr=1e-2, patience=3, max_epochs=60, random_state=0)
    heads = fit_folds(head, [X, X], [y, noisy])
    assert heads is not None and len(heads) == 2
    for h, labels in zip(heads, (y, noisy)):
        assert h.n_features_in_ == X.shape[1] and list(h.classes_) == [0, 1, 2]
        best = min(h.history_, key=lambda r: (r["val_loss"], r["epoch"]))
        assert h.n_epochs_ == len(h.history_) and h.best_epoch_ == best["epoch"]
        stopped_early = h.n_epochs_ < 60
        assert not stopped_early or h.n_epochs_ - 1 - h.best_epoch_ >= head.patience  # it waited `patience` epochs
        # the restored weights are its best epoch's: their loss on its early-stopping rows is that epoch's
        _, val = stratified_holdout(labels, head.val_fraction, head.random_state)
        p = h.predict_proba(X[val])
        loss = float(-np.mean(np.log(p[np.arange(len(val)), labels[val]])))
        assert loss == pytest.approx(best["val_loss"], rel=1e-4)
    assert heads[0].n_epochs_ != heads[1].n_epochs_  # each fold stopped on its own
    assert np.mean(heads[0].predict(X) == y) > 0.9


def test_batched_folds_learn_what_separate_fits_learn():
    X, y = blobs(n=300, seed=3, noise=0.8)
    splits = list(RepeatedSmallDataKFold(5, 1, random_state=0).split(X, y))
    head = TorchHead((), lr=3e-3, patience=10, tol=1e-3, random_state=0)
    heads = fit_folds(head, [X[f] for f, _ in splits], [y[f] for f, _ in splits])
    alone = [TorchHead((), lr=3e-3, patience=10, tol=1e-3, random_state=0).fit(X[f], y[f]) for f, _ in splits]
    batched = np.mean([np.mean(h.predict(X[held]) == y[held]) for h, (_, held) in zip(heads, splits)])
    single = np.mean([np.mean(h.predict(X[held]) == y[held]) for h, (_, held) in zip(alone, splits)])
    assert batched == pytest.approx(single, abs=0.03) and batched > 0.9


def test_batched_folds_decline_folds_with_different_classes():
    X, y = blobs()
    assert fit_folds(TorchHead(()), [X, X[y != 2]], [y, y[y != 2]]) is None


def test_out_of_bag_votes_are_scikit_learns_and_its_forest_is_the_refit():
    X, y = blobs(n=90, seed=2, noise=2.0)
    splits = list(RepeatedSmallDataKFold(5, 2, random_state=0).split(X, y))
    model = Pipeline([("clf", RandomForestClassifier(50, random_state=0))])
    got = oof.shortcut(model, X, y, None, splits, [None])
    assert got.method == "out-of-bag"
    ref = RandomForestClassifier(50, random_state=0, oob_score=True).fit(X, y)
    oob = ref.oob_decision_function_ / ref.oob_decision_function_.sum(1, keepdims=True)
    for (classes, per_tta), (_, held) in zip(got.done, splits):
        pred, proba = per_tta[None]
        np.testing.assert_allclose(proba, oob[held])
        assert (pred == classes[oob[held].argmax(1)]).all()
    X_new = blobs(n=30, seed=9)[0]
    np.testing.assert_allclose(got.refit.predict_proba(X_new), ref.predict_proba(X_new))
    assert got.refit.steps[-1][1].n_jobs == model.steps[-1][1].n_jobs  # as the model it stands for
    mirror = X + np.random.default_rng(5).normal(0, 0.5, X.shape).astype(np.float32)
    flip = oof.shortcut(model, X, y, mirror, splits, [None, "flip"])
    _, per_tta = flip.done[0]
    held = splits[0][1]
    np.testing.assert_allclose(per_tta[None][1], oob[held])
    mirrored = np.zeros((len(y), 3))
    for tree, center_rows in zip(ref.estimators_, _left_out(ref, len(y))):
        mirrored[center_rows] += tree.predict_proba(mirror[center_rows])
    mirrored = mirrored / mirrored.sum(1, keepdims=True)
    np.testing.assert_allclose(per_tta["flip"][1], (oob[held] + mirrored[held]) / 2)  # as predict_tta averages


def _left_out(forest: RandomForestClassifier, n: int) -> list[np.ndarray]:
    """The rows each tree's bootstrap left out, drawn again from its seed (scikit-learn's documented
    bootstrap: n draws with replacement from RandomState(tree.random_state))."""
    out = []
    for tree in forest.estimators_:
        drawn = np.random.RandomState(tree.random_state).randint(0, n, n)
        out.append(np.setdiff1d(np.arange(n), drawn))
    return out


def test_families_without_a_shortcut_keep_the_k_fold_loop():
    X, y = blobs()
    splits = list(RepeatedSmallDataKFold(5, 1, random_state=0).split(X, y))
    mlp = Pipeline([("standardize", StandardScaler()), ("clf", TorchHead((8,)))])
    knn = Pipeline([("clf", CosineKNN(3))])
    extra_trees = Pipeline([("clf", ExtraTreesClassifier(10))])  # no bootstrap, no out-of-bag rows
    for model in (mlp, knn, extra_trees):  # the MLP: batching did not pay; kNN: leave-one-out tilts the ranking
        assert oof.shortcut(model, X, y, None, splits, [None]) is None


def test_cross_validate_records_the_method_and_hands_back_the_refit(make_store):
    data = load_features(make_store({"train": 24, "val": 12}, 3, 16))
    model = Pipeline([("clf", RandomForestClassifier(30, random_state=0))]).fit(data.train.X, data.train.y)
    out, fold_of, refit = selection.cross_validate(model, data, views=False, ttas=[None], seed=0)
    rec, proba = out[None]
    assert rec["method"] == "out-of-bag" and refit is not None and proba.shape[:2] == (2, 108)
    np.testing.assert_array_equal(proba[0], proba[1])  # one estimate, both repeats
    assert fold_of.shape == (2, 108) and (fold_of >= 0).all() and len(rec["scores"]) == 10
    knn = Pipeline([("clf", CosineKNN(3))]).fit(data.train.X, data.train.y)
    assert selection.cross_validate(knn, data, views=False, ttas=[None], seed=0)[0][None][0]["method"] == "k-fold"


def test_a_member_scored_by_one_repeat_still_votes(make_store, tmp_path):
    """--budget auto may score a dear model by one CV repeat; a soft vote then reads the repeat all share."""
    from dataclasses import replace

    from classify.ensembles import soft_vote
    from classify.fit import fit
    from classify.job import run_classify
    from classify.plan import Shape, plan_one

    store = make_store({"train": 20, "val": 10}, 3, 16)
    rows = list(run_classify(store, out_dir=tmp_path / "run", models=["logreg"], select="cv"))
    data = load_features(store)
    one = replace(plan_one("knn-dino", Shape.of(data), select="cv"), repeats=1)
    (knn,) = fit(one, data)
    assert knn.extra["cv"]["repeats"] == 1 and knn.fitted.oof.proba.shape[0] == 1
    vote = soft_vote([rows[0], knn])
    assert vote is not None and vote.extra["cv"]["repeats"] == 1 and len(vote.extra["cv"]["scores"]) == 5
