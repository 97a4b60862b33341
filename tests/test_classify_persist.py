"""Saved models: round trip, checksum sidecar checked before unpickling, atomic writes."""

import os

import joblib
import numpy as np
import pytest

from classify.features import load_features
from classify.models import build_model
from classify.persist import SavedModel, load_model, save_model, sha256_file, sidecar_path

pytestmark = pytest.mark.usefixtures("single_threaded")


@pytest.fixture
def saved(make_store, tmp_path):
    data = load_features(make_store(12, 3, 6))
    model = build_model("knn").fit(data.train.X, data.train.y)
    path = save_model(SavedModel(model=model, name="knn", feature=data.feature, class_names=data.class_names,
                                 spec=data.spec, cache_key=data.cache_key, store=str(data.store)),
                      tmp_path / "fc__knn.joblib")
    return path, model, data


def test_round_trip_keeps_predictions_and_the_feature_spec(saved):
    path, model, data = saved
    assert sidecar_path(path).read_text() == f"{sha256_file(path)}  fc__knn.joblib\n"  # sha256sum -c format
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
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled a tampered file"))
    with pytest.raises(ValueError, match=r"fc__knn\.joblib: sha256 .* does not match its sidecar"):
        load_model(path)


def test_missing_or_malformed_sidecar_is_refused(saved):
    path = saved[0]
    side = sidecar_path(path)
    side.write_text("not-a-digest  fc__knn.joblib\n")
    with pytest.raises(ValueError, match=r"fc__knn\.joblib\.sha256: not a sha256 sidecar"):
        load_model(path)
    side.unlink()
    with pytest.raises(ValueError, match=r"fc__knn\.joblib: no checksum sidecar fc__knn\.joblib\.sha256"):
        load_model(path)


def test_a_verified_file_that_is_not_a_saved_model_is_refused(tmp_path):
    path = tmp_path / "other.joblib"
    joblib.dump({"not": "a model"}, path)
    sidecar_path(path).write_text(f"{sha256_file(path)}  other.joblib\n")
    with pytest.raises(ValueError, match="holds a dict, not a model saved by classify"):
        load_model(path)
    with pytest.raises(ValueError, match="no such model file"):
        load_model(tmp_path / "missing.joblib")
