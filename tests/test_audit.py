"""``pipeline.py audit``: planted leaks and wrong labels in real photos are found, near the top."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import pipeline
from conftest import build_store

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"


def doctored_copy(dst: Path, seed: int = 0) -> tuple[set, set, set]:
    """hymenoptera with 10 exact train copies in val, 10 resized (0.8x) JPEG-70 copies in a test
    split, and 15 train photos moved to the other class -> (exact pairs, re-encoded pairs, moved)."""
    from PIL import Image

    shutil.copytree(HYMENOPTERA, dst)
    rng = random.Random(seed)
    train = sorted(p.relative_to(dst).as_posix() for p in (dst / "train").rglob("*.jpg"))
    picks = rng.sample(train, 35)
    exact, recoded, moved = set(), set(), set()
    for i, rel in enumerate(picks[:10]):
        cls = rel.split("/")[1]
        new = f"val/{cls}/leak_exact_{i}.jpg"
        shutil.copyfile(dst / rel, dst / new)
        exact.add(frozenset((rel, new)))
    for i, rel in enumerate(picks[10:20]):
        cls = rel.split("/")[1]
        new = f"test/{cls}/leak_recoded_{i}.jpg"
        (dst / new).parent.mkdir(parents=True, exist_ok=True)
        im = Image.open(dst / rel).convert("RGB")
        im.resize((int(im.width * 0.8), int(im.height * 0.8)), Image.BICUBIC).save(dst / new, quality=70)
        recoded.add(frozenset((rel, new)))
    for rel in picks[20:35]:
        cls = rel.split("/")[1]
        other = "bees" if cls == "ants" else "ants"
        new = f"train/{other}/{Path(rel).name}"
        shutil.move(dst / rel, dst / new)
        moved.add(new)
    return exact, recoded, moved


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="needs ../shared/datasets/hymenoptera")
def test_planted_leaks_and_wrong_labels_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATCACHE_HOME", str(tmp_path / "fc"))
    data = tmp_path / "hym"
    exact, recoded, moved = doctored_copy(data)
    store = tmp_path / "h.h5"
    assert pipeline.main(["extract", "-q", "--data", str(data), "--backbone", "efficientnet_lite0",
                          "--out", str(store)]) == 0
    assert pipeline.main(["audit", str(store), "--out", str(tmp_path / "audit"), "-q"]) == 0
    result = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert set(result) >= {"duplicates", "label_issues", "outliers"}

    def rel(p: str) -> str:
        return Path(p).relative_to(data).as_posix() if Path(p).is_absolute() else p

    cross = [frozenset(map(rel, d["paths"])) for d in result["duplicates"] if d["cross_split"]][:40]
    assert len(exact & set(cross)) >= 9, (result["duplicate_threshold"], cross[:12])
    assert len(recoded & set(cross)) >= 8, (result["duplicate_threshold"], cross[:25])
    top_issues = [rel(li["path"]) for li in result["label_issues"][:30]]
    assert len(moved & set(top_issues)) >= 9, top_issues
    sims = [d["similarity"] for d in result["duplicates"]]
    assert sims == sorted(sims, reverse=True)
    scores = [o["score"] for o in result["outliers"]]
    assert scores == sorted(scores, reverse=True)


def test_synthetic_duplicates_cross_splits_and_self_matches(tmp_path: Path) -> None:
    from classify.audit import _drop_self, audit

    store = build_store(tmp_path, 20, 3, 32, splits=("train", "val"))
    result = audit(store)
    assert result["rows"] == 120 and result["label_issues"] == [] or result["label_issues"][0]["score"] < 0.5
    assert all(d["similarity"] >= result["duplicate_threshold"] for d in result["duplicates"])
    # a row with an exact copy: both are each other's first neighbour, never themselves
    sims = np.array([[1.0, 1.0, 0.5], [1.0, 1.0, 0.4]])
    idx = np.array([[1, 0, 2], [0, 1, 2]])
    s, i = _drop_self(sims, idx)
    assert i.tolist() == [[1, 2], [0, 2]] and s.tolist() == [[1.0, 0.5], [1.0, 0.4]]


def test_audit_refuses_a_tiny_store_in_one_line(tmp_path: Path, capsys) -> None:
    store = build_store(tmp_path, 1, 2, 4, splits=("train",))
    assert pipeline.main(["audit", str(store), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 3 readable rows" in err


def test_label_issue_ranking_agrees_with_cleanlab() -> None:
    pytest.importorskip("cleanlab")
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from classify.audit import rank_label_issues

    rng = np.random.default_rng(0)
    n, c = 600, 4
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 2.5  # a model that mostly agrees with the labels
    flipped = rng.choice(n, 40, replace=False)
    y[flipped] = (y[flipped] + rng.integers(1, c, 40)) % c  # 40 wrong labels
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    order, score, _ = rank_label_issues(P, y)
    np.testing.assert_allclose(score, get_label_quality_scores(y, P, method="self_confidence"))
    theirs = find_label_issues(y, P, return_indices_ranked_by="self_confidence")
    assert set(theirs) <= set(order)  # every issue cleanlab finds, we list
    ours = [i for i in order if i in set(theirs)]
    assert ours == list(theirs)  # in the same order
    assert len(set(flipped) & set(order[:40])) >= 30
