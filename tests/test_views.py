"""Augmented feature caches: ``extract --views K`` storage, and classify training on views
without letting an image's views leak across CV folds or the early-stopping fold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classify.features import load_features
from classify.job import run_classify
from classify.model_inputs import fit_params, training_arrays
from classify.models import build_model
from classify.splits import SmallDataKFold
from classify.torch_heads import TorchHead
from extract.backbones import create_backbone
from extract.hooks import FeatureHooks, Tap
from extract.preprocess import build_transform
from extract.runner import ExtractConfig, extract
from extract.views import view_transform
from featcache.store import (
    FeatureSpec,
    Manifest,
    StoreError,
    ViewLayout,
    open_for_write,
    read_flip,
    read_info,
    read_rows,
    read_views,
    write_lock,
)
from tests.samples import copy_sample

ROOT = Path(__file__).resolve().parents[1]


def cfg(data, out, **kw) -> ExtractConfig:
    base = dict(data=str(data), backbone="efficientnet_lite0", out=str(out), batch_size=3, workers=0, progress=False,
                precision="fp32")  # compared with float32 references (the default is auto: bf16 where native)
    return ExtractConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def view_stores(tmp_path_factory):
    """The same 9 real photos (4 train, 4 val, one broken train file) with and without 2 views."""
    tmp = tmp_path_factory.mktemp("views")
    data = copy_sample(tmp / "imgs", 2, broken="train/bees/zz_broken.jpg")
    plain, viewed = tmp / "plain.h5", tmp / "views.h5"
    extract(cfg(data, plain))
    summary = extract(cfg(data, viewed, views=2, view_seed=3))
    return data, plain, viewed, summary


def test_store_layout_and_center_crops_unchanged(view_stores):
    data, plain, viewed, summary = view_stores
    info = read_info(viewed)
    assert summary.skipped == 1 and info.views == 2 and info.flip
    assert info.spec["views"] == {"k": 2, "seed": 3, "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3],
                                  "splits": ["train"], "flip": True}
    assert "views" not in read_info(plain).spec  # stores without views keep their old cache keys
    assert info.cache_key != read_info(plain).cache_key
    a, b = read_rows(plain), read_rows(viewed)
    assert np.array_equal(a["rows"], b["rows"])
    np.testing.assert_allclose(a["X"], b["X"], atol=1e-5)  # views ride in the same forward, centers unchanged
    train = b["rows"][b["split"] == "train"]
    V = read_views(viewed, None, train)
    assert V.shape == (4, 2, 1280) and np.isfinite(V).all()
    assert not np.allclose(V[:, 0], V[:, 1]) and not np.allclose(V[:, 0], b["X"][b["split"] == "train"])
    F = read_flip(viewed, None, b["rows"])
    assert F.shape == (8, 1280) and np.isfinite(F).all()
    with pytest.raises(StoreError, match="have no views"):
        read_views(viewed, None, b["rows"])  # val rows have none
    with pytest.raises(StoreError, match="holds no augmented views"):
        read_views(plain, None, train)
    assert extract(cfg(data, viewed, views=2, view_seed=3)).status == "hit"


def test_stored_views_equal_the_view_transform(view_stores):
    """Computed independently: decode, ViewTransform(seed, view)(img, row), forward, pool."""
    data, _, viewed, _ = view_stores
    d = read_rows(viewed)
    row, path = int(d["rows"][d["split"] == "train"][0]), d["paths"][d["split"] == "train"][0]
    bb = create_backbone("efficientnet_lite0")
    img = Image.open(data / path).convert("RGB")
    x = torch.stack([build_transform(bb.transform)(img)]
                    + [view_transform(bb.transform, 3, v)(img, row) for v in range(2)])
    x = torch.cat([x[:1], x[:1].flip(-1), x[1:]])
    with FeatureHooks(bb.model, [Tap.parse(bb.default_layer)], ("avg",)) as hooks, torch.inference_mode():
        f = next(iter(hooks(x).values())).numpy()
    np.testing.assert_allclose(read_views(viewed, None, [row])[0], f[2:], atol=1e-4)
    np.testing.assert_allclose(read_flip(viewed, None, [row])[0], f[1], atol=1e-4)


def test_views_do_not_depend_on_batching_and_follow_the_seed(view_stores, tmp_path):
    data, _, viewed, _ = view_stores
    other = tmp_path / "b1.h5"
    extract(cfg(data, other, views=2, view_seed=3, batch_size=1))
    rows = read_rows(viewed)["rows"][:4]
    np.testing.assert_allclose(read_views(other, None, rows), read_views(viewed, None, rows), atol=1e-5)
    reseeded = tmp_path / "s4.h5"
    extract(cfg(data, reseeded, views=1, view_seed=4))
    assert not np.allclose(read_views(reseeded, None, rows)[:, 0], read_views(viewed, None, rows)[:, 0])


def test_broken_image_has_nan_views_and_is_left_out(view_stores):
    _, _, viewed, _ = view_stores
    import h5py

    with h5py.File(viewed) as f:
        bad = int(np.flatnonzero(~f["ok"][:])[0])
        pos = int(np.searchsorted(f["view_rows"][:], bad))
        assert f["view_rows"][pos] == bad and np.isnan(f["views/_fc:in/none"][pos]).all()
    data = load_features(viewed, views=True, flip=True)
    assert data.train.views.shape == (4, 2, 1280) and data.val.flip.shape == (4, 1280)


@pytest.mark.parametrize("kw, match", [({"views": -1}, "^views -1: must be >= 0$"),
                                       ({"view_seed": -2}, "^view_seed -2: must be >= 0$"),
                                       ({"views": 2, "view_splits": ()}, "^view_splits: name at least one split")])
def test_bad_view_options(tmp_path, kw, match):
    data = copy_sample(tmp_path / "imgs", 1)
    with pytest.raises(ValueError, match=match):
        extract(cfg(data, tmp_path / "x.h5", **kw))
    assert not (tmp_path / "x.h5").exists()


def test_cli_refuses_views_with_ray(tmp_path):
    data = copy_sample(tmp_path / "imgs", 1)
    r = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "extract", "--data", str(data), "--backbone",
                        "efficientnet_lite0", "--out", str(tmp_path / "r.h5"), "--views", "2", "--engine", "ray"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--views with --engine ray" in r.stderr


# --------------------------------------------------------------------------- classify on views


def view_store(tmp_path: Path, n_train: int = 40, n_val: int = 30, k: int = 3, dim: int = 16, seed: int = 0,
               copies: bool = False, noise_labels: bool = False) -> Path:
    """Two Gaussian classes with K noisy views per train row (exact copies with ``copies``)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    y = np.arange(n) % 2
    if noise_labels:
        y = rng.permutation(y)
    means = np.stack([np.zeros(dim), np.full(dim, 0.0 if noise_labels else 1.0)])
    X = (rng.normal(0, 1, (n, dim)) + means[y]).astype(np.float32)
    splits = ["train"] * n_train + ["val"] * n_val
    manifest = Manifest(str(tmp_path), [f"{s}/c{c}/{i}.jpg" for i, (s, c) in enumerate(zip(splits, y))], y,
                        splits, ["c0", "c1"], f"views{seed}")
    feat = FeatureSpec("fc", "input", "none", dim)
    train = np.arange(n_train)
    noise = np.zeros((n_train, k, dim)) if copies else rng.normal(0, 0.5, (n_train, k, dim))
    V = (X[train, None, :] + noise).astype(np.float32)
    out = tmp_path / f"views-{seed}-{copies}.h5"
    spec = {"backbone": "synthetic", "views": {"k": k, "seed": 0, "splits": ["train"], "flip": True}}
    with write_lock(out):
        w = open_for_write(out, manifest, [feat], cache_key=f"v{seed}{copies}", spec=spec, provenance={},
                           default_feature=feat.key,
                           views=ViewLayout(train, k, True, {"seed": 0, "splits": ["train"]}))
        w.write(np.arange(n), {feat.key: X}, flips={feat.key: X[:, ::-1].copy()}, views=(train, {feat.key: V}))
        w.finish()
    return out


def test_grouped_folds_keep_views_with_their_image():
    y = np.array([0, 1] * 10)
    groups_plain = np.arange(20)
    k = 3
    groups = np.concatenate([groups_plain, np.repeat(groups_plain, k)])
    y_all = np.concatenate([y, np.repeat(y, k)])
    cv = SmallDataKFold(5, random_state=0)
    plain = [te.tolist() for _, te in cv.split(np.zeros(20), y)]
    seen_test: list[int] = []
    for (tr, te), expected in zip(cv.split(np.zeros(len(y_all)), y_all, groups), plain):
        assert te.tolist() == expected  # held-out fold: the same center crops as without views
        assert not set(groups[tr]) & set(groups[te])  # no image on both sides
        assert len(tr) == (20 - len(te)) * (k + 1)  # every view of every train image
        seen_test += te.tolist()
    assert sorted(seen_test) == list(range(20))
    assert cv.get_n_splits(None, y_all, groups) == 5


def test_grouping_is_what_stops_the_leak(tmp_path, single_threaded):
    """Labels are noise and views are exact copies: 1-NN scores ~1.0 in CV when a copy of the
    held-out image sits in the train fold; grouped CV sees chance."""
    data = load_features(view_store(tmp_path, n_train=60, copies=True, noise_labels=True), views=True)
    X, y, groups = training_arrays(data.train, views=True)
    model = build_model("knn", seed=0).set_params(clf__ks=(1,), clf__weightings=("uniform",))
    leaky = build_model("knn", seed=0).set_params(clf__ks=(1,), clf__weightings=("uniform",))
    leaky.fit(X, y)
    model.fit(X, y, **fit_params(model, groups))
    assert leaky[-1].best_score_ > 0.95
    assert model[-1].best_score_ < 0.75
    probe = build_model("logreg", seed=0).fit(X, y, **fit_params(build_model("logreg"), groups))
    assert 0 < probe[-1].best_params_["C"]  # the C path runs on the same grouped folds


def test_torch_head_early_stopping_fold_is_grouped(tmp_path, monkeypatch):
    data = load_features(view_store(tmp_path), views=True)
    X, y, groups = training_arrays(data.train, views=True)
    seen = {}

    class Captured(Exception):
        pass

    def capture(self, torch_, net, X_, y_, train, val):
        seen["train"], seen["val"] = train, val
        raise Captured

    monkeypatch.setattr(TorchHead, "_train", capture)
    with pytest.raises(Captured):
        TorchHead(max_epochs=1).fit(X, y, groups=groups)
    n = len(data.train)
    assert (seen["val"] < n).all()  # center crops only
    assert not set(groups[seen["train"]]) & set(groups[seen["val"]])
    assert len(seen["train"]) + len(seen["val"]) * 4 == len(y)
    with pytest.raises(ValueError, match="groups has 3 entries"):
        TorchHead().fit(X, y, groups=groups[:3])


def test_fit_params_route_groups():
    g = np.arange(4)
    assert set(fit_params(build_model("svm-rbf"), g)) == {"groups", "clf__groups"}  # a Sweep: its splitter, its SVC
    assert fit_params(build_model("rf"), g) == {}  # a small store's forest: no sweep, and its fit takes no groups
    assert set(fit_params(build_model("logreg"), g)) == {"clf__groups"}  # selects inside: groups go to the probe
    assert set(fit_params(build_model("linear"), g)) == {"clf__groups"}
    assert fit_params(build_model("logreg"), None) == {}


def test_run_classify_views_both_tta_both(tmp_path):
    store = view_store(tmp_path)
    results = run_classify(store, models=["logreg", "linear"], out_dir=tmp_path / "run", views="both", tta="both")
    names = sorted(r.model for r in results)
    assert names == sorted(["logreg", "logreg+flip", "logreg+views", "logreg+views+flip",
                            "linear", "linear+flip", "linear+views", "linear+views+flip"])
    by = {r.model: r for r in results}
    assert by["logreg+views"].extra["train_samples"] == 40 * 4 and by["logreg+views"].extra["views"] == 3
    assert by["logreg+flip"].extra["tta"] == "flip" and "views" not in by["logreg"].extra
    assert all(r.val["accuracy"] > 0.8 for r in results)
    assert all(Path(r.model_path).exists() for r in results)
    auto = run_classify(store, models=["logreg"], out_dir=tmp_path / "auto")
    assert [r.model for r in auto] == ["logreg+views"]  # auto: the store has views


def test_views_and_tta_need_a_store_that_has_them(make_store, tmp_path):
    plain = make_store(10, 2, 8)
    with pytest.raises(StoreError, match="no augmented views"):
        run_classify(plain, models="logreg", out_dir=tmp_path / "a", views="on")
    with pytest.raises(StoreError, match="no mirrored crops"):
        run_classify(plain, models="logreg", out_dir=tmp_path / "b", tta="flip")
    with pytest.raises(ValueError, match="^train_on_views 'yes': expected one of auto, on, off, both$"):
        run_classify(plain, models="logreg", out_dir=tmp_path / "c", views="yes")
    assert [r.model for r in run_classify(plain, models="logreg", out_dir=tmp_path / "d")] == ["logreg"]


def test_predict_with_flip_tta_reproduces_classify(view_stores, tmp_path):
    """A +flip model predicts new images as classify scored them: center and mirror averaged."""
    from featcache.driver.predict import predict

    data, _, viewed, _ = view_stores
    [res] = run_classify(viewed, models=["logreg"], out_dir=tmp_path / "run", views="on", tta="flip")
    out = predict(res.model_path, [str(data / "val")], str(tmp_path / "p.csv"))
    truth = [p.split("/")[-2] for p in out["paths"]]
    acc = float(np.mean([p == t for p, t in zip(out["predicted"], truth)]))
    assert acc == pytest.approx(res.val["accuracy"])
    plain = predict(res.model_path, [], str(tmp_path / "q.csv"), features=str(viewed), tta=False)
    assert plain["rows"] == 8


def test_vote_of_a_flip_and_a_plain_model_applies_each_ones_tta(view_stores, tmp_path):
    """A soft-vote file (issue 37) whose members differ in TTA: one extraction with mirrored crops,
    the +flip member averaging them and the other reading center crops only, as each predicts alone."""
    from classify.persist import load_model, save_model, vote_of
    from featcache.driver.predict import predict

    data, _, viewed, _ = view_stores
    [flip] = run_classify(viewed, models=["logreg"], out_dir=tmp_path / "a", views="off", tta="flip")
    [plain] = run_classify(viewed, models=["knn-dino"], out_dir=tmp_path / "b", views="off")
    members = [load_model(flip.model_path), load_model(plain.model_path)]
    assert [m.tta for m in members] == ["flip", "none"]
    vote = save_model(vote_of(members, ["flip", "plain"]), tmp_path / "vote.skops")
    images = [str(data / "val")]
    got = predict(vote, images, str(tmp_path / "v.csv"))
    assert got["extractions"] == 1 and got["rows"] == 4

    def proba(path: Path) -> np.ndarray:
        return np.loadtxt(path, delimiter=",", skiprows=1, usecols=(2, 3))

    each = [proba(Path(predict(r.model_path, images, str(tmp_path / f"{i}.csv"))["out"]))
            for i, r in enumerate((flip, plain))]
    np.testing.assert_allclose(proba(tmp_path / "v.csv"), np.mean(each, axis=0), atol=2e-6)


def test_interrupted_view_extraction_resumes_to_the_same_store(view_stores, tmp_path, monkeypatch):
    from featcache import store

    data, _, viewed, _ = view_stores
    out = tmp_path / "f.h5"
    real_write, calls = store.StoreWriter.write, []

    def flaky_write(self, *a, **k):
        if len(calls) == 1:
            raise KeyboardInterrupt  # after one flushed batch
        calls.append(1)
        return real_write(self, *a, **k)

    monkeypatch.setattr(store.StoreWriter, "write", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        extract(cfg(data, out, views=2, view_seed=3))
    monkeypatch.setattr(store.StoreWriter, "write", real_write)
    assert extract(cfg(data, out, views=2, view_seed=3)).status == "resume"
    rows = read_rows(viewed)["rows"]
    train = rows[read_rows(viewed)["split"] == "train"]
    np.testing.assert_allclose(read_views(out, None, train), read_views(viewed, None, train), atol=1e-5)
    np.testing.assert_allclose(read_flip(out, None, rows), read_flip(viewed, None, rows), atol=1e-5)


def test_merge_refuses_view_shards(tmp_path):
    from extract.shards import merge

    data = copy_sample(tmp_path / "imgs", 1)
    shards = [tmp_path / f"s{k}.h5" for k in range(2)]
    for k, path in enumerate(shards):
        extract(cfg(data, path, views=1, shard=f"{k}/2"))
    with pytest.raises(StoreError, match="holds augmented views"):
        merge(shards, tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_calibration_folds_partition_images_with_their_views():
    y = np.array([0, 1] * 9)
    k = 2
    groups = np.concatenate([np.arange(18), np.repeat(np.arange(18), k)])
    y_all = np.concatenate([y, np.repeat(y, k)])
    folds = list(SmallDataKFold(3, random_state=0, held_views=True).split(np.zeros(len(y_all)), y_all, groups))
    held = np.concatenate([te for _, te in folds])
    assert sorted(held.tolist()) == list(range(len(y_all)))  # a partition, as cross_val_predict needs
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])


def test_svm_rbf_on_views_gets_groups_for_its_calibration(tmp_path):
    from classify.models import GroupedCalibratedClassifierCV

    store = view_store(tmp_path)
    model = build_model("svm-rbf")
    assert set(fit_params(model, np.arange(3))) == {"groups", "clf__groups"}
    data = load_features(store, views=True)
    X, y, groups = training_arrays(data.train, views=True)
    calib = GroupedCalibratedClassifierCV(build_model("svm-rbf").final.named_steps["clf"].estimator,
                                          method="sigmoid", cv=SmallDataKFold(3), ensemble=False)
    cv_before = calib.cv
    calib.fit(X, y, groups=groups)
    assert calib.cv is cv_before  # the grouped folds were for that fit only
    [res] = run_classify(store, models=["svm-rbf"], out_dir=tmp_path / "run", views="on")
    assert res.model == "svm-rbf+views" and res.val["accuracy"] > 0.8
