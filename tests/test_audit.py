"""``pipeline.py audit``: planted leaks and wrong labels in real photos are found, near the top."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import build_store

import pipeline

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


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The doctored copy, through one default-style ``run`` (Lite0, logreg): its store and report."""
    if not HYMENOPTERA.is_dir():
        pytest.skip("needs ../shared/datasets/hymenoptera")
    tmp = tmp_path_factory.mktemp("planted")
    data = tmp / "hym"
    exact, recoded, moved = doctored_copy(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEATCACHE_HOME", str(tmp / "fc"))
        assert pipeline.main(["run", "-q", "--data", str(data), "--backbones", "efficientnet_lite0", "--models",
                              "logreg", "--no-few-shot", "--no-ensembles", "--out", str(tmp / "run")]) == 0
    results = json.loads((tmp / "run" / "results.json").read_text())
    return {"tmp": tmp, "data": data, "exact": exact, "recoded": recoded, "moved": moved, "run": tmp / "run",
            "results": results, "store": results["extraction"][0]["store"]}


def test_planted_leaks_and_wrong_labels_are_found(planted: dict) -> None:
    tmp, data = planted["tmp"], planted["data"]
    exact, recoded, moved = planted["exact"], planted["recoded"], planted["moved"]
    assert pipeline.main(["audit", planted["store"], "--out", str(tmp / "audit"), "-q"]) == 0
    result = json.loads((tmp / "audit" / "audit.json").read_text())
    assert set(result) >= {"duplicates", "label_issues", "outliers", "split_leaks", "map"}

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
    assert len(result["map"]["points"]) == result["rows"]  # 418 rows < 2,000: all drawn
    leaked_test = set(result["split_leaks"]["test"]["leaked_paths"])
    assert len(leaked_test & {p for pair in recoded for p in pair}) >= 8


def test_run_report_drops_leaked_test_images(planted: dict) -> None:
    """The run's audit.json and report: the leaked test images are named, and each row's test
    accuracy without them matches a recount from the row's own list of mistakes."""
    run_dir, recoded = planted["run"], planted["recoded"]
    audit = json.loads((run_dir / "report" / "audit.json").read_text())
    assert audit["model"]["scored_on"] == "test"
    leaks = audit["split_leaks"]["test"]
    copies = {p for pair in recoded for p in pair if p.startswith("test/")}
    assert len(copies & set(leaks["leaked_paths"])) >= 8 and len(leaks["leaked"]) == len(leaks["leaked_paths"])
    row = next(r for r in planted["results"]["results"] if r["model"] == "logreg")
    md = (run_dir / "report" / "report.md").read_text()
    assert "## Data audit" in md and "val acc, leaks dropped" in md and "test acc, leaks dropped" in md
    line = next(x for x in md.split("## Data audit", 1)[1].splitlines() if x.startswith("| 1 | logreg"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    for split, (acc, without) in (("val", cells[3:5]), ("test", cells[5:7])):
        scores, info = row[split], audit["split_leaks"][split]
        kept = scores["n"] - len(info["leaked"])
        wrong = {m["path"] for m in scores["misclassified"]} - set(info["leaked_paths"])
        assert float(acc) == pytest.approx(scores["accuracy"], abs=5e-4)
        if kept:  # a recount from the row's own list of mistakes
            assert float(without) == pytest.approx(1 - len(wrong) / kept, abs=5e-4)
        else:  # the doctored test split holds only the 10 re-encoded copies
            assert without == "-"
    assert len(audit["split_leaks"]["val"]["leaked"]) >= 9  # the 10 exact copies
    assert "none is left" in md
    wrong = {m["path"] for m in row["test"]["misclassified"]}
    assert len(audit["misclassified"]) == min(len(wrong), 64)
    first = audit["misclassified"][0]
    assert len(first["neighbours"]) == 3 and all(nb["path"].startswith("train/") for nb in first["neighbours"])
    html = (run_dir / "report" / "report.html").read_text()
    assert "Data audit" in html and "Near-duplicate pairs" in html and "Map of the features" in html
    for name in ("audit_duplicates", "audit_label_issues", "audit_mistake_neighbours", "audit_map"):
        assert (run_dir / "report" / f"{name}.png").stat().st_size > 5_000


def test_split_leaks_index_the_correctness_bits() -> None:
    """Leaked positions are in the sorted-path order the per-image bits use, so a score drops
    exactly the leaked images."""
    from classify.audit import split_leaks
    from classify.stats import correctness, unpack

    paths = np.array(["tr/a", "tr/b", "te/z", "te/c", "va/q", "te/m"])
    splits = np.array(["train", "train", "test", "test", "val", "test"])
    pairs = {(0, 2): 0.99, (4, 5): 0.9, (1, 4): 0.95, (2, 3): 0.97}  # test~train, test~val, val~train, test~test
    leaks = split_leaks(pairs, paths, splits)
    assert sorted(leaks["test"]["leaked_paths"]) == ["te/m", "te/z"]
    assert leaks["val"]["leaked_paths"] == ["va/q"]
    test = np.flatnonzero(splits == "test")
    right = np.array([True, False, True])  # te/z right, te/c wrong, te/m right
    bits = correctness(np.where(right, 1, 0), np.ones(3, int), paths[test].tolist())
    assert bits["images"] == leaks["test"]["images"]
    order = unpack(bits["correct"], 3)
    keep = np.ones(3, bool)
    keep[leaks["test"]["leaked"]] = False
    assert order[keep].tolist() == [False]  # only te/c remains, and it was wrong


def test_approximate_search_agrees_with_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past EXACT_MAX_ROWS the IVF index proposes, the full vectors decide: similarities are exact,
    planted copies are all found, and nearly every exact neighbour is recovered."""
    pytest.importorskip("faiss")
    from classify import audit as A
    from classify.knn import neighbours

    rng = np.random.default_rng(0)
    n, d = 6000, 256  # low-rank like CNN features (whose spectra fall fast), 40 classes
    latent = rng.normal(0, 1, (40, 48))[rng.integers(0, 40, n)] + rng.normal(0, 1.0, (n, 48))
    X = latent @ rng.normal(0, 1, (48, d)) + rng.normal(0, 0.5, (n, d))
    X[5000:5050] = X[:50] + rng.normal(0, 0.05, (50, d))  # 50 near-copies
    X = A._unit(X - X.mean(0))
    monkeypatch.setattr(A, "EXACT_MAX_ROWS", 1000)
    sims, idx, how = A.knn_graph(X, 10)
    assert how.startswith("approximate")
    es, ei = neighbours(X, X, 11)
    es, ei = A._drop_self(es, ei)
    recall = np.mean([len(set(idx[i]) & set(ei[i])) / 10 for i in range(n)])
    assert recall >= 0.9, recall
    assert all(idx[5000 + i, 0] == i for i in range(50)) and all(idx[i, 0] == 5000 + i for i in range(50))
    np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", X, X[idx]), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    assert not (idx == np.arange(n)[:, None]).any()


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
