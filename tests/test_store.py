"""The HDF5 store: write/read-back, cache hit, resume, refusal, locking, corrupt files."""

import json

import h5py
import numpy as np
import pytest

from featcache.store import (
    FeatureSpec,
    Manifest,
    StoreError,
    open_for_write,
    partial_path,
    read_info,
    read_rows,
    resolve_feature,
    write_lock,
)

FEATS = [FeatureSpec("fc", "input", "none", 4), FeatureSpec("layer4", "output", "avgmax", 6, (3, 2, 2))]


def manifest(n=10):
    return Manifest("/data", [f"img{i}.jpg" for i in range(n)], np.arange(n) % 2,
                    ["train"] * (n - 3) + ["val"] * 3, ["ants", "bees"], "fp")


def open_(path, key="k1", m=None, **kw):
    m = m or manifest()
    return open_for_write(path, m, FEATS, cache_key=key, spec={"backbone": key}, provenance={"p": 1},
                          default_feature=FEATS[0].key, **kw)


def rows_of(n, start=0):
    rows = np.arange(start, start + n)
    return rows, {"fc:in/none": np.tile(rows[:, None], (1, 4)).astype("f4"),
                  "layer4/avgmax": np.tile(rows[:, None] * 10.0, (1, 6)).astype("f4")}


def test_write_read_back(tmp_path):
    out = tmp_path / "s.h5"
    with write_lock(out):
        w = open_(out)
        assert w.status == "new" and list(w.pending) == list(range(10))
        rows, feats = rows_of(5)
        w.write(rows, feats)
        assert not out.exists() and partial_path(out).exists()  # never a half file at the final path
        rows, feats = rows_of(5, 5)
        w.write(rows[::-1], {k: v[::-1] for k, v in feats.items()}, errors={7: "truncated JPEG"})
        w.finish()
    info = read_info(out)
    assert info.complete and info.n_rows == 10 and info.n_ok == 9
    assert info.errors == [("img7.jpg", "truncated JPEG")]
    assert info.features == {"fc:in/none": 4, "layer4/avgmax": 6}
    assert info.class_names == ["ants", "bees"] and info.split_counts == {"train": 7, "val": 2}
    data = read_rows(out, chunk_rows=3)  # several chunks
    assert list(data["rows"]) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert np.array_equal(data["X"][:, 0], data["rows"].astype("f4"))
    assert list(data["y"]) == [r % 2 for r in data["rows"]]
    val = read_rows(out, feature="layer4", splits=["val"])
    assert list(val["rows"]) == [8, 9] and val["X"][0, 0] == 80
    with h5py.File(out) as f:
        assert f["features/layer4/avgmax"].chunks is not None
        assert json.loads(f["features/layer4/avgmax"].attrs["raw_shape"]) == [3, 2, 2]


def test_cache_hit_resume_and_refusal(tmp_path):
    out = tmp_path / "s.h5"
    with write_lock(out):
        w = open_(out)
        w.write(*rows_of(4))
        w.close()  # interrupted
        w = open_(out)
        assert w.status == "resume" and list(w.pending) == [4, 5, 6, 7, 8, 9]
        w.write(*rows_of(6, 4))
        w.finish()
        assert open_(out).status == "hit"
        with pytest.raises(StoreError, match="another spec.*--overwrite"):
            open_(out, key="k2")
        before = out.read_bytes()
        assert out.read_bytes() == before  # refusal leaves the old store alone
        w = open_(out, key="k2", overwrite=True)
        assert w.status == "new" and out.read_bytes() == before  # old store kept until the new one completes
        w.close()


def test_partial_of_other_spec_is_not_discarded_silently(tmp_path):
    out = tmp_path / "s.h5"
    with write_lock(out):
        open_(out).close()
        with pytest.raises(StoreError, match="unfinished extraction"):
            open_(out, key="other")


def test_incomplete_refused_unless_allowed(tmp_path):
    out = tmp_path / "s.h5"
    with write_lock(out):
        w = open_(out)
        w.write(*rows_of(3))
        w.close()
    with pytest.raises(StoreError, match="--allow-partial"):
        read_rows(out)
    assert len(read_rows(out, allow_partial=True)["rows"]) == 3


def test_lock_refuses_second_writer(tmp_path):
    out = tmp_path / "s.h5"
    with write_lock(out):
        with pytest.raises(StoreError, match="another process"):
            with write_lock(out):
                pass


@pytest.mark.parametrize("content", [b"", b"hello, not hdf5", None])
def test_corrupt_or_foreign_file_is_a_clear_error(tmp_path, content):
    out = tmp_path / "bad.h5"
    if content is None:  # an HDF5 file, but not ours
        with h5py.File(out, "w") as f:
            f["x"] = 1
    else:
        out.write_bytes(content)
    with pytest.raises(StoreError, match="bad.h5"):
        read_info(out)
    with pytest.raises(StoreError, match="bad.h5.*--overwrite"):
        open_(out)


def test_truncated_store_is_a_clear_error(tmp_path):
    out = tmp_path / "s.h5"
    with write_lock(out):
        w = open_(out)
        w.write(*rows_of(10))
        w.finish()
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="s.h5"):
        read_rows(out)


def test_resolve_feature_names(tmp_path):
    out = tmp_path / "s.h5"
    with write_lock(out):
        w = open_(out)
        w.write(*rows_of(10))
        w.finish()
    info = read_info(out)
    assert resolve_feature(info, None) == "fc:in/none"
    assert resolve_feature(info, "fc") == "fc:in/none"
    assert resolve_feature(info, "layer4/avgmax") == "layer4/avgmax"
    with pytest.raises(StoreError, match="no feature set 'layer3'"):
        resolve_feature(info, "layer3")


def test_missing_output_dir(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_(tmp_path / "nope" / "s.h5")
