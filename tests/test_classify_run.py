"""run_classify end to end, its reports, reproducibility, and the command line."""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from classify import cli
from classify.config import ClassifyConfig
from classify.job import run_classify
from classify.persist import load_model
from featcache.common.errors import BadInput
from featcache.common.files import safe_name

ROOT = Path(__file__).resolve().parents[1]
FAST = ["logreg", "knn", "linear"]


@pytest.fixture
def store(make_store):
    return make_store({"train": 15, "val": 6, "test": 5}, 3, 8, splits=("train", "val", "test"), spread=2.5)


def test_run_writes_models_and_reports(store, tmp_path):
    out = tmp_path / "run"
    results = run_classify(store, models=FAST, out_dir=out, jobs=2, tensorboard=tmp_path / "tb", select="val")
    assert sorted(r.model for r in results) == sorted(FAST)
    by = {r.model: r for r in results}
    for r in results:
        assert r.val["n"] == 18 and r.test["n"] == 15 and r.val_source == "val split" and r.fit_s > 0
        assert Path(r.model_path) == out / "models" / f"fc-in_none__{r.model}.skops"
        saved = load_model(r.model_path)
        assert saved.name == r.model and saved.store == str(Path(store).resolve()) and saved.feature == "fc:in/none"
    assert by["logreg"].params.keys() == {"C"} and by["logreg"].extra["cv_scoring"] == "neg_log_loss"
    assert list((tmp_path / "tb").iterdir()) == [tmp_path / "tb" / "fc-in_none__linear"]  # torch heads only

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feature"] == "fc:in/none" and metrics["val_source"] == "val split"
    assert [m["model"] for m in metrics["results"]] == FAST and metrics["spec"]["backbone"] == "synthetic"
    saved = json.loads((out / "results.json").read_text())  # run's format: the same rows, the report's keys
    assert saved["results"] == metrics["results"] and {"config", "extraction", "few_shot", "skipped"} <= saved.keys()
    assert {(r["backbone"], r["producer"], r["store"]) for r in saved["results"]} == {
        ("synthetic", "classify", metrics["store"])}
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["model"] for r in rows] == FAST
    assert {"val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_log_loss", "val_top1", "val_top2",
            "test_accuracy", "fit_s", "predict_s", "params"} <= rows[0].keys()
    assert float(rows[0]["val_accuracy"]) == pytest.approx(by["logreg"].val["accuracy"])  # fit order
    summary = (out / "summary.md").read_text()
    table = summary.split("## Details")[0]
    ranked = [line.split("|")[2].strip(" *") for line in table.splitlines() if line.startswith("| ")][1:]
    assert ranked == [r.model for r in results]  # ranked as the leaderboard ranks
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_same_seed_same_predictions(store, tmp_path):
    a = run_classify(store, models=["linear", "knn"], out_dir=tmp_path / "a", seed=5)
    b = run_classify(store, models=["linear", "knn"], out_dir=tmp_path / "b", seed=5)
    for ra, rb in zip(a, b):
        assert ra.params == rb.params and ra.val["misclassified"] == rb.val["misclassified"]
        assert ra.val["log_loss"] == rb.val["log_loss"]


def test_no_val_split_is_recorded_in_the_reports(make_store, tmp_path):
    path = make_store(15, 2, 4, splits=("train",))
    results = run_classify(path, models="logreg", out_dir=tmp_path / "run")
    assert results[0].val_source == "holdout from train" and results[0].test is None
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val_source"] == "holdout from train"
    assert "val: holdout from train" in (tmp_path / "run" / "summary.md").read_text()


def test_bad_options_fail_before_any_work(store, tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'logrge' \(did you mean 'logreg'\?\); valid: "):
        run_classify(store, models="logrge", out_dir=tmp_path / "x")
    with pytest.raises(BadInput, match=r"^jobs 0: expected -1 \(every core\) or a number of workers >= 1$"):
        run_classify(store, models="logreg", jobs=0, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _args(**kw) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    argv = [f"--{k.replace('_', '-')}={v}" if v is not True else f"--{k.replace('_', '-')}" for k, v in kw.items()]
    return p.parse_args(argv)


def test_cli_defaults_are_the_config_defaults(store, tmp_path):
    args = _args(features=store, out=tmp_path / "run")
    assert cli.config_from_args(args) == ClassifyConfig(features=str(store), out=str(tmp_path / "run"))
    args = _args(features=store, out=tmp_path / "run", models="knn", jobs=2, seed=1, allow_partial=True,
                 preprocess="l2", layer="fc")
    cfg = cli.config_from_args(args)
    assert (cfg.feature, cfg.models, cfg.jobs, cfg.seed, cfg.allow_partial, cfg.preprocess) == \
        ("fc", ("knn",), 2, 1, True, "l2")


def test_cli_main_prints_the_table(store, tmp_path, capsys):
    assert cli.main(_args(features=store, out=tmp_path / "run", models="knn,logreg")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Best: ") and any(line.split()[:2] in (["1", "knn"], ["1", "logreg"]) for line in lines)
    assert len(lines) <= 25 and max(map(len, lines)) <= 100  # the answer and the compact table, nothing else


@pytest.mark.slow
def test_cli_standalone_help_and_one_line_errors(store, tmp_path):
    run = [sys.executable, "-m", "classify.cli"]
    help_ = subprocess.run(run + ["--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "--features" in help_.stdout and "svm-rbf" in help_.stdout
    bad = subprocess.run(run + ["--features", str(store), "--out", str(tmp_path / "r"), "--models", "svm-rbg"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: unknown model 'svm-rbg' (did you mean 'svm-rbf'?)")


def test_safe_name():
    assert safe_name("fc:in/none") == "fc-in_none" and safe_name("layer4/avgmax") == "layer4_avgmax"
