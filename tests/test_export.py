"""``pipeline.py export``: every readable row round-trips, in both formats, by chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import build_store

import pipeline
from featcache.store import read_features, read_index, read_info


def store_rows(path, key):
    index = read_index(path)
    return read_features(path, key, index["rows"]), index


def test_npy_export_round_trips_every_row(tmp_path) -> None:
    store = build_store(tmp_path, {"train": 7, "val": 3}, 3, 16, splits=("train", "val"))
    key = read_info(store).default_feature
    assert pipeline.main(["export", str(store), "--out", str(tmp_path / "npy"), "-q"]) == 0
    meta = json.loads((tmp_path / "npy" / "index.json").read_text())
    X, index = store_rows(store, key)
    got = np.load(tmp_path / "npy" / meta["features"][key]["file"], mmap_mode="r")
    np.testing.assert_array_equal(got, X)
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "labels.npy"), index["y"])
    assert list(np.load(tmp_path / "npy" / "paths.npy")) == list(index["paths"])
    assert list(np.load(tmp_path / "npy" / "splits.npy")) == list(index["split"])
    assert meta["rows"] == len(X) == 30 and meta["class_names"] == ["class0", "class1", "class2"]
    assert not list((tmp_path / "npy").glob("*.partial"))


def test_parquet_export_round_trips_by_chunks(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from featcache.store.export import export

    store = build_store(tmp_path, 11, 2, 8, splits=("train", "val", "test"))
    key = read_info(store).default_feature
    meta = export(store, tmp_path / "pq", "parquet", chunk_rows=5)  # several row groups
    table = pq.read_table(tmp_path / "pq" / meta["features"][key]["file"])
    X, index = store_rows(store, key)
    assert pq.ParquetFile(tmp_path / "pq" / meta["features"][key]["file"]).num_row_groups == -(-len(X) // 5)
    np.testing.assert_array_equal(np.stack(table.column("features").to_numpy(zero_copy_only=False)), X)
    assert table.column("path").to_pylist() == list(index["paths"])
    assert table.column("split").to_pylist() == list(index["split"])
    assert table.column("label").to_pylist() == list(index["y"])
    assert table.column("class").to_pylist() == [f"class{i}" for i in index["y"]]
    assert str(table.schema.field("features").type).startswith("fixed_size_list<")


def test_export_refuses_an_unknown_feature_or_format_in_one_line(tmp_path, capsys) -> None:
    store = build_store(tmp_path, 3, 2, 4)
    assert pipeline.main(["export", str(store), "--out", str(tmp_path / "o"), "--features", "nope/none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no feature set 'nope/none'" in err and str(store) in err
    from featcache.store.export import export

    with pytest.raises(ValueError, match="--format 'csv'"):
        export(store, tmp_path / "o", "csv")
