"""--select cv, DINO's kNN, the few-shot curve and feature ensembles, on synthetic stores."""

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from classify import selection
from classify.ensembles import concat_features, soft_vote
from classify.features import Split, load_features
from classify.fewshot import draw, few_shot_curve
from classify.job import run_classify
from classify.knn import CosineKNN, SweptKNN
from classify.linear_probe import LinearProbe
from classify.splits import SmallDataKFold
from classify.sweep import Sweep
from featcache.report.results import load_run, parse_results

pytestmark = pytest.mark.usefixtures("single_threaded")


def test_knn_dino_votes_as_dino_eval_knn():
    rng = np.random.default_rng(0)
    ref, q = rng.normal(size=(60, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    model = CosineKNN(20, weights="dino").fit(ref, y)
    # By hand: cosine similarities, the 20 largest, each votes exp(s / 0.07) for its class.
    r = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ r.T
    expected = np.zeros((5, 3))
    for i in range(5):
        top = np.argsort(-s[i])[:20]
        for j in top:
            expected[i, y[j]] += np.exp(s[i, j] / 0.07)
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(model.predict_proba(q), expected, atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        CosineKNN(weights="dino", temperature=0).fit(ref, y)
    with pytest.raises(ValueError, match="weights"):
        CosineKNN(weights="softmax").fit(ref, y)


def test_choose_select():
    assert selection.choose_select("auto", 999) == "cv" and selection.choose_select("auto", 1000) == "val"
    assert selection.choose_select("val", 10) == "val" and selection.choose_select("cv", 10 ** 6) == "cv"
    assert selection.choose_select("auto", 500, 5_000) == "cv"
    assert selection.choose_select("auto", 500, 5_001) == "val"
    with pytest.raises(ValueError, match="--select 'best'"):
        selection.choose_select("best", 10)


def test_frozen_keeps_the_chosen_configuration(make_store):
    data = load_features(make_store({"train": 20, "val": 10}, 3, 8))
    X, y = data.train.X, data.train.y
    sweep = Sweep(Pipeline([("clf", LogisticRegression(max_iter=500))]), {"clf__C": [0.01, 100.0]},
                  cv=SmallDataKFold(3)).fit(X, y)
    f = selection.frozen(sweep)
    assert isinstance(f, Pipeline) and f.get_params()["clf__C"] == sweep.best_params_["clf__C"]
    assert not hasattr(f[-1], "coef_")  # unfitted
    probe = Pipeline([("clf", LinearProbe(Cs=(0.01, 1.0), refine=False))]).fit(X, y)
    assert selection.frozen(probe)[-1].C == probe[-1].best_params_["C"]
    knn = SweptKNN(ks=(7, 3)).fit(X, y)
    assert selection.frozen(knn).get_params()["n_neighbors"] == knn.best_params_["n_neighbors"]


def with_views(data, k=2, noise=0.0):
    """A copy whose train images each have k views equal to the center crop (+ noise)."""
    tr = data.train
    views = np.repeat(np.asarray(tr.X, np.float32)[:, None], k, axis=1) + noise
    return replace(data, train=replace(tr, views=views))


def test_cv_covers_every_image_once_per_repeat_and_groups_views(make_store):
    # Labels are noise: any CV accuracy well above chance means held-out images leaked into training.
    data = with_views(load_features(make_store({"train": 30, "val": 10}, 2, 8, separable=False)))
    out, folds, _ = selection.cross_validate(CosineKNN(1), data, views=True, ttas=[None], seed=0)
    rec, proba = out[None]
    assert rec["n"] == 80 and rec["folds"] == 5 and rec["repeats"] == 2 and len(rec["scores"]) == 10
    assert folds.shape == (2, 80) and (folds >= 0).all()  # every image held out once in each repeat
    assert all(np.bincount(folds[r]).min() >= 15 for r in range(2))
    assert proba.shape == (2, 80, 2) and np.allclose(proba.sum(axis=2), 1)
    assert rec["groups"] == "image" and rec["mean"] < 0.75, "a held-out image's views were in its training fold"
    assert rec["ci"][0] < rec["oof_accuracy"] < rec["ci"][1]


def test_run_classify_select_cv_ranks_by_cv(make_store, tmp_path):
    store = make_store({"train": 20, "val": 10, "test": 10}, 3, 16, splits=("train", "val", "test"))
    res = run_classify(store, out_dir=tmp_path / "run", models=["logreg", "knn-dino"], select="auto")
    for r in res:
        cv = r.extra["cv"]
        assert cv["n"] == 90 and 0 <= cv["mean"] <= 1 and cv["sd"] >= 0 and len(cv["scores"]) == 10
        z = np.load(cv["oof"])
        assert z["proba"].shape == (2, 90, 3) and z["fold"].shape == (2, 90)
    meta = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert meta["select"] == "cv"
    val_only = run_classify(store, out_dir=tmp_path / "run2", models=["logreg"], select="val")
    assert "cv" not in val_only[0].extra
    with pytest.raises(ValueError, match="^select 'maybe': expected one of auto, val, cv$"):
        run_classify(store, out_dir=tmp_path / "run3", models=["logreg"], select="maybe")


def test_few_shot_curve(make_store):
    data = load_features(make_store({"train": 20, "val": 10, "test": 10}, 3, 16, splits=("train", "val", "test")))
    curve = few_shot_curve(data, seed=0)
    assert curve["split"] == "test" and curve["n_eval"] == 30 and curve["draws"] == 5
    got = {(p["model"], p["shots"]): p for p in curve["points"]}
    assert set(got) == {(m, s) for m in ("logreg", "knn-dino") for s in (1, 2, 4, 8, 16, "all")}
    assert got[("logreg", 1)]["train_rows"] == 3 and got[("logreg", "all")]["train_rows"] == 60
    assert len(got[("logreg", 4)]["scores"]) == 5 and got[("logreg", "all")]["sd"] == 0.0
    assert got[("logreg", "all")]["mean"] >= got[("logreg", 1)]["mean"] - 0.05
    assert got[("logreg", 16)]["mean"] > 0.9  # separable blobs
    # The draws are seeded and stratified.
    y = data.train.y
    assert np.array_equal(draw(y, 2, 5), draw(y, 2, 5)) and np.bincount(y[draw(y, 2, 5)]).tolist() == [2, 2, 2]
    doubled = data.train.take(np.tile(np.arange(len(y)), 2))
    many = replace(data, train=replace(doubled, y=np.arange(len(doubled)) % 101))
    assert "skipped" in few_shot_curve(many)


def test_concat_aligns_images_by_path(make_store, tmp_path):
    a = load_features(make_store({"train": 10, "val": 5}, 2, 4, name="a.h5"))
    b = load_features(make_store({"train": 10, "val": 5}, 2, 6, name="b.h5", seed=1))
    perm = np.random.default_rng(0).permutation(len(b.train))
    b = replace(b, train=b.train.take(perm))  # another row order
    cat = concat_features(a, b, "fc + fc")
    assert cat.dim == 10 and cat.feature == "fc + fc"
    i = 3
    j = int(np.flatnonzero(b.train.paths == a.train.paths[i])[0])
    assert np.allclose(cat.train.X[i], np.r_[a.train.X[i], b.train.X[j]])
    short = replace(b, val=b.val.take(np.arange(len(b.val) - 1)))
    with pytest.raises(ValueError, match="missing from the other"):
        concat_features(a, short, "x")


@pytest.mark.slow
def test_soft_vote_of_saved_models_and_their_oof(make_store, tmp_path):
    store = make_store({"train": 20, "val": 10, "test": 10}, 3, 16, splits=("train", "val", "test"), separable=True,
                       spread=2.0)
    res = run_classify(store, out_dir=tmp_path / "run", models=["logreg", "knn-dino", "svm-linear"], select="cv")
    rows = [replace(r, backbone="b") for r in res]
    vote = soft_vote(rows)
    assert vote.kind == "soft-vote" and len(vote.members) == 2  # svm-linear has no probabilities
    assert vote.model == "soft-vote of 2"
    assert vote.val["n"] == 30 and vote.test["n"] == 30 and vote.extra["cv"]["n"] == 90
    # The vote is the average of the members' probabilities, recomputed here from the saved models.
    from classify.persist import load_model

    data = load_features(store)
    members = [r for r in rows if r.model != "svm-linear"]
    p = sum(load_model(r.model_path).model.predict_proba(data.test.X) for r in members) / 2
    assert vote.test["accuracy"] == pytest.approx(np.mean(p.argmax(1) == data.test.y))
    # Members resumed from an earlier run (nothing in memory) vote from their saved files, the same.
    from_files = soft_vote([replace(r, fitted=None) for r in rows])
    timeless = lambda v: {**v.to_dict(), "val": {**v.val, "predict_s": 0}, "test": {**v.test, "predict_s": 0}}  # noqa: E731
    assert timeless(from_files) == timeless(vote)
    run = parse_results({"results": [r.to_dict() for r in rows] + [vote.to_dict()]}, tmp_path)
    e = next(e for e in run.rows if e.kind == "soft-vote")
    assert e.cv and e.p_vs_best is not None  # ranked and paired like any row
    # A vote tied with the top score goes first; otherwise it keeps its place by score.
    assert (run.rows[0] is e) == e.tied
    top = max(run.rows, key=lambda x: x.score)
    assert top.tied and (e.tied or run.rows[0] is top)
    assert soft_vote(rows[:1]) is None


def test_pool_and_fold_arrays_keep_views_with_their_image(make_store):
    data = with_views(load_features(make_store({"train": 6, "val": 2}, 2, 4)), k=3)
    p = selection.pool(data)
    assert len(p) == 16 and p.n_train == 12
    idx = np.array([0, 5, 13])  # two train images (with views) and one val image (without)
    X, y, groups = selection.fold_arrays(p, idx, views=True)
    assert len(X) == 3 + 2 * 3 and groups.tolist() == [0, 1, 2, 0, 0, 0, 1, 1, 1]
    assert np.array_equal(y[3:6], [p.y[0]] * 3) and np.allclose(X[3], p.X[0])
    X2, _, g2 = selection.fold_arrays(p, idx, views=False)
    assert len(X2) == 3 and g2 is None
    assert isinstance(data.train, Split)


@pytest.mark.slow
def test_report_ranks_by_cv_and_names_the_tied_group(make_store, tmp_path):
    store = make_store({"train": 20, "val": 10}, 3, 16, spread=3.0)
    res = run_classify(store, out_dir=tmp_path / "c", models=["logreg", "knn-dino", "rf"], select="cv")
    rows = [replace(r, backbone="b").to_dict() for r in res]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps({"config": {"data": "x"}, "results": rows}))
    run = load_run(tmp_path / "run")
    assert run.selection == "cv"
    assert [e.score for e in run.rows] == sorted((e.cv["mean"] for e in run.rows), reverse=True)
    assert run.rows[0].tied and run.rows[0].p_vs_best == 1.0


def test_choose_final_fit():
    assert selection.choose_final_fit("auto", "cv") == "train+val"
    assert selection.choose_final_fit("auto", "val") == "train"
    assert selection.choose_final_fit("train", "cv") == "train" and selection.choose_final_fit("train+val", "val") == "train+val"
    with pytest.raises(ValueError, match="--final-fit 'all'"):
        selection.choose_final_fit("all", "cv")


def test_final_fit_refits_on_train_and_val_and_keeps_val_honest(make_store, tmp_path):
    """Under cv the saved model (test, predict) has seen train+val; val is scored by the train-only fit."""
    from classify.persist import load_model

    store = make_store({"train": 20, "val": 10, "test": 10}, 3, 16, splits=("train", "val", "test"))
    [refit] = run_classify(store, out_dir=tmp_path / "a", models=["knn-dino"], select="cv")
    [plain] = run_classify(store, out_dir=tmp_path / "b", models=["knn-dino"], select="cv", final_fit="train")
    assert refit.extra["final_fit"] == "train+val" and "final_fit" not in plain.extra
    def scores(m):
        return {k: v for k, v in m.items() if k != "predict_s"}

    assert scores(refit.val) == scores(plain.val) and refit.extra["cv"]["mean"] == plain.extra["cv"]["mean"]
    def reference_rows(path):
        m = load_model(path).model
        return len((m.steps[-1][1] if hasattr(m, "steps") else m).ref_)

    # kNN keeps what it was fitted on: train's 60 images, or those and val's 30.
    assert reference_rows(refit.model_path) == 90 and reference_rows(plain.model_path) == 60
    est = refit.fitted.estimator
    assert refit.test["n"] == 30 and len(est.steps[-1][1].ref_ if hasattr(est, "steps") else est.ref_) == 90
    meta = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert meta["final_fit"] == "train+val"
    # final_fit is part of the resume key: the other setting is fitted again, not reused.
    again = run_classify(store, out_dir=tmp_path / "a", models=["knn-dino"], select="cv", final_fit="train")
    assert "final_fit" not in again[0].extra
    with pytest.raises(ValueError, match="^final_fit 'everything': expected one of auto, train, train\\+val$"):
        run_classify(store, out_dir=tmp_path / "c", models=["logreg"], final_fit="everything")


def test_soft_vote_of_refit_members_scores_val_out_of_fold(make_store, tmp_path):
    from classify.ensembles import member_proba

    store = make_store({"train": 20, "val": 10, "test": 10}, 3, 16, splits=("train", "val", "test"))
    rows = list(run_classify(store, out_dir=tmp_path / "run", models=["logreg", "knn-dino"], select="cv"))
    z = np.load(rows[0].extra["cv"]["oof"])
    for row in (rows[0], replace(rows[0], fitted=None)):  # in memory, and from its saved files
        proba, y, paths, _, _ = member_proba(row, "val")
        at = [list(z["paths"]).index(p) for p in paths]
        assert np.allclose(proba, z["proba"][0][at]) and len(y) == 30
    vote = soft_vote(rows)
    assert vote.val["n"] == 30 and vote.val["accuracy"] < 1.0 + 1e-9


@pytest.mark.slow
def test_slow_folds_go_to_the_workers_with_the_same_results(make_store, monkeypatch):
    """Below PARALLEL_FROM the first fold times the rest: slow ones run on --jobs processes, same numbers."""
    from classify.torch_heads import TorchHead

    data = load_features(make_store({"train": 20, "val": 10}, 3, 16))
    model = TorchHead((8,), max_epochs=5, random_state=0)
    calls = []
    real = selection.Parallel

    def spy(n_jobs=1, **kw):
        calls.append(n_jobs)
        return real(n_jobs=n_jobs, **kw)

    monkeypatch.setattr(selection, "Parallel", spy)
    serial, folds1, _ = selection.cross_validate(model, data, views=False, ttas=[None], seed=0)
    monkeypatch.setattr(selection, "PARALLEL_FOLD_S", 0.0)  # every fold counts as slow
    wide, folds2, _ = selection.cross_validate(model, data, views=False, ttas=[None], seed=0,
                                            n_jobs=2)
    assert calls == [1, 2]
    assert wide[None][0]["scores"] == serial[None][0]["scores"] and (folds1 == folds2).all()
    np.testing.assert_allclose(wide[None][1], serial[None][1], atol=1e-6)
    monkeypatch.setattr(selection, "PARALLEL_FOLD_S", 1e9)  # fast folds stay here
    selection.cross_validate(model, data, views=False, ttas=[None], seed=0, n_jobs=2)
    assert calls[-1] == 1
