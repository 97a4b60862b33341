"""A soft vote saved as one model file (issue 37): ``run`` writes it, ``predict`` runs it with one
forward pass per backbone, and a changed file is refused in one line. One small two-backbone run
is shared by every test (the run is the slow part; each test then takes a few seconds)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from classify.ensembles import soft_vote
from classify.persist import SavedVote, load_model, load_saved, save_model, sha256_file, sidecar_path, vote_of
from classify.table import summary_lines
from featcache.cli import main
from featcache.driver import predict as predict_mod
from featcache.driver.config import resolve
from featcache.driver.ensembles import save_vote
from featcache.driver.run import run
from tests.samples import BROKEN_JPEG, copy_sample

pytestmark = pytest.mark.slow
BACKBONES = ["efficientnet_lite0", "efficientnet_lite1"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """(work folder, run rows): logreg and knn-dino on two Lite backbones, 3 images per class and split;
    scored on val and fitted on train, so the saved models are the ones val scored."""
    tmp = tmp_path_factory.mktemp("vote")
    data = copy_sample(tmp / "imgs", 3)
    cfg = resolve({"models": ["logreg", "knn-dino"], "few_shot": False, "audit": False, "select": "val",
                   "final_fit": "train", "backbones": BACKBONES},
                  {"data": str(data), "out": str(tmp / "run"), "cache_dir": str(tmp / "cache")})
    return tmp, run(cfg, progress=False).rows


def read_csv(path: Path) -> dict[str, dict]:
    """The predicted rows by path (error rows left out)."""
    with open(path, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f) if not r["error"]}


def probs(rows: dict[str, dict]) -> np.ndarray:
    return np.array([[float(r["p_ants"]), float(r["p_bees"])] for _, r in sorted(rows.items())])


def accuracy(rows: dict[str, dict], paths: list[str]) -> float:
    """Share of ``paths`` whose predicted class is their folder's name."""
    return float(np.mean([rows[p]["predicted"] == Path(p).parent.name for p in paths]))


def cli(*argv: str) -> int:
    return main(["-q", *argv])


def two_backbone_vote(rows: list) -> object:
    """The run's soft vote with members on both backbones."""
    votes = [r for r in rows if r.kind == "soft-vote"]
    return next(r for r in votes if {m.split(" on ")[1].split(" ")[0] for m in r.members} == set(BACKBONES))


def one_store_vote(rows: list, folder: Path):
    """A vote of Lite0's two models (both read one store), saved as the run saves its votes."""
    members = [r for r in rows if r.kind == "model" and r.backbone == BACKBONES[0]]
    return save_vote(soft_vote(members, feature="lite0 pair"), members, folder), members


def test_run_saves_each_vote_as_one_model_file(done):
    tmp, rows = done
    votes = [r for r in rows if r.kind == "soft-vote"]
    assert votes and all(r.model_path for r in votes)
    for r in votes:
        path = Path(r.model_path)
        assert path.parent == tmp / "run" / "classify" / "ensembles" and path.suffix == ".skops"
        assert sidecar_path(path).read_text().split()[0] == sha256_file(path)
        saved = load_saved(path)
        assert isinstance(saved, SavedVote) and saved.labels == r.members and saved.name == r.model
        with pytest.raises(ValueError, match="a soft vote of .* models, not one model; `predict` runs it"):
            load_model(path)  # the one-estimator callers never get a vote by mistake
    text = "\n".join(summary_lines(rows))  # rank 1, a vote or not, is predicted with its own file
    assert Path(rows[0].model_path).name in text and "best member" not in text


def test_vote_predicts_its_members_average_with_one_pass_per_backbone(done, monkeypatch):
    tmp, rows = done
    vote = two_backbone_vote(rows)
    passes = []
    execute = predict_mod.execute
    monkeypatch.setattr(predict_mod, "execute", lambda p, *a: passes.append(p.cfg.backbone) or execute(p, *a))
    (tmp / "new").mkdir(exist_ok=True)
    (tmp / "new" / "broken.jpg").write_bytes(BROKEN_JPEG)
    images = [str(tmp / "imgs" / "val"), str(tmp / "new" / "broken.jpg")]
    out = predict_mod.predict(vote.model_path, images, str(tmp / "vote.csv"))
    assert sorted(passes) == BACKBONES and out["extractions"] == 2 and out["members"] == len(vote.members)
    assert out["errors"] == 1 and out["rows"] == vote.val["n"]  # the unreadable image listed once, not per backbone
    got = read_csv(tmp / "vote.csv")
    by_label = {r.label: r for r in rows}
    each = []
    for i, label in enumerate(vote.members):
        predict_mod.predict(by_label[label].model_path, images, str(tmp / f"m{i}.csv"))
        each.append(probs(read_csv(tmp / f"m{i}.csv")))
    assert np.abs(probs(got) - np.mean(each, axis=0)).max() < 2e-6  # 6 decimals in each CSV
    assert accuracy(got, list(got)) == pytest.approx(vote.val["accuracy"])  # the vote row's val accuracy


def test_vote_on_its_store_reproduces_its_val_accuracy(done, capsys):
    tmp, rows = done
    vote, members = one_store_vote(rows, tmp / "pair")
    store = members[0].store
    assert cli("predict", "--model", vote.model_path, "--features", store, "--out", str(tmp / "pair.csv")) == 0
    got = read_csv(tmp / "pair.csv")
    val = [p for p in got if p.startswith("val/")]
    assert len(val) == vote.val["n"] and accuracy(got, val) == pytest.approx(vote.val["accuracy"])
    # A vote across two backbones reads no single store: one line names the member that differs.
    capsys.readouterr()
    assert cli("predict", "--model", two_backbone_vote(rows).model_path, "--features", store,
               "--out", str(tmp / "x.csv")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: soft-vote member ") and "efficientnet_lite" in err and "\n" not in err


def test_changed_vote_file_or_member_is_refused_in_one_line(done, capsys, caplog):
    tmp, rows = done
    vote, members = one_store_vote(rows, tmp / "refuse")
    path, out = Path(vote.model_path), str(tmp / "r.csv")
    good = path.read_bytes()
    raw = bytearray(good)
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    capsys.readouterr()
    assert cli("predict", "--model", str(path), "--features", members[0].store, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match its sidecar" in err and "\n" not in err
    path.write_bytes(good)
    # A vote whose member is of a type outside the allow-list, with an honest sidecar: nothing is built.
    hostile = vote_of([load_model(members[0].model_path)] * 2, ["a", "b"])
    hostile.members[1] = Hostile()
    save_model(hostile, tmp / "refuse" / "hostile.skops")
    assert cli("predict", "--model", str(tmp / "refuse" / "hostile.skops"), "--features", members[0].store,
               "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert "names types this tool does not trust (" in err and "Hostile)" in err and "\n" not in err
    # A member resumed from an earlier run is read from its file, verified: a changed one leaves the
    # vote without a file (one warning line), and the summary falls back to its best member.
    resumed = [replace(r, fitted=None) for r in members]
    again = save_vote(replace(vote, model_path=None), resumed, tmp / "resumed")
    assert again.model_path and load_saved(again.model_path).labels == vote.members
    member = Path(resumed[1].model_path)
    kept = member.read_bytes()
    member.write_bytes(kept + b"\0")
    try:
        with caplog.at_level("WARNING"):
            lost = save_vote(replace(vote, model_path=None), resumed, tmp / "changed")
    finally:
        member.write_bytes(kept)  # the run's file, which other tests read
    assert lost.model_path is None and not (tmp / "changed").exists()
    (warning,) = [r.getMessage() for r in caplog.records if "not saved as a model file" in r.getMessage()]
    assert member.name in warning and "does not match its sidecar" in warning and "\n" not in warning
    # The vote saved before the change holds its members: it still predicts, unchanged.
    assert cli("predict", "--model", vote.model_path, "--features", members[0].store, "--out", out) == 0


class Hostile:
    """A type no allow-list names."""
