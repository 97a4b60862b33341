"""Tar shards (webdataset layout) as a source: spec expansion, manifests, member reads, and a shard
copy of a folder extracting to the same store (rows, features, error rows, resume, cache hit)."""

import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract.images import ImageError, load_image
from extract.runner import ExtractConfig, extract
from extract.sources import SourceError, build_manifest, fingerprint
from extract.tarsource import expand_braces, expand_spec, is_shard_spec
from featcache.report.images import GREY, load_tile
from featcache.store import partial_path, read_info, read_rows
from featcache.store.tar_members import (
    Member,
    MemberMissing,
    _fast_members,
    member_name,
    open_source,
    read_member,
    split_member_path,
)
from tests.samples import copy_sample

ROOT = Path(__file__).resolve().parents[1]


def jpeg(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def write_shard(path: Path, members: list[tuple[str, bytes]], mtime: int = 1_700_000_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), mtime
            tf.addfile(ti, io.BytesIO(data))
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# --- spec parsing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("s/train-{000..003}.tar", ["s/train-000.tar", "s/train-001.tar", "s/train-002.tar", "s/train-003.tar"]),
    ("{08..10}", ["08", "09", "10"]),
    ("{9..11}", ["9", "10", "11"]),
    ("{3..1}", ["3", "2", "1"]),
    ("{0..6..3}", ["0", "3", "6"]),
    ("{train,val}-{0..1}.tar", ["train-0.tar", "train-1.tar", "val-0.tar", "val-1.tar"]),
    ("x{a,{b,c}}y", ["xay", "xby", "xcy"]),
    ("{x}-{1,2}", ["{x}-1", "{x}-2"]),
    ("a{b", ["a{b"]),
    ("plain.tar", ["plain.tar"]),
])
def test_expand_braces(text, expected):
    assert expand_braces(text) == expected


def test_is_shard_spec():
    assert is_shard_spec("shards/train-{000..009}.tar") and is_shard_spec("s/*.TAR") and is_shard_spec("a.tar.gz")
    assert not is_shard_spec("data/sample") and not is_shard_spec("labels.csv") and not is_shard_spec("{a.tar,b}")


def test_expand_spec_keeps_brace_order_then_sorted_globs_without_duplicates(tmp_path):
    for n in ("b-1.tar", "b-0.tar", "a-0.tar", "c.tar"):
        touch(tmp_path / n)
    got = expand_spec(f"{tmp_path}/{{c,b-*,a-0,b-0}}.tar")
    assert [p.name for p in got] == ["c.tar", "b-0.tar", "b-1.tar", "a-0.tar"]


def test_missing_shard_and_no_glob_match_are_named(tmp_path):
    touch(tmp_path / "s-000.tar")
    with pytest.raises(SourceError, match=r"shard not found: .*s-001\.tar$"):
        build_manifest(f"{tmp_path}/s-{{000..001}}.tar")
    with pytest.raises(SourceError, match=r"no file matches .*x-\*\.tar"):
        build_manifest(f"{tmp_path}/x-*.tar")


def test_compressed_and_non_tar_shards_are_refused(tmp_path):
    with pytest.raises(SourceError, match="compressed.*uncompressed .tar"):
        build_manifest(tmp_path / "s.tar.gz")
    plain = write_shard(tmp_path / "p.tar", [("a.jpg", jpeg())])
    (tmp_path / "z.tar").write_bytes(gzip.compress(plain.read_bytes()))  # a gzip stream named .tar
    with pytest.raises(SourceError, match=r"z\.tar is gzip-compressed; compressed shards cannot be read by offset"):
        build_manifest(tmp_path / "z.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(SourceError, match=r"junk\.tar is not a tar file"):
        build_manifest(tmp_path / "junk.tar")


def test_a_folder_named_like_a_shard_is_still_a_folder(tmp_path):
    d = tmp_path / "imgs.tar"
    (d / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(d / "cats" / "a.jpg")
    assert build_manifest(d).paths == ["cats/a.jpg"]


# --- manifests ------------------------------------------------------------------------------------

def test_cls_labels_split_from_member_folders_and_shard_paths(tmp_path):
    write_shard(tmp_path / "s" / "part-0.tar", [
        ("train/ants/1.jpg", jpeg()), ("train/ants/1.cls", b"ants\n"),
        ("train/bees/2.seg.png", b"mask"), ("train/bees/2.JPG", jpeg()), ("train/bees/2.png", jpeg()),
        ("train/bees/2.cls", b"bees"), ("notes.txt", b"x"), ("._3.jpg", b"apple double"),
    ])
    write_shard(tmp_path / "s" / "part-1.tar", [("val/bees/3.cls", b" bees "), ("val/bees/3.jpeg", jpeg())])
    m = build_manifest(tmp_path / "s" / "part-?.tar")
    assert m.root == str((tmp_path / "s").resolve())
    assert m.paths == ["part-0.tar/train/ants/1.jpg", "part-0.tar/train/bees/2.JPG", "part-1.tar/val/bees/3.jpeg"]
    assert m.class_names == ["ants", "bees"] and list(m.labels) == [0, 1, 1]
    assert m.splits == ["train", "train", "val"]
    assert build_manifest(tmp_path / "s" / "part-?.tar").fingerprint == m.fingerprint


def test_integer_cls_labels_sort_numerically_and_shard_names_give_splits(tmp_path):
    write_shard(tmp_path / "train-000.tar", [("a.cls", b"10"), ("a.jpg", jpeg()), ("b.jpg", jpeg()), ("b.cls", b"2"),
                                             ("c.jpg", jpeg()), ("c.cls", b"002")])
    write_shard(tmp_path / "val_1.tar", [("d.jpg", jpeg()), ("d.cls", b"10")])
    m = build_manifest(f"{tmp_path}/{{train-000,val_1}}.tar")
    assert m.class_names == ["2", "10"]
    assert list(m.labels) == [1, 0, 0, 1] and m.splits == ["train", "train", "train", "val"]


def test_json_labels_and_split_field(tmp_path):
    meta = lambda **kw: json.dumps(kw).encode()
    write_shard(tmp_path / "shard.tar", [
        ("k1.jpg", jpeg()), ("k1.json", meta(label="cat", split="train")),
        ("k2.jpg", jpeg()), ("k2.json", meta(category="dog", split="train")),
        ("k3.jpg", jpeg()), ("k3.json", meta(cls="dog", split="TEST", caption="ignored")),
        ("train/k4.jpg", jpeg()), ("train/k4.json", meta(target="cat")),
    ])
    m = build_manifest(tmp_path / "shard.tar")
    assert m.class_names == ["cat", "dog"] and list(m.labels) == [0, 1, 1, 0]
    assert m.splits == ["train", "train", "test", "train"]


def test_unlabeled_shards_are_split_all(tmp_path):
    write_shard(tmp_path / "u.tar", [("x/1.jpg", jpeg()), ("x/2.webp", b"w"), ("x/2.txt", b"t")])
    m = build_manifest(tmp_path / "u.tar")
    assert m.paths == ["u.tar/x/1.jpg", "u.tar/x/2.webp"] and list(m.labels) == [-1, -1]
    assert m.splits == ["all", "all"] and m.class_names == []


@pytest.mark.parametrize("members, message", [
    ([("a.jpg", jpeg()), ("a.cls", b"cat"), ("b.jpg", jpeg())], r"s\.tar:b has no label"),
    ([("a.jpg", jpeg()), ("a.json", b"{oops")], r"s\.tar:a\.json: invalid JSON"),
    ([("a.jpg", jpeg()), ("a.json", b"[1, 2]")], r"s\.tar:a\.json: JSON is a list"),
    ([("a.jpg", jpeg()), ("a.json", b'{"label": "x", "split": "dev"}')], r"split 'dev' is not one of"),
    ([("a.jpg", jpeg()), ("a.cls", b"  ")], r"s\.tar:a\.cls: empty label"),
    ([("a.jpg", jpeg()), ("a.jpg", jpeg())], r"member a\.jpg appears twice"),
    ([("a.jpg", jpeg()), ("a.cls", b"cat"), ("val/b.jpg", jpeg()), ("val/b.cls", b"dog")],
     r"class 'dog' \(.*s\.tar:val/b\) appears in val but has no train rows"),
    ([("a.txt", b"x")], r"no image members in 1 shard"),
])
def test_bad_shards_are_one_line_errors(tmp_path, members, message):
    write_shard(tmp_path / "s.tar", members)
    with pytest.raises(SourceError, match=message) as e:
        build_manifest(tmp_path / "s.tar")
    assert "\n" not in str(e.value)


def test_a_key_in_two_shards_names_both(tmp_path):
    write_shard(tmp_path / "s-0.tar", [("k/1.jpg", jpeg()), ("k/2.jpg", jpeg())])
    write_shard(tmp_path / "s-1.tar", [("k/2.png", jpeg())])
    with pytest.raises(SourceError, match=r"key k/2 is in both .*s-0\.tar and .*s-1\.tar"):
        build_manifest(tmp_path / "s-{0..1}.tar")


def test_fingerprint_changes_when_a_shard_is_rewritten(tmp_path):
    shard = write_shard(tmp_path / "s.tar", [("a.jpg", jpeg()), ("a.cls", b"cat")])
    m = build_manifest(shard)
    rows = lambda m: fingerprint(Path(m.root), m.paths, m.labels, m.splits)  # what int8 calibration hashes
    before, rows_before = m.fingerprint, rows(m)
    assert build_manifest(shard).fingerprint == before and rows(build_manifest(shard)) == rows_before
    write_shard(shard, [("a.jpg", jpeg((0, 0, 255))), ("a.cls", b"cat")])  # same member names, new pixels
    os.utime(shard, ns=(10**18, 10**18))  # a new mtime even on a coarse clock
    m = build_manifest(shard)
    assert m.fingerprint != before and rows(m) != rows_before


# --- reading members ------------------------------------------------------------------------------

def test_members_read_by_offset_and_their_errors(tmp_path):
    shard = write_shard(tmp_path / "s.tar", [("./d/a.jpg", jpeg((0, 255, 0))), ("d/empty.jpg", b""),
                                             ("d/bad.jpg", b"\xff\xd8\xff\xe0 not really")])
    assert split_member_path(shard / "d" / "a.jpg") == (shard, "d/a.jpg")
    assert split_member_path(tmp_path / "d" / "a.jpg") is None
    img = load_image(shard / "d" / "a.jpg")
    assert img.size == (40, 30) and img.getpixel((20, 15))[1] > 200
    for name, reason in [("d/nope.jpg", "file not found in shard s.tar"), ("d/empty.jpg", "empty file (0 bytes)")]:
        with pytest.raises(ImageError, match=re.escape(reason)):
            load_image(shard / name)
    with pytest.raises(ImageError, match="corrupt|truncated|not an image"):
        load_image(shard / "d" / "bad.jpg")
    with pytest.raises(MemberMissing, match="not in shard"):
        read_member(shard, "d/nope.jpg")
    (tmp_path / "plain.bin").write_bytes(b"abc")
    with open_source(tmp_path / "plain.bin") as f:
        assert f.read() == b"abc"


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_fast_header_scan_agrees_with_tarfile(tmp_path, fmt):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, data in [("a.jpg", b"x" * 700), ("d/" * 60 + "long.jpg", b"y"), ("empty.jpg", b""),
                           ("ünï/cödé.jpg", b"z" * 513), ("./dot/b.cls", b"1")]:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 1_234_567_890
            tf.addfile(ti, io.BytesIO(data))
        for kind, name in [(tarfile.DIRTYPE, "dir"), (tarfile.SYMTYPE, "link.jpg"), (tarfile.LNKTYPE, "hard.jpg")]:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, "a.jpg"
            tf.addfile(ti)
    with tarfile.open(path) as tf:
        expected = [(member_name(t.name), Member(t.offset_data, t.size, int(t.mtime))) for t in tf if t.isreg()]
    with open(path, "rb") as f:
        assert _fast_members(f, path.stat().st_size) == expected
    assert [n for n, _ in expected] == ["a.jpg", "d/" * 60 + "long.jpg", "empty.jpg", "ünï/cödé.jpg", "dot/b.cls"]


def test_a_truncated_shard_fails_only_its_cut_member(tmp_path):
    shard = write_shard(tmp_path / "s.tar", [("a.jpg", jpeg()), ("b.jpg", jpeg((0, 0, 0), (300, 300)))])
    with tarfile.open(shard) as tf:
        cut = tf.getmember("b.jpg").offset_data + 100
    with open(shard, "r+b") as f:
        f.truncate(cut)
    m = build_manifest(shard)
    assert m.paths == ["s.tar/a.jpg", "s.tar/b.jpg"]
    assert load_image(shard / "a.jpg").size == (40, 30)
    with pytest.raises(ImageError, match=r"truncated shard: b\.jpg has 100 of its \d+ bytes"):
        load_image(shard / "b.jpg")


def test_a_rewritten_shard_is_rescanned(tmp_path):
    shard = write_shard(tmp_path / "s.tar", [("a.bin", b"one")])
    assert read_member(shard, "a.bin") == b"one"
    write_shard(shard, [("pad.bin", b"x" * 5000), ("a.bin", b"second")])
    os.utime(shard, ns=(10**18, 10**18))  # a new mtime even on a coarse clock
    assert read_member(shard, "a.bin") == b"second"


def test_report_thumbnail_of_a_shard_member(tmp_path):
    shard = write_shard(tmp_path / "s.tar", [("a/1.jpg", jpeg((20, 40, 220), (120, 90)))])
    tile = load_tile(shard / "a" / "1.jpg", size=32)
    assert tile.problem is None and tile.pixels.shape == (32, 32, 3)
    assert abs(int(tile.pixels[16, 16, 2]) - 220) < 10 and not (tile.pixels == GREY).all()
    assert load_tile(shard / "a" / "2.jpg").problem == "missing"


# --- a shard copy of a folder extracts to the same store ------------------------------------------

def shard_copy(folder: Path, out: Path) -> str:
    """The folder's images and class names as two webdataset shards, in the folder manifest's order."""
    m = build_manifest(folder)
    members = []
    for p, y in zip(m.paths, m.labels):
        members += [(p, (folder / p).read_bytes()), (p.rsplit(".", 1)[0] + ".cls", m.class_names[y].encode())]
    half = len(members) // 4 * 2
    write_shard(out / "part-000.tar", members[:half])
    write_shard(out / "part-001.tar", members[half:])
    return f"{out}/part-{{000..001}}.tar"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("tarsource")
    folder = copy_sample(d / "imgs", 2, broken="train/bees/zz_broken.jpg")
    return folder, shard_copy(folder, d / "shards"), d


def cfg(data, out, **kw):
    return ExtractConfig(data=str(data), backbone="efficientnet_lite0", out=str(out), batch_size=2, workers=0,
                         progress=False, precision="fp32", **kw)


def test_cli_extract_of_shards_equals_the_folder(pair):
    folder, spec, d = pair
    run = lambda data, out: subprocess.run(
        [sys.executable, str(ROOT / "pipeline.py"), "extract", "--data", str(data), "--backbone", "efficientnet_lite0",
         "--out", str(out), "--workers", "0", "--batch-size", "4", "--precision", "fp32"],
        capture_output=True, text=True)
    for data, out in ((folder, d / "folder.h5"), (spec, d / "shards.h5")):
        r = run(data, out)
        assert r.returncode == 0, r.stderr
        assert "wrote 9 rows" in r.stdout and "skipped 1" in r.stdout
    a, b = read_info(d / "folder.h5"), read_info(d / "shards.h5")
    assert a.class_names == b.class_names == ["ants", "bees"]
    assert b.source_root == str((d / "shards").resolve())
    x, y = read_rows(d / "folder.h5"), read_rows(d / "shards.h5")
    assert len(y["paths"]) == 8
    assert [p.split(".tar/", 1)[1] for p in y["paths"]] == list(x["paths"])
    assert list(y["y"]) == list(x["y"]) and list(y["split"]) == list(x["split"])
    assert np.allclose(x["X"], y["X"], rtol=0, atol=1e-6) and np.isfinite(y["X"]).all()
    assert [(p.split(".tar/", 1)[-1], msg) for p, msg in b.errors] == a.errors
    assert a.errors[0][0] == "train/bees/zz_broken.jpg" and a.errors[0][1]
    assert a.cache_key != b.cache_key


def test_resume_over_shards_is_identical_and_a_rerun_is_a_hit(pair, monkeypatch):
    _, spec, d = pair
    ref = d / "ref.h5"
    extract(cfg(spec, ref))

    from featcache import store

    out = d / "resumed.h5"
    real_write, calls = store.StoreWriter.write, []

    def flaky_write(self, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C after two flushed batches
        calls.append(1)
        return real_write(self, *a, **k)

    monkeypatch.setattr(store.StoreWriter, "write", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        extract(cfg(spec, out))
    assert not out.exists() and partial_path(out).exists() and read_info(out).n_done == 4
    monkeypatch.setattr(store.StoreWriter, "write", real_write)
    s = extract(cfg(spec, out))
    assert s.status == "resume" and s.written == 5
    a, b = read_rows(ref), read_rows(out)
    assert list(a["paths"]) == list(b["paths"]) and np.abs(a["X"] - b["X"]).max() < 1e-6
    assert read_info(out).errors == read_info(ref).errors
    assert extract(cfg(spec, out)).status == "hit"
