"""Saved models: skops files that run no code when loaded, the checksum sidecar, atomic writes,
and hostile files (a pickle named like a model, a skops file naming untrusted types) refused."""

import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest

from classify.features import load_features
from classify.models import build_model
from classify.persist import SavedModel, load_model, save_model, sha256_file, sidecar_path, untrusted_types

pytestmark = pytest.mark.usefixtures("single_threaded")


@pytest.fixture
def saved(make_store, tmp_path):
    data = load_features(make_store(12, 3, 6))
    model = build_model("knn").fit(data.train.X, data.train.y)
    path = save_model(SavedModel(model=model, name="knn", feature=data.feature, class_names=data.class_names,
                                 spec=data.spec, cache_key=data.cache_key, store=str(data.store)),
                      tmp_path / "fc__knn.skops")
    return path, model, data


def test_round_trip_keeps_predictions_and_the_feature_spec(saved):
    path, model, data = saved
    assert sidecar_path(path).read_text() == f"{sha256_file(path)}  fc__knn.skops\n"  # sha256sum -c format
    back = load_model(path)
    assert np.array_equal(back.model.predict_proba(data.val.X), model.predict_proba(data.val.X))
    assert back.feature == "fc:in/none" and back.class_names == data.class_names
    assert back.spec == data.spec and back.cache_key == data.cache_key and back.versions["sklearn"]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file, not mkstemp's 0600


def test_a_changed_byte_is_refused_before_unpickling(saved, monkeypatch):
    path = saved[0]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    import skops.io

    monkeypatch.setattr(skops.io, "load", lambda *a, **k: pytest.fail("loaded a tampered file"))
    with pytest.raises(ValueError, match=r"fc__knn\.skops: sha256 .* does not match its sidecar"):
        load_model(path)


def test_missing_or_malformed_sidecar_is_refused(saved):
    path = saved[0]
    side = sidecar_path(path)
    side.write_text("not-a-digest  fc__knn.skops\n")
    with pytest.raises(ValueError, match=r"fc__knn\.skops\.sha256: not a sha256 sidecar"):
        load_model(path)
    side.unlink()
    with pytest.raises(ValueError, match=r"fc__knn\.skops: no checksum sidecar fc__knn\.skops\.sha256"):
        load_model(path)


def test_a_verified_file_that_is_not_a_saved_model_is_refused(tmp_path):
    import skops.io

    path = tmp_path / "other.skops"
    skops.io.dump({"not": "a model"}, path)
    sidecar_path(path).write_text(f"{sha256_file(path)}  other.skops\n")
    with pytest.raises(ValueError, match="holds a dict, not a model saved by classify"):
        load_model(path)
    with pytest.raises(ValueError, match="no such model file"):
        load_model(tmp_path / "missing.skops")


class Touch:
    """Unpickling this creates a file: what a hostile model file would do (or worse)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _with_sidecar(path: Path) -> Path:
    sidecar_path(path).write_text(f"{sha256_file(path)}  {path.name}\n")  # whoever writes a model can write this
    return path


@pytest.mark.parametrize("name", ["fc__logreg.skops", "fc__logreg.joblib"])
def test_a_pickle_named_like_a_model_is_refused_before_it_is_unpickled(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(Touch(marker)))
    _with_sidecar(path)
    with pytest.raises(ValueError, match=r"not a skops model but a pickle .* --trust-pickle"):
        load_model(path)
    assert not marker.exists()


def test_predict_refuses_a_hostile_pickle_in_one_line(tmp_path, capsys):
    import pipeline

    marker = tmp_path / "pwned"
    path = tmp_path / "fc-in_none__logreg.skops"
    path.write_bytes(pickle.dumps(Touch(marker)))
    _with_sidecar(path)
    img = tmp_path / "x.jpg"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    code = pipeline.main(["predict", "--model", str(path), str(img), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pickle" in err and str(path) in err, err
    assert not marker.exists() and not (tmp_path / "p.csv").exists()


def test_a_skops_file_naming_an_untrusted_type_is_refused_before_anything_is_built(saved, tmp_path, monkeypatch):
    import skops.io

    path, model, data = saved
    hostile = SavedModel(model=os.system, name="knn", feature=data.feature, class_names=data.class_names,
                         spec=data.spec, cache_key=data.cache_key, store=str(data.store))
    bad = tmp_path / "bad.skops"
    bad.write_bytes(skops.io.dumps(hostile))
    _with_sidecar(bad)
    assert untrusted_types(bad) == ["posix.system"]
    monkeypatch.setattr(skops.io, "load", lambda *a, **k: pytest.fail("built an untrusted file"))
    with pytest.raises(ValueError, match=r"bad\.skops: names types this tool does not trust \(posix\.system\)"):
        load_model(bad)


def test_a_damaged_archive_is_one_clear_error(tmp_path):
    path = tmp_path / "m.skops"
    path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    _with_sidecar(path)
    with pytest.raises(ValueError, match=r"m\.skops: not a readable skops model"):
        load_model(path)


def test_old_joblib_models_load_only_when_trusted(saved, tmp_path, monkeypatch):
    path, model, data = saved
    old = tmp_path / "old.joblib"
    joblib.dump(load_model(path), old)
    _with_sidecar(old)
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_model(old)
    back = load_model(old, trust_pickle=True)
    assert np.array_equal(back.model.predict_proba(data.val.X), model.predict_proba(data.val.X))
    monkeypatch.setenv("FEATCACHE_TRUST_PICKLE", "1")  # what --trust-pickle sets for the command
    assert load_model(old).name == "knn"


@pytest.mark.slow
def test_every_zoo_model_round_trips_through_skops(tmp_path):
    """Every registered model, fitted, saved and loaded: no type outside the trusted list, the
    same scores; a new model that needs another type fails here, not in a user's predict."""
    import skops.io

    from classify.models import list_models

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 16)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    X[np.arange(120), y] += 2
    for name in list_models():
        model = build_model(name, seed=0, jobs=1).fit(X, y)
        path = save_model(SavedModel(model=model, name=name, feature="f", class_names=["a", "b", "c"], spec={},
                                     cache_key="k", store="s"), tmp_path / f"{name}.skops")
        assert untrusted_types(path) == [], name
        assert not [t for t in skops.io.get_untrusted_types(file=path) if t.startswith("torch")]  # arrays only
        back = load_model(path).model
        score = (lambda m: m.predict_proba(X)) if hasattr(model, "predict_proba") else (lambda m: m.decision_function(X))
        assert np.array_equal(score(back), score(model)), name
