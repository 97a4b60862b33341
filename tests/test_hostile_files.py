"""Every loader of a user-supplied file, given a hostile one: refused in one line (exit 2), and the
code the file names never runs (each hostile file would create ``pwned`` if it did).

Models (skops and pickles) are in test_classify_persist.py; here: configs, weights files,
fine-tuned checkpoints, warm-start models, stores, results and audit files, tar shards.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import pytest

import pipeline

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


class Touch:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.fixture
def hostile(tmp_path: Path):
    """(write(name) -> a pickle that creates the marker when loaded, marker)."""
    marker = tmp_path / "pwned"

    def write(name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Touch(marker)))
        return path

    return write, marker


def one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_a_config_with_a_python_tag_is_refused(tmp_path, capsys, hostile):
    _, marker = hostile
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: !!python/object/apply:pathlib.Path.touch ['{marker}']\nout: {tmp_path / 'r'}\n")
    one_line_error(capsys, pipeline.main(["run", "--config", str(cfg)]), str(cfg), "cannot parse")
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_a_weights_file_holding_code_is_refused(tmp_path, capsys, hostile):
    write, marker = hostile
    evil = write("weights.pt")
    code = pipeline.main(["extract", "--data", str(SAMPLE), "--backbone", "resnet18", "--weights", str(evil),
                          "--out", str(tmp_path / "o.h5"), "-q"])
    line = one_line_error(capsys, code, str(evil), "refused", "nothing in it was run")
    assert "weights_only" not in line  # torch's advice to load it unsafely is not passed on
    assert not marker.exists() and not (tmp_path / "o.h5").exists()


def test_a_finetuned_checkpoint_holding_code_is_refused(tmp_path, capsys, hostile):
    write, marker = hostile
    evil = write("best.pt")
    code = pipeline.main(["predict", "--model", str(evil), str(SAMPLE / "val"), "--out", str(tmp_path / "p.csv")])
    one_line_error(capsys, code, str(evil), "refused")
    assert not marker.exists() and not (tmp_path / "p.csv").exists()


def test_a_warm_start_model_holding_code_is_refused(tmp_path, hostile):
    from classify.persist import load_model, sha256_file, sidecar_path

    write, marker = hostile
    evil = write("m.skops")
    sidecar_path(evil).write_text(f"{sha256_file(evil)}  m.skops\n")
    from featcache.finetune.warmstart import load_warm_start

    with pytest.raises(ValueError, match="not a skops model but a pickle"):
        load_warm_start(evil, None, ["a", "b"])  # refused before the backbone is looked at
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_model(evil)
    assert not marker.exists()


@pytest.mark.parametrize("command", [["info"], ["classify", "--features"], ["audit"], ["export", "--format", "npy"]])
def test_a_pickle_named_like_a_store_is_refused(tmp_path, capsys, hostile, command):
    write, marker = hostile
    evil = write("f.h5")
    argv = [*command, str(evil)] if command[-1] != "--features" else [*command, str(evil)]
    argv += ["--out", str(tmp_path / "o")] if command[0] != "info" else []
    one_line_error(capsys, pipeline.main(argv), str(evil), "not a readable HDF5 feature store")
    assert not marker.exists()


def test_a_store_with_hostile_attributes_is_refused(tmp_path, capsys, make_store):
    """An HDF5 file runs no code, but its JSON attributes and shapes are read: garbage there is
    one line, not a traceback."""
    import h5py

    store = make_store(6, 2, 4)
    with h5py.File(store, "r+") as f:
        f.attrs["spec"] = "{'__import__': 'os'}"  # not JSON
    code = pipeline.main(["classify", "--features", str(store), "--out", str(tmp_path / "c"), "--models", "logreg"])
    one_line_error(capsys, code, str(store))


def test_results_and_audit_files_are_data_only(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"results": {"__reduce__": "os.system"}}))
    one_line_error(capsys, pipeline.main(["report", str(run)]), "results.json", "'results' is dict, expected list")
    from featcache.report.audit import load_audits

    (run / "report").mkdir()
    (run / "report" / "audit.json").write_text("{not json")
    assert load_audits(run) == {}  # a broken audit is left out of the report, with a warning
    (run / "report" / "audit.json").write_text(json.dumps(["a", "list"]))
    assert load_audits(run) == {}


def test_a_tar_member_named_outside_the_shard_is_refused(tmp_path):
    """Shards are never unpacked, and a member called ``../../x.jpg`` is refused in one line naming the
    shard and the member: no file outside the shard is read or written."""
    from PIL import Image

    from extract.sources import SourceError, build_manifest

    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 10, 10)).save(buf, "JPEG")
    outside = tmp_path / "x.jpg"
    Image.new("RGB", (24, 24), (10, 200, 10)).save(outside)  # what a traversal would read instead
    shard = tmp_path / "shards" / "train-000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tf:
        for name, data in (("../../x.jpg", buf.getvalue()), ("../../x.cls", b"red")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SourceError) as e:
        build_manifest(str(tmp_path / "shards" / "train-{000..000}.tar"))
    msg = str(e.value)
    assert "train-000.tar" in msg and "../../x.jpg" in msg and "\n" not in msg
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
