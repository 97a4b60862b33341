"""Integration on real photos and real weights: hymenoptera with EfficientNet-Lite0.

One extraction (~15 s) is shared by the module: the store has 398 rows of 1280-d features,
logreg's sweep reaches >= 0.94 val accuracy and the best of the default zoo >= 0.95, and ``predict`` on
the val images reproduces the accuracy that classify reported.
"""

import csv
import json
from pathlib import Path

import pytest

from extract.runner import ExtractConfig, extract
from featcache.store import read_info

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"
pytestmark = pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="needs ../shared/datasets/hymenoptera")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("hym") / "h.h5"
    s = extract(ExtractConfig(data=str(HYMENOPTERA), backbone="efficientnet_lite0", out=str(out), progress=False))
    assert s.status == "new"
    return out


@pytest.fixture(scope="module")
def classified(store, tmp_path_factory):
    from classify.job import run_classify

    out = tmp_path_factory.mktemp("cls")
    results = run_classify(store, models=["default"], jobs=2, out_dir=out, select="val")  # CV: test_selection
    return out, {r.model: r for r in results}


def test_store_rows_and_cache_hit(store):
    info = read_info(store)
    # imageNotFound.gif is a valid 300x300 GIF (a placeholder picture): it decodes, so it is a row.
    assert info.complete and info.n_rows == 398 and info.n_ok == 398 and not info.errors
    assert info.split_counts == {"train": 245, "val": 153}
    assert info.features == {"_fc:in/none": 1280}
    again = extract(ExtractConfig(data=str(HYMENOPTERA), backbone="efficientnet_lite0", out=str(store), progress=False))
    assert again.status == "hit"


def test_accuracy_targets(classified):
    _, by_model = classified
    assert by_model["logreg"].val["accuracy"] >= 0.94
    assert max(r.val["accuracy"] for r in by_model.values()) >= 0.95
    assert json.loads(json.dumps(by_model["logreg"].to_dict()))["val_source"] == "val split"


def test_predict_reproduces_classify_accuracy(classified, tmp_path):
    from featcache.driver.predict import predict

    out, by_model = classified
    model_path = by_model["logreg"].model_path
    preds = tmp_path / "preds.csv"
    predict(model_path, [str(HYMENOPTERA / "val")], str(preds))
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 153
    acc = sum(r["predicted"] == r["path"].split("/")[0] for r in rows) / len(rows)
    assert acc == pytest.approx(by_model["logreg"].val["accuracy"], abs=1e-9)


def test_l_bfgs_probe_matches_sklearn_logistic_regression_at_the_same_c(store):
    """Issue 13's fidelity target: within 0.5 points of scikit-learn at the same C, on real features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from classify.features import load_features
    from classify.linear_probe import LinearProbe

    data = load_features(store)
    tr, va = data.train, data.val
    for C in (0.01, 1.0):
        sk = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000)).fit(tr.X, tr.y)
        probe = LinearProbe(C=C, tol=1e-5).fit(tr.X, tr.y)
        assert abs((probe.predict(va.X) == va.y).mean() - sk.score(va.X, va.y)) <= 0.005, C
