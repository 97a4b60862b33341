"""Intervals, the paired test and "tied with best" in every format; few-shot and multi-dataset reports."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest

from classify import stats
from featcache.report import build_report
from featcache.report.results import across_datasets, load_run
from featcache.store import FeatureSpec
from tests.test_report import (
    assert_fits_one_screen,
    make_images,
    make_store,
    probe_in_chromium,
    render_in_chromium,
    val_block,
)

N = 50
PATHS = [f"val/img{i:03d}.jpg" for i in range(N)]


def scored(right: np.ndarray) -> dict:
    """A val block whose per-image correctness is ``right`` (the rest of its numbers made up)."""
    acc = float(right.mean())
    return {**val_block(acc, acc, [], 0.3), "n": N, "accuracy": acc,
            "accuracy_ci": stats.accuracy_interval(acc, N),
            **stats.correctness(right.astype(int), np.ones(N, int), PATHS)}


def correctness_vectors() -> dict[str, np.ndarray]:
    """A: 49/50. B: 45/50, 5 images only A gets, 1 only B gets (p = 0.219, tied).
    C: 40/50, 10 only A, 1 only C (p = 0.0117, worse)."""
    a = np.ones(N, bool)
    a[0] = False
    b = a.copy()
    b[1:6] = False
    b[0] = True
    c = a.copy()
    c[1:11] = False
    c[0] = True
    return {"A": a, "B": b, "C": c}


def row(model: str, right: np.ndarray, dataset: str = "", store: str = "", test: float | None = None) -> dict:
    return {"backbone": "bb", "feature": "fc:in/none", "model": model, "store": store, "preprocess": [],
            "params": {}, "fit_s": 0.1, "val": scored(right), "val_source": "val split",
            "test": {"accuracy": test, "n": 200} if test is not None else None, "model_path": None,
            **({"dataset": dataset} if dataset else {})}


@pytest.fixture(scope="module")
def tied_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("tied")
    rows = [row(m, r) for m, r in correctness_vectors().items()]
    (base / "results.json").write_text(json.dumps({"config": {"data": "d"}, "results": rows}))
    return base, build_report(base)


def test_tied_marking_and_p_values_match_scipy_in_every_format(tied_run):
    base, paths = tied_run
    p_b = binomtest(1, 6, 0.5).pvalue
    p_c = binomtest(1, 11, 0.5).pvalue
    assert p_b > 0.05 > p_c
    ci_b = binomtest(45, N).proportion_ci(method="wilson")
    board = json.loads(paths["leaderboard_json"].read_text())["rows"]
    got = {r["model"]: r for r in board}
    assert got["A"]["tied_with_best"] and got["A"]["p_vs_best"] == 1.0
    assert got["B"]["tied_with_best"] and got["B"]["p_vs_best"] == pytest.approx(p_b)
    assert not got["C"]["tied_with_best"] and got["C"]["p_vs_best"] == pytest.approx(p_c)
    assert got["B"]["val_accuracy_ci_low"] == pytest.approx(ci_b.low) and \
        got["B"]["val_accuracy_ci_high"] == pytest.approx(ci_b.high)
    with open(paths["leaderboard_csv"]) as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert [rows[m]["tied_with_best"] for m in "ABC"] == ["True", "True", "False"]
    assert float(rows["C"]["p_vs_best"]) == pytest.approx(p_c)
    assert float(rows["B"]["val_accuracy_ci_low"]) == pytest.approx(ci_b.low)
    md = paths["md"].read_text()
    assert f"| 2 | B | bb | 0.900 ({ci_b.low:.2f}-{ci_b.high:.2f}) | tied p={p_b:.2g} |" in md  # compact
    assert f"val accuracy 0.900 ({ci_b.low:.3f}-{ci_b.high:.3f}, 50 images)" in md  # the details table: exact to 3
    assert f"worse p={p_c:.2g}" in md
    assert "- 1 other row is tied with it: the data cannot separate them" in md  # the summary says it once
    assert "1 row (*tied* in vs #1) is tied with rank 1" in md  # and one sentence under the table
    html = paths["html"].read_text()
    assert html.count('<tr class="row tied">') == 1 and html.count('<tr class="row best">') == 1
    assert "1 row (shaded) is tied with rank 1" in html


def test_a_clear_winner_is_named_alone(tmp_path):
    v = correctness_vectors()
    (tmp_path / "results.json").write_text(json.dumps({"config": {}, "results": [row("A", v["A"]),
                                                                                 row("C", v["C"])]}))
    md = build_report(tmp_path)["md"].read_text()
    assert "- Best: **A on bb**, val accuracy 0.980 (95% CI " in md
    assert "It is significantly better than the other row (exact McNemar on the same 50 images, p < 0.05)" in md
    assert "Rank 1 is significantly better than the other row it could be paired with" in md


def test_rows_on_other_images_are_not_paired(tmp_path):
    v = correctness_vectors()
    other = row("X", v["B"])
    other["val"].update(stats.correctness(v["B"].astype(int), np.ones(N, int), [p + "2" for p in PATHS]))
    (tmp_path / "results.json").write_text(json.dumps({"config": {}, "results": [row("A", v["A"]), other]}))
    run = load_run(tmp_path)
    assert run.rows[1].p_vs_best is None and not run.rows[1].tied
    assert "not paired" in build_report(tmp_path)["md"].read_text()


def curve(backbone: str, feature: str) -> dict:
    pts = [{"model": m, "shots": s, "mean": 0.5 + 0.05 * i, "sd": 0.02 if s != "all" else 0.0,
            "scores": [0.5], "train_rows": 3} for m in ("logreg", "knn-dino") for i, s in
           enumerate([1, 2, 4, 8, 16, "all"])]
    return {"backbone": backbone, "feature": feature, "split": "test", "n_eval": 200, "draws": 5, "n_classes": 3,
            "points": pts}


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("multi")
    run = base / "run"
    (run / "features").mkdir(parents=True)
    stores = {}
    for ds in ("alpha", "beta"):
        data = base / ds
        images = make_images(data)
        stores[ds] = run / "features" / f"tiny-{ds}.h5"
        make_store(stores[ds], data, images, "bb", [FeatureSpec("fc", "input", "none", 8)])
    v = correctness_vectors()
    rows = []
    # alpha: A > B > C; beta: B > A (C missing: not in the summary)
    for ds, order in (("alpha", {"A": v["A"], "B": v["B"], "C": v["C"]}), ("beta", {"A": v["B"], "B": v["A"]})):
        for m, r in order.items():
            rows.append(row(m, r, ds, str(stores[ds]), test=float(r.mean()) - 0.01))
    extraction = [{"dataset": ds, "data": str(base / ds), "backbone": "bb", "store": str(stores[ds]), "status": "new",
                   "seconds": 1.0, "images_per_s": 15.0, "rows": 15, "skipped": 1, "features": {"fc:in/none": 8},
                   "forward_passes": 1} for ds in ("alpha", "beta")]
    few = [{"dataset": ds, **curve("bb", "fc:in/none")} for ds in ("alpha", "beta")]
    (run / "results.json").write_text(json.dumps({
        "config": {"data": [str(base / "alpha"), str(base / "beta")], "out": str(run)}, "extraction": extraction,
        "results": rows, "few_shot": few, "datasets": {"alpha": str(base / "alpha"), "beta": str(base / "beta")},
        "seconds": 3.0}))
    return run, build_report(run)


def test_multi_dataset_report_has_a_section_per_dataset_and_a_summary(multi_run):
    run_dir, paths = multi_run
    run = load_run(run_dir)
    assert run.datasets == ["alpha", "beta"] and run.multi
    summary = across_datasets(run)
    assert [(r["model"], r["rank"], r["mean_rank"]) for r in summary] == [
        ("A", {"alpha": 1, "beta": 2}, 1.5), ("B", {"alpha": 2, "beta": 1}, 1.5)]
    a = summary[0]
    assert a["mean_accuracy"] == pytest.approx((0.98 - 0.01 + 0.90 - 0.01) / 2) and a["split"]["alpha"] == "test"
    md = paths["md"].read_text()
    assert md.index("## Across datasets") < md.index("## Dataset: alpha") < md.index("## Dataset: beta")
    assert len(re.findall(r"^### Leaderboard$", md, re.M)) == 2
    assert len(re.findall(r"^### Few-shot curve$", md, re.M)) == 2
    assert "| bb | fc:in | none | A | 0.970 | 0.890 | 1 | 2 | 0.930 | 1.5 |" in md
    board = json.loads(paths["leaderboard_json"].read_text())
    assert {r["dataset"] for r in board["rows"]} == {"alpha", "beta"} and len(board["across_datasets"]) == 2
    assert "alpha__few_shot" in paths and "beta__few_shot" in paths
    assert Image.open(paths["alpha__few_shot"]).size[0] > 300
    # Each dataset's rows are ranked among themselves.
    beta = [r for r in board["rows"] if r["dataset"] == "beta"]
    assert [(r["model"], r["rank"]) for r in beta] == [("B", 1), ("A", 2)]


def test_multi_dataset_report_renders_in_headless_chromium(multi_run, tmp_path):
    _, paths = multi_run
    dom = render_in_chromium(paths["html"], tmp_path, height=2400)
    assert "Across datasets" in dom and 'id="dataset-alpha"' in dom and 'id="dataset-beta"' in dom
    assert len(re.findall(r"<img ", dom)) >= 4
    m = probe_in_chromium(paths["html"], tmp_path, paths["html"].parent / "screenshots" / "report_1280x800.png")
    assert_fits_one_screen(m)  # both answers on top, then the across-datasets table, then each dataset's
    assert len([t for t in m["tables"] if t[0].startswith("board")]) == 2


def test_metric_balanced_accuracy_reranks_and_is_checked(tmp_path):
    """On imbalanced classes the row with the better balanced accuracy wins when the user asks for it."""
    from featcache.report import ReportError
    from featcache.report.results import parse_results

    def row(model, acc, bal, cv_acc, cv_bal):
        val = {**val_block(acc, bal, [], 0.3), "n": N, "accuracy": acc, "balanced_accuracy": bal}
        return {"backbone": "b", "feature": "fc/none", "model": model, "val": val, "test": {**val, "n": N},
                "fit_s": 0.1, "store": "s.h5", "extra": {"cv": {"mean": cv_acc, "balanced_mean": cv_bal, "n": N}}}

    rows = [row("majority", 0.80, 0.55, 0.80, 0.55), row("fair", 0.76, 0.74, 0.77, 0.75)]
    by_acc = parse_results({"results": rows}, tmp_path)
    assert [e.model for e in by_acc.rows] == ["majority", "fair"]
    by_bal = parse_results({"results": rows, "config": {"metric": "balanced_accuracy"}}, tmp_path)
    assert [e.model for e in by_bal.rows] == ["fair", "majority"] and by_bal.rows[0].score == 0.75
    no_cv = [{**r, "extra": {}} for r in rows]
    assert parse_results({"results": no_cv, "config": {"metric": "balanced_accuracy"}},
                         tmp_path).rows[0].model == "fair"  # val's balanced accuracy without CV
    with pytest.raises(ReportError, match="config.metric 'f1'"):
        parse_results({"results": rows, "config": {"metric": "f1"}}, tmp_path)
