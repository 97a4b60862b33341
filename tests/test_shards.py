"""Sharded extraction and merge: equal to one process, refusals for bad shard sets."""

from pathlib import Path

import numpy as np
import pytest

from extract.runner import ExtractConfig, extract
from extract.shards import merge, parse_shard, shard_bounds
from featcache.store import StoreError, read_info, read_rows
from tests.samples import copy_sample


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return copy_sample(tmp_path_factory.mktemp("shardimgs"), 2, broken="train/ants/zz_bad.jpg")


def cfg(data, out, **kw):
    return ExtractConfig(data=str(data), backbone="efficientnet_lite0", out=str(out), batch_size=4, workers=0,
                         progress=False, **kw)


@pytest.fixture(scope="module")
def shards(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    ref = d / "ref.h5"
    extract(cfg(data, ref))
    parts = [d / f"s{k}.h5" for k in range(3)]
    for k, p in enumerate(parts):
        extract(cfg(data, p, shard=f"{k}/3"))
    return ref, parts


def test_parse_and_bounds():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "a/b", "3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    spans = [shard_bounds(10, k, 3) for k in range(3)]
    assert spans == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.parametrize("copy", [False, True])
def test_merge_equals_single_process_run(shards, tmp_path, copy):
    ref, parts = shards
    out = merge(list(reversed(parts)), tmp_path / "merged.h5", copy=copy)
    a, b = read_info(ref), read_info(out)
    assert b.complete and b.cache_key == a.cache_key and b.n_rows == a.n_rows == 9
    assert b.errors == a.errors and b.split_counts == a.split_counts
    ra, rb = read_rows(ref), read_rows(out)
    assert list(ra["paths"]) == list(rb["paths"]) and np.array_equal(ra["y"], rb["y"])
    assert np.abs(ra["X"] - rb["X"]).max() < 1e-5
    # Same cache key: extracting to the merged path is a cache hit.
    assert extract(cfg(Path(a.provenance["config"]["data"]), out)).status == "hit"


def test_merge_refusals(shards, data, tmp_path):
    ref, parts = shards
    with pytest.raises(StoreError, match="missing shard.*1/3"):
        merge([parts[0], parts[2]], tmp_path / "m.h5")
    with pytest.raises(StoreError, match="given twice"):
        merge([parts[0], parts[0], parts[1], parts[2]], tmp_path / "m.h5")
    with pytest.raises(StoreError, match="not a shard"):
        merge([ref, parts[1]], tmp_path / "m.h5")
    other = tmp_path / "other.h5"
    extract(cfg(data, other, shard="1/3", pools=("max",), layers=("_bn1",)))
    with pytest.raises(StoreError, match="differs in: .*features"):
        merge([parts[0], other, parts[2]], tmp_path / "m.h5")
    four = tmp_path / "four.h5"
    extract(cfg(data, four, shard="3/4"))
    with pytest.raises(StoreError, match="different splits into N"):
        merge([*parts, four], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
