"""Image sources: split folders, one tree, CSV (Kaggle-style ids), unlabeled; and their errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract.sources import SourceError, build_manifest, from_files


def img(path: Path, color=(200, 30, 30), size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_split_folders(tmp_path):
    for split, cls, name in [("train", "ants", "a.jpg"), ("train", "bees", "B.JPG"), ("val", "bees", "c.png"),
                             ("val", "ants", "d.jpeg"), ("test", "ants", "e.jpg")]:
        img(tmp_path / split / cls / name)
    (tmp_path / "train" / "ants" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "train" / "ants" / "notes.txt").write_text("x")
    m = build_manifest(tmp_path)
    assert m.class_names == ["ants", "bees"]
    assert m.paths == ["train/ants/a.jpg", "train/bees/B.JPG", "val/ants/d.jpeg", "val/bees/c.png", "test/ants/e.jpg"]
    assert list(m.labels) == [0, 1, 0, 1, 0]
    assert m.splits == ["train", "train", "val", "val", "test"]
    assert build_manifest(tmp_path).fingerprint == m.fingerprint  # deterministic


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    img(tmp_path / "train" / "ants" / "a.jpg")
    before = build_manifest(tmp_path).fingerprint
    img(tmp_path / "train" / "ants" / "a.jpg", color=(0, 0, 0), size=(41, 30))
    assert build_manifest(tmp_path).fingerprint != before


def test_class_in_val_not_train_is_named(tmp_path):
    img(tmp_path / "train" / "ants" / "a.jpg")
    img(tmp_path / "val" / "wasps" / "w.jpg")
    with pytest.raises(SourceError, match="'wasps'"):
        build_manifest(tmp_path)


def test_single_tree_and_unlabeled(tmp_path):
    img(tmp_path / "tree" / "cats" / "1.jpg")
    img(tmp_path / "tree" / "dogs" / "2.jpg")
    m = build_manifest(tmp_path / "tree")
    assert m.class_names == ["cats", "dogs"] and m.splits == ["train", "train"]
    img(tmp_path / "flat" / "x.jpg")
    img(tmp_path / "flat" / "y.png")
    u = build_manifest(tmp_path / "flat")
    assert list(u.labels) == [-1, -1] and u.splits == ["all", "all"] and u.class_names == []


def test_missing_or_empty_dir(tmp_path):
    with pytest.raises(SourceError, match="no such directory"):
        build_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images found"):
        build_manifest(tmp_path / "empty")


def test_csv_kaggle_style_ids(tmp_path):
    img(tmp_path / "train" / "000bec.jpg")
    img(tmp_path / "train" / "001513.jpg")
    img(tmp_path / "train" / "0021f9.jpg")
    (tmp_path / "labels.csv").write_text("id,breed\n001513,dingo\n000bec,boston_bull\n0021f9,dingo\n")
    m = build_manifest(tmp_path / "labels.csv", image_root=tmp_path / "train")
    assert m.paths == ["000bec.jpg", "001513.jpg", "0021f9.jpg"]
    assert m.class_names == ["boston_bull", "dingo"] and list(m.labels) == [0, 1, 1]


def test_csv_with_splits(tmp_path):
    for n in "abc":
        img(tmp_path / "im" / f"{n}.jpg")
    (tmp_path / "d.csv").write_text("path,label,split\nim/c.jpg,x,val\nim/a.jpg,x,train\nim/b.jpg,y,train\n")
    m = build_manifest(tmp_path / "d.csv")
    assert m.paths == ["im/a.jpg", "im/b.jpg", "im/c.jpg"] and m.splits == ["train", "train", "val"]
    assert np.array_equal(m.labels, [0, 1, 0])


@pytest.mark.parametrize("body,match", [
    ("path,label\nim/a.jpg,x\nim/missing.jpg,y\n", r"d.csv:3: file not found"),
    ("path,label,colour\nim/a.jpg,x,red\n", r"unknown columns \['colour'\]"),
    ("path,label\nim/a.jpg,\n", r"d.csv:2: empty label"),
    ("path,label\nim/a.jpg,x\nim/a.jpg,y\n", r"d.csv:3: duplicate path"),
    ("path,label,split\nim/a.jpg,x,train\nim/b.jpg,y,val\n", r"class 'y' appears in val/test"),
    ("path,label\n../outside.jpg,x\n", r"escapes the data root"),
    ("name,label\nim/a.jpg,x\n", r"no path column"),
    ("path,label\n", r"no rows"),
])
def test_csv_errors(tmp_path, body, match):
    img(tmp_path / "im" / "a.jpg")
    img(tmp_path / "im" / "b.jpg")
    img(tmp_path.parent / "outside.jpg")
    (tmp_path / "d.csv").write_text(body)
    with pytest.raises(SourceError, match=match):
        build_manifest(tmp_path / "d.csv")


def test_csv_outside_root_allowed_with_flag(tmp_path):
    img(tmp_path.parent / "outside2.jpg")
    (tmp_path / "d.csv").write_text("path,label\n../outside2.jpg,x\n")
    m = build_manifest(tmp_path / "d.csv", allow_outside=True)
    assert m.paths[0].endswith("outside2.jpg")


def test_from_files(tmp_path):
    a = img(tmp_path / "x" / "a.jpg")
    img(tmp_path / "y" / "b.png")
    m = from_files([a, tmp_path / "y"])
    assert m.paths == ["x/a.jpg", "y/b.png"] and m.root == str(tmp_path.resolve())
    with pytest.raises(SourceError, match="no such file"):
        from_files([tmp_path / "zzz.jpg"])
