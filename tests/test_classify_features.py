"""Loading a store for classification: splits, the val holdout, and the refusals."""

import numpy as np
import pytest

from classify.features import VAL_HOLDOUT, VAL_SPLIT, load_features
from featcache.store import StoreError


def test_splits_and_metadata(make_store):
    data = load_features(make_store({"train": 8, "val": 4, "test": 3}, 3, 5, splits=("train", "val", "test")))
    assert data.counts() == {"train": 24, "val": 12, "test": 9} and data.val_source == VAL_SPLIT
    assert data.feature == "fc:in/none" and data.dim == 5 and data.train.X.dtype == np.float32
    assert data.class_names == ["class0", "class1", "class2"] and data.spec["backbone"] == "synthetic"
    assert data.cache_key.startswith("synthetic") and data.complete
    assert all(p.startswith("test/") for p in data.test.paths)
    assert sorted(set(data.val.y)) == [0, 1, 2]


def test_no_val_split_gets_a_stratified_fixed_holdout_and_records_it(make_store):
    path = make_store(20, 3, 4, splits=("train",))
    data = load_features(path)
    assert data.val_source == VAL_HOLDOUT == "holdout from train"
    assert np.bincount(data.val.y).tolist() == [4, 4, 4]  # 20% of each class
    assert len(data.train) == 48 and not set(data.train.paths) & set(data.val.paths)
    assert np.array_equal(load_features(path).val.paths, data.val.paths)  # fixed seed: the same rows every run
    assert data.test is None


def test_incomplete_store_is_refused_unless_allowed(make_store, tmp_path):
    path = make_store(10, 2, 4, finish=False)
    with pytest.raises(StoreError, match=r"features\.h5.*incomplete.*--allow-partial"):
        load_features(path)
    data = load_features(path, allow_partial=True)
    assert not data.complete and str(data.store).endswith(".partial")
    assert len(data.train) + len(data.val) == 20  # only the rows written so far


def test_one_class_in_train_is_refused(make_store):
    path = make_store(10, 2, 4, labels_for={"train": [1], "val": [1]})
    with pytest.raises(ValueError, match=r"features\.h5: the train split has only one class \('class1'\)"):
        load_features(path)


def test_class_in_val_or_test_but_not_train_is_refused(make_store):
    path = make_store(6, 3, 4, splits=("train", "test"), labels_for={"train": [0, 1]})
    with pytest.raises(ValueError, match=r"features\.h5: test has classes with no train rows: \['class2'\]"):
        load_features(path)


def test_unknown_feature_and_missing_file_name_the_file(make_store, tmp_path):
    path = make_store(5, 2, 4)
    assert load_features(path, "fc:in").feature == "fc:in/none"
    with pytest.raises(StoreError, match=r"features\.h5: no feature set 'layer9'"):
        load_features(path, "layer9")
    with pytest.raises(StoreError, match=r"nope\.h5: no such feature store"):
        load_features(tmp_path / "nope.h5")
