"""The CPU stage at scale: the L-BFGS probe against scikit-learn, chunked preprocessing, the
protocol, one-search kNN, the sweep, budgets and bounded memory (speed itself: bench/classify_scale.py)."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import LinearSVC

from classify import budget, progress, protocol
from classify.chunkmap import ChunkMap
from classify.features import load_features
from classify.job import run_classify
from classify.knn import CosineKNN, SweptKNN
from classify.linear_probe import LinearProbe
from classify.models import Build, candidate
from classify.plan import ModelPlan, estimated, within
from classify.splits import RepeatedSmallDataKFold, SmallDataKFold, StratifiedHoldout
from classify.sweep import Sweep

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from synthetic import make_store as make_synthetic  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """3,000 rows x 128-d, 10 classes, the bench's generator (10% val)."""
    path = tmp_path_factory.mktemp("synth") / "s.h5"
    return load_features(make_synthetic(path, 3000, 128, 10, spread=0.5))


def _accuracy(model, X, y) -> float:
    return float((model.predict(X) == y).mean())


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_probe_matches_sklearn_logistic_regression_at_the_same_C(synth, C):
    tr, va = synth.train, synth.val
    sk = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(tr.X, tr.y)
    probe = LinearProbe(C=C, tol=1e-5).fit(tr.X, tr.y)
    assert abs(_accuracy(probe, va.X, va.y) - sk.score(va.X, va.y)) <= 0.005
    p_sk, p_probe = sk.predict_proba(va.X), probe.predict_proba(va.X)
    assert np.abs(p_sk - p_probe).max() < 0.02  # the same optimum, not just the same accuracy
    assert np.allclose(p_probe.sum(1), 1.0)


def test_squared_hinge_probe_matches_linear_svc(synth):
    tr, va = synth.train, synth.val
    # liblinear penalizes the intercept; a large intercept_scaling all but removes that, as in ours
    sk = make_pipeline(StandardScaler(), LinearSVC(C=0.01, intercept_scaling=10, max_iter=50000)).fit(tr.X, tr.y)
    probe = LinearProbe(loss="squared_hinge", C=0.01, tol=1e-5).fit(tr.X, tr.y)
    assert abs(_accuracy(probe, va.X, va.y) - sk.score(va.X, va.y)) <= 0.01
    assert not hasattr(probe, "predict_proba") and probe.decision_function(va.X).shape == (len(va), 10)


def test_probe_path_selects_like_independent_fits_and_stops_early(synth):
    tr = synth.train
    cv = StratifiedHoldout(0.2, random_state=0)
    probe = LinearProbe(Cs=(1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000), cv=cv, patience=2, path_tol=1e-5).fit(tr.X, tr.y)
    fit_rows, held = next(cv.split(tr.X, tr.y))
    losses = {}
    for C in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0):
        m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)).fit(tr.X[fit_rows], tr.y[fit_rows])
        p = m.predict_proba(tr.X[held])
        losses[C] = -np.log(p[np.arange(len(held)), np.searchsorted(m.classes_, tr.y[held])]).mean()
    best_sk = min(losses, key=losses.get)
    best = probe.best_params_["C"]
    assert best_sk / 10 ** 0.5 - 1e-12 <= best <= best_sk * 10 ** 0.5 + 1e-12  # same decade, refined within it
    coarse_run = [c for c in probe.cv_results_["C"] if c in (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000)]
    assert len(coarse_run) < 8 or max(coarse_run) < 1000 or best >= 100  # patience cut the weak end unless it won
    assert any(c not in (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000) for c in probe.cv_results_["C"])  # refined


def test_probe_reads_float16_as_it_is_and_agrees_with_float32(synth):
    tr, va = synth.train, synth.val
    half = tr.X.astype(np.float16)
    a = LinearProbe(C=0.1).fit(tr.X, tr.y)
    b = LinearProbe(C=0.1).fit(half, tr.y)
    assert (a.predict(va.X) == b.predict(va.X.astype(np.float16))).mean() > 0.99


def test_float16_store_stays_float16_until_a_model_reads_it(tmp_path):
    data = load_features(make_synthetic(tmp_path / "h.h5", 400, 32, 4, dtype="float16"))
    assert data.train.X.dtype == np.float16 and data.val.X.dtype == np.float16
    results = run_classify(tmp_path / "h.h5", out_dir=tmp_path / "out", models="logreg,knn")
    assert {r.model for r in results} == {"logreg", "knn"} and all(r.val["accuracy"] > 0.5 for r in results)


def test_probe_never_copies_the_whole_matrix():
    """numpy allocations are traced: a float32 or float64 copy of X would show as >= X.nbytes."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 256)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    from classify import lbfgs

    old = lbfgs.MATERIALIZE_BYTES
    lbfgs.MATERIALIZE_BYTES = 0  # as at 200k rows: nothing materialized
    try:
        tracemalloc.start()
        LinearProbe(Cs=(0.01, 1.0), cv=StratifiedHoldout(0.1), chunk_rows=2048, refine=False).fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        lbfgs.MATERIALIZE_BYTES = old
    assert peak < 0.5 * X.nbytes, f"peak numpy allocation {peak / 2**20:.1f} MiB for a {X.nbytes / 2**20:.1f} MiB X"


def test_chunkmap_steps_equal_sklearn():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(3000, 20)) * rng.uniform(0.1, 5, 20) + 3).astype(np.float32)
    X[:, 3] = 1.0  # a constant column: StandardScaler leaves it at scale 1
    import torch

    m = ChunkMap(("standardize",)).fit(X, chunk=700)
    assert np.allclose(m(torch.from_numpy(X)).numpy(), StandardScaler().fit_transform(X), atol=1e-4)
    m = ChunkMap(("l2", "pca:5")).fit(X, chunk=700)
    ref = PCA(5).fit(Normalizer().fit_transform(X))
    got = m(torch.from_numpy(X)).numpy()
    want = ref.transform(Normalizer().fit_transform(X))
    assert np.allclose(np.abs(got), np.abs(want), atol=1e-3)  # components agree up to sign
    land = ChunkMap(("l2", "nystroem:64:1.0")).fit(X)
    U = Normalizer().fit_transform(X)
    sk = Nystroem(gamma=1.0, n_components=64, random_state=0).fit(U)
    K = np.exp(-1.0 * ((U[:50, None] - U[None, :50]) ** 2).sum(-1))
    Z, Zs = land(torch.from_numpy(X[:50])).numpy(), sk.transform(U[:50])
    assert abs(np.abs(Z @ Z.T - K).mean() - np.abs(Zs @ Zs.T - K).mean()) < 0.01  # as good as sklearn's
    land.params_[1].update(landmarks=sk.components_.astype(np.float32), normalization=sk.normalization_.astype(np.float32))
    land._cache = None
    assert np.allclose(land(torch.from_numpy(X[:50])).numpy(), Zs, atol=1e-5)  # sklearn's map, given its landmarks
    with pytest.raises(ValueError, match="unknown chunked preprocessing step 'whiten'"):
        ChunkMap(("whiten",))


def test_protocol_sizes_selection_from_rows_and_obeys_overrides():
    assert protocol.choose(81, 1280, 2).selection == "repeated-cv"
    small = protocol.choose(245, 1280, 2)
    assert (small.selection, small.folds) == ("cv", 5) and not small.large
    assert (protocol.choose(3000, 1280, 100).selection, protocol.choose(3000, 1280, 100).folds) == ("cv", 3)
    big = protocol.choose(8003, 1280, 100)
    assert big.selection == "holdout" and big.holdout == 0.2 and big.large and "8,003 train rows" in big.describe()
    assert protocol.choose(180_000, 1280, 100).holdout == 0.1
    assert protocol.choose(50_000, 8, 2, "cv:4").folds == 4
    r = protocol.choose(50, 8, 2, "repeated-cv:3x4")
    assert (r.selection, r.folds, r.repeats, r.n_fits) == ("repeated-cv", 3, 4, 12)
    assert protocol.choose(100, 8, 2, "holdout:0.3").holdout == 0.3
    for bad, msg in (("kfold", "expected auto, cv"), ("cv:1", "k >= 2"), ("holdout:1.5", r"\(0, 1\)")):
        with pytest.raises(ValueError, match=msg):
            protocol.check_spec(bad)


def test_holdout_and_repeated_splitters_are_stratified_seeded_and_grouped():
    y = np.repeat(np.arange(4), 50)
    (fit, held), = StratifiedHoldout(0.2, random_state=3).split(np.zeros(len(y)), y)
    assert np.bincount(y[held]).tolist() == [10] * 4 and len(set(fit) & set(held)) == 0
    folds = list(RepeatedSmallDataKFold(5, 2, random_state=0).split(np.zeros(len(y)), y))
    assert len(folds) == 10 == RepeatedSmallDataKFold(5, 2).get_n_splits(None, y)
    assert not np.array_equal(folds[0][1], folds[5][1])  # the repeat draws other folds
    groups = np.concatenate([np.arange(200), np.repeat(np.arange(200), 2)])  # centers, then 2 views each
    yy = np.concatenate([y, np.repeat(y, 2)])
    (fit, held), = StratifiedHoldout(0.2).split(np.zeros(len(yy)), yy, groups)
    assert (held < 200).all() and not set(groups[fit]) & set(groups[held])


def test_swept_knn_picks_what_grid_search_picks_from_one_search_per_fold(synth):
    tr = synth.train
    cv = SmallDataKFold(3, random_state=0)
    ks, ws = (15, 7, 3, 1), ("uniform", "distance")
    mine = SweptKNN(ks, ws, cv=cv).fit(tr.X, tr.y)
    ref = GridSearchCV(CosineKNN(), {"n_neighbors": list(ks), "weights": list(ws)}, cv=cv).fit(tr.X, tr.y)
    assert np.allclose(sorted(mine.cv_results_["mean_test_score"]), sorted(ref.cv_results_["mean_test_score"]))
    assert mine.best_score_ == pytest.approx(ref.best_score_)


@pytest.mark.slow
def test_sweep_equals_grid_search_and_reports_each_fit(synth):
    tr = synth.train
    cv = SmallDataKFold(3, random_state=0)
    grid = {"logisticregression__C": [0.01, 1.0]}
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    ticks = []
    with progress.model_bar("t") as bar:
        bar.update = lambda n=1: ticks.append(n)
        mine = Sweep(pipe, grid, cv=cv).fit(tr.X, tr.y)
        total = bar.total
    ref = GridSearchCV(pipe, grid, cv=cv).fit(tr.X, tr.y)
    assert mine.best_params_ == ref.best_params_ and mine.best_score_ == pytest.approx(ref.best_score_)
    assert sum(ticks) == total == 2 * 3 + 1  # a fold advances the bar by its candidates


def test_builders_bound_their_cost_at_scale():
    small, large = Build(protocol=protocol.choose(245, 1280, 2)), Build(protocol=protocol.choose(200_000, 1280, 100))
    assert candidate("rf", small).estimator.n_estimators == 200 and candidate("rf", small).estimator.max_samples is None
    assert candidate("rf", large).estimator.max_samples == 1000 and candidate("rf", large).estimator.n_estimators <= 40
    assert candidate("rf", large).cost < 200 * candidate("rf", small).cost * 200_000 / 245  # bounded, not linear in rows
    assert candidate("svm-rbf", large).note.startswith("Nystroem approximation") and not candidate("svm-rbf", small).note
    head = candidate("mlp", large).estimator
    assert head.batch_size == 512 and head.max_epochs * 200_000 <= 2.5e6
    cheap = Build(protocol=large.protocol, approximate=True)
    for name in ("logreg", "svm-linear", "svm-rbf", "rf", "extratrees", "mlp"):
        assert candidate(name, cheap).cost < candidate(name, large).cost, name
    est = {n: budget.estimate_seconds(candidate(n, large).cost) for n in ("logreg", "knn")}
    assert all(0 < s < 1e5 for s in est.values())


def test_budget_parsing():
    assert budget.parse_budget("10m") == 600 and budget.parse_budget("1h30m") == 5400
    assert budget.parse_budget("90s") == 90 and budget.parse_budget("45") == 45 and budget.parse_budget(None) is None
    for bad in ("10 minutes", "-5", "0", "m"):
        with pytest.raises(ValueError, match="--budget"):
            budget.parse_budget(bad)


def test_budget_approximates_then_skips(monkeypatch):
    p = protocol.choose(200_000, 1280, 100)
    full = estimated(ModelPlan("logreg", Build(seed=0, jobs=2, protocol=p)))
    cheap_est = budget.estimate_seconds(candidate("logreg", Build(protocol=p, approximate=True)).cost)
    approx = within(full, (cheap_est + full.estimate_s) / 2)
    assert approx.build.approximate and "approximated" in approx.note and not approx.skip
    skipped = within(full, cheap_est / 2)
    assert skipped.skip.startswith("estimated") and "left of the budget" in skipped.skip


def test_run_classify_reports_protocol_estimates_and_skips(tmp_path, make_store):
    store = make_store({"train": 30, "val": 10}, 3, 16)
    run_classify(store, out_dir=tmp_path / "out", models="logreg,svm-rbf", budget="0.001s")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["protocol"]["selection"] == "repeated-cv" and "90 train rows" in metrics["protocol"]["reason"]
    assert sorted(s["model"] for s in metrics["skipped"]) == ["logreg", "svm-rbf"]  # cheapest first
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Skipped under the budget" in summary and "selection: 5-fold stratified CV x 2 repeats" in summary
    results = run_classify(store, out_dir=tmp_path / "out2", models="logreg,knn", protocol="holdout")
    assert all(r.extra["estimate_s"] > 0 and r.extra["selection"].startswith("one stratified") for r in results)
    assert "Estimated: the time estimated before fitting" in (tmp_path / "out2" / "summary.md").read_text()


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_cosine_knn_votes_like_sklearn(weights):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(300, 12)).astype(np.float32), rng.integers(0, 4, 300)
    Q = rng.normal(size=(80, 12)).astype(np.float32)
    mine = CosineKNN(7, weights=weights).fit(X, y)
    ref = KNeighborsClassifier(7, weights=weights, metric="cosine", algorithm="brute").fit(X, y)
    assert np.allclose(mine.predict_proba(Q), ref.predict_proba(Q), atol=1e-4)
    assert (mine.predict(Q) == ref.predict(Q)).mean() >= 0.98  # ties may break apart in float32
    assert np.array_equal(CosineKNN(1).fit(X, y).predict(X), y)  # each row is its own nearest neighbour
