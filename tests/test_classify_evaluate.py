"""Metrics agree with sklearn's own functions, and the result is plain JSON."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    top_k_accuracy_score,
)
from sklearn.svm import LinearSVC

from classify.evaluate import chosen_params, evaluate, to_jsonable
from classify.features import load_features
from classify.models import build_model

pytestmark = pytest.mark.usefixtures("single_threaded")


@pytest.fixture
def hard(make_store):
    """7 overlapping classes, so every metric has errors to count."""
    return load_features(make_store({"train": 15, "val": 8}, 7, 6, spread=1.5, seed=2))


def test_metrics_agree_with_sklearn(hard):
    tr, va = hard.train, hard.val
    model = LogisticRegression(max_iter=500).fit(tr.X, tr.y)
    m = evaluate(model, va.X, va.y, class_names=hard.class_names, paths=va.paths)
    pred, proba = model.predict(va.X), model.predict_proba(va.X)
    assert 0.2 < m["accuracy"] < 0.95  # errors exist, and so does signal
    assert m["accuracy"] == pytest.approx(accuracy_score(va.y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(va.y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(va.y, pred, average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(va.y, proba))
    assert list(m["top_k"]) == ["top1", "top2", "top3", "top4", "top5"]
    for k in range(1, 6):
        assert m["top_k"][f"top{k}"] == pytest.approx(top_k_accuracy_score(va.y, proba, k=k)), k
    assert m["confusion_matrix"]["matrix"] == confusion_matrix(va.y, pred).tolist()
    assert m["confusion_matrix"]["labels"] == hard.class_names
    report = classification_report(va.y, pred, target_names=hard.class_names, output_dict=True)
    assert m["report"]["macro avg"] == pytest.approx(report["macro avg"])
    for c, name in enumerate(hard.class_names):
        assert m["per_class_accuracy"][name] == pytest.approx(np.mean(pred[va.y == c] == c))
    wrong = np.flatnonzero(pred != va.y)
    assert [w["path"] for w in m["misclassified"]] == list(va.paths[wrong])
    assert all(w["true"] != w["predicted"] for w in m["misclassified"])
    assert m["misclassified"][0]["true"] == hard.class_names[va.y[wrong[0]]]
    assert m["predict_s"] >= 0 and json.loads(json.dumps(m)) == m  # plain JSON


def test_two_classes_have_top1_only_and_decision_scores_serve_without_probabilities(make_store):
    data = load_features(make_store(15, 2, 4, spread=1.0))
    model = LinearSVC().fit(data.train.X, data.train.y)
    m = evaluate(model, data.val.X, data.val.y, class_names=data.class_names)
    assert m["log_loss"] is None and list(m["top_k"]) == ["top1"]
    assert m["top_k"]["top1"] == pytest.approx(m["accuracy"])


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_a_split_missing_a_trained_class_still_scores(hard):
    tr, va = hard.train, hard.val
    model = LogisticRegression(max_iter=500).fit(tr.X, tr.y)
    keep = va.y != 3
    m = evaluate(model, va.X[keep], va.y[keep], class_names=hard.class_names)
    assert "class3" not in m["per_class_accuracy"] and len(m["confusion_matrix"]["matrix"]) == 7
    assert m["log_loss"] == pytest.approx(log_loss(va.y[keep], model.predict_proba(va.X[keep]), labels=range(7)))


def test_chosen_params_come_from_the_sweep_or_early_stopping(make_store):
    data = load_features(make_store(12, 2, 4))
    knn = build_model("knn").fit(data.train.X, data.train.y)
    assert set(chosen_params(knn)) == {"n_neighbors", "weights"}
    calibrated = SimpleNamespace(best_params_={"clf__estimator__C": np.float64(3.0)})  # svm-rbf's grid keys
    assert chosen_params(calibrated) == {"C": 3.0}
    head = build_model("linear")
    head[-1].set_params(max_epochs=3)
    assert set(chosen_params(head.fit(data.train.X, data.train.y))) == {"best_epoch", "epochs_run", "best_val_loss"}


def test_to_jsonable():
    assert to_jsonable({"a": np.float32(0.5), 1: (np.int64(2), np.array([1.0])), "n": float("nan")}) == \
        {"a": 0.5, "1": [2, [1.0]], "n": None}
