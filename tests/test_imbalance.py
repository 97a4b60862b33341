"""Imbalanced training classes: --metric auto ranks by balanced accuracy, --class-weight auto fits
every model with balanced class weights, and each model honours the weights."""

from __future__ import annotations

import numpy as np
import pytest

from classify.api import compare
from classify.config import ClassifyOptions
from classify.models import DEFAULT_MODELS, Build, build_model
from classify.plan import Shape, plan_zoo
from classify.weights import balanced_weights, class_weights


def skewed(seed: int = 0, n_major: int = 150, n_minor: int = 15, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes, 10:1: an unweighted model learns the prior."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0.0, 1.0, (n_major, d)), rng.normal(0.7, 1.0, (n_minor, d))]).astype(np.float32)
    return X, np.r_[np.zeros(n_major, int), np.ones(n_minor, int)]


def test_balanced_weights_follow_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    codes = np.array([0, 0, 0, 1, 2, 2])
    assert np.allclose(balanced_weights(codes, 3), compute_class_weight("balanced", classes=np.arange(3), y=codes))
    assert balanced_weights(np.array([0, 0, 2]), 3)[1] == 0.0  # a class a fold lacks weighs nothing
    assert class_weights(None, np.arange(2), codes) is None
    assert class_weights({1: 5.0}, np.array([0, 1]), codes).tolist() == [1.0, 5.0]
    with pytest.raises(ValueError, match="class_weight must be"):
        class_weights("heavy", np.arange(2), codes)


@pytest.mark.parametrize("imbalance, metric, weight", [(1.0, "accuracy", None), (1.49, "accuracy", None),
                                                       (1.5, "balanced_accuracy", "balanced"),
                                                       (10.0, "balanced_accuracy", "balanced")])
def test_auto_balances_from_1_5(imbalance, metric, weight):
    zoo = plan_zoo(Shape(200, 50, 16, 2, imbalance=imbalance), ClassifyOptions(models=("logreg",)))
    assert zoo.metric == metric and zoo.class_weight == weight and zoo.models[0].build.class_weight == weight
    forced = plan_zoo(Shape(200, 50, 16, 2, imbalance=imbalance),
                      ClassifyOptions(models=("logreg",), metric="accuracy", class_weight="none"))
    assert forced.metric == "accuracy" and forced.models[0].build.class_weight is None  # today's behaviour


@pytest.mark.slow
@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_class_weights_balance_every_model(name, single_threaded):
    """Weighted, each default model finds more of the minority class than unweighted. Fully grown
    trees end in pure leaves, where a class weight changes little: the forests only get the
    weights into their split criterion (scikit-learn's ``class_weight``), checked as passed on."""
    X, y = skewed()
    Xt, yt = skewed(seed=1)
    recall = {}
    for weight in (None, "balanced"):
        model = build_model(name, build=Build(seed=0, jobs=1, class_weight=weight))
        model.fit(X, y)
        recall[weight] = float(np.mean(model.predict(Xt[yt == 1]) == 1))
    if name in ("rf", "extratrees"):
        assert model.steps[-1][1].class_weight == "balanced" and recall["balanced"] >= recall[None] - 0.2, recall
        return
    assert recall["balanced"] > recall[None] or recall[None] == 1.0, recall


def test_compare_on_imbalanced_arrays_ranks_by_balanced_accuracy():
    X, y = skewed(n_major=120, n_minor=30)
    board = compare(X, y, models="logreg,knn-dino", select="cv")
    assert board.meta["metric"] == "balanced_accuracy" and board.meta["class_weight"] == "balanced"
    assert board.meta["imbalance"] == pytest.approx(120 / 30 * 1.0, rel=0.2)
    assert all(r.metric == "balanced_accuracy" and r.extra["class_weight"] == "balanced" for r in board.rows)
    plain = compare(X, y, models="logreg,knn-dino", select="cv", metric="accuracy", class_weight="none")
    assert plain.meta["metric"] == "accuracy" and "class_weight" not in plain.rows[0].extra
    by = {r.model: r for r in plain.rows}
    assert all(board_row.val["balanced_accuracy"] >= by[board_row.model].val["balanced_accuracy"] - 0.05
               for board_row in board.rows)
