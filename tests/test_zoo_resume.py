"""A killed or interrupted zoo resumes: finished results are recorded in OUT/finished/ and reused."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import classify.zoo as zoo_module
from classify import cli, ledger
from classify.job import run_classify
from classify.persist import sidecar_digest
from featcache.common.files import sha256_file
from featcache.common.interrupt import StopAfterCurrent

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["knn-dino", "logreg", "linear"]  # each well under a second on 45 rows, once torch is imported


@pytest.fixture
def store(make_store):
    return make_store({"train": 15, "val": 6, "test": 5}, 3, 8, splits=("train", "val", "test"), spread=2.5)


@pytest.fixture
def fits(monkeypatch):
    """The (model, views) of every fit the comparison makes."""
    calls = []
    real = zoo_module.fit

    def spy(plan, data):
        calls.append(plan.label)
        return real(plan, data)

    monkeypatch.setattr(zoo_module, "fit", spy)
    return calls


def zoo(store, out, models=MODELS, **kw):
    return run_classify(store, out_dir=out, models=list(models), select="val", **kw)


def metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def record(out, model):
    return Path(out) / "finished" / f"fc-in_none__{model}.json"


def test_a_rerun_with_the_same_settings_fits_nothing(store, tmp_path, fits, caplog):
    out = tmp_path / "run"
    first = zoo(store, out)
    assert fits == MODELS and metrics(out)["reused"] == []
    rec = json.loads(record(out, "logreg").read_text())
    assert rec["label"] == "logreg" and rec["results"][0]["model"] == "models/fc-in_none__logreg.skops"
    assert rec["key"] == ledger.settings_key(rec["settings"])
    assert rec["results"][0]["sha256"] == sidecar_digest(out / "models" / "fc-in_none__logreg.skops")
    assert rec["settings"]["seed"] == 0 and "jobs" not in rec["settings"]
    before = metrics(out)["results"]

    fits.clear()
    with caplog.at_level(logging.INFO, logger="classify.zoo"):
        again = zoo(store, out)
    assert fits == []  # nothing fitted
    assert [r.model for r in again] == [r.model for r in first] and all(r.fitted is None for r in again)
    assert sorted(r.model for r in again) == sorted(MODELS) and again.best is None  # nothing in memory
    assert [r.val["accuracy"] for r in again] == [r.val["accuracy"] for r in first]
    assert [r.model_path for r in again] == [r.model_path for r in first]
    assert metrics(out)["results"] == before and metrics(out)["reused"] == MODELS
    lines = [r.getMessage() for r in caplog.records if "reused from an earlier run" in r.getMessage()]
    assert lines == [f"{m} reused from an earlier run ({record(out, m)})" for m in MODELS]
    assert "reused from an earlier run (finished/): knn-dino, logreg, linear" in (out / "summary.md").read_text()


def test_changed_settings_refit_exactly_what_they_change(store, tmp_path, fits):
    out = tmp_path / "run"
    zoo(store, out, models=MODELS[:2])
    fits.clear()
    zoo(store, out)  # one model more: only it is fitted
    assert fits == ["linear"] and metrics(out)["reused"] == MODELS[:2]
    fits.clear()
    zoo(store, out, seed=1)  # another seed changes every result
    assert fits == MODELS
    fits.clear()
    zoo(store, out, seed=1, jobs=2)  # jobs do not change results
    assert fits == [] and metrics(out)["reused"] == MODELS
    zoo(store, out, seed=1, preprocess="l2")
    assert fits == MODELS
    fits.clear()
    zoo(store, out, seed=1, preprocess=["l2"])  # the same steps, spelt otherwise
    assert fits == []
    zoo(store, out, seed=1, preprocess="l2", resume=False)
    assert fits == MODELS and metrics(out)["reused"] == []


def test_a_deleted_or_changed_model_file_is_refitted_alone(store, tmp_path, fits, caplog):
    out = tmp_path / "run"
    zoo(store, out)
    (out / "models" / "fc-in_none__knn-dino.skops").unlink()
    with (out / "models" / "fc-in_none__logreg.skops").open("ab") as f:
        f.write(b"\0")  # edited after it was recorded (its sidecar still says otherwise)
    fits.clear()
    with caplog.at_level(logging.WARNING, logger="classify.finished"):
        results = zoo(store, out)
    assert fits == ["knn-dino", "logreg"] and metrics(out)["reused"] == ["linear"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "fc-in_none__knn-dino.skops is missing" in warned and "fc-in_none__logreg.skops: its" not in warned
    assert "fc-in_none__logreg.skops changed since it was recorded" in warned
    for r in results:  # the refits replaced their records and sidecars: the next run reuses all
        assert sha256_file(r.model_path) == sidecar_digest(r.model_path)
    fits.clear()
    zoo(store, out)
    assert fits == []


def test_unreadable_records_are_ignored_with_a_warning(store, tmp_path, fits, caplog):
    out = tmp_path / "run"
    zoo(store, out)
    record(out, "knn-dino").write_text('{"key": "trunc')
    rec = json.loads(record(out, "logreg").read_text())
    rec["results"][0]["result"] = {"model": "logreg"}  # the right key, a result that cannot be rebuilt
    record(out, "logreg").write_text(json.dumps(rec))
    record(out, "linear").write_text("[]")
    fits.clear()
    with caplog.at_level(logging.WARNING, logger="classify.finished"):
        results = zoo(store, out)
    assert fits == MODELS and sorted(r.model for r in results) == sorted(MODELS)
    warned = [r.getMessage() for r in caplog.records if "unreadable finished record" in r.getMessage()]
    assert len(warned) == 3 and all(r.levelno == logging.WARNING for r in caplog.records)
    fits.clear()
    zoo(store, out)  # the refits wrote good records again
    assert fits == []


def test_views_and_tta_variants_resume_per_fit(tmp_path, fits):
    from tests.test_views import view_store

    store, out = view_store(tmp_path, n_train=12, n_val=8, k=2, dim=8), tmp_path / "run"
    first = run_classify(store, out_dir=out, models=["knn-dino"], views="both", tta="both", select="val")
    names = ["knn-dino", "knn-dino+flip", "knn-dino+views", "knn-dino+views+flip"]
    assert sorted(r.model for r in first) == sorted(names) and fits == ["knn-dino", "knn-dino+views"]
    rec = json.loads(record(out, "knn-dino+views").read_text())
    assert [e["result"]["model"] for e in rec["results"]] == names[2:] and rec["settings"]["n_views"] == 2
    before = metrics(out)["results"]
    fits.clear()
    again = run_classify(store, out_dir=out, models=["knn-dino"], views="both", tta="both", select="val")
    assert fits == [] and sorted(r.model for r in again) == sorted(names) and metrics(out)["results"] == before
    run_classify(store, out_dir=out, models=["knn-dino"], views="on", tta="flip", select="val")
    assert fits == ["knn-dino+views"]  # other TTA modes: another result


def test_cv_records_check_their_oof_file(store, tmp_path, fits):
    out = tmp_path / "run"
    [first] = run_classify(store, out_dir=out, models=["knn-dino"], select="cv")
    oof = Path(first.extra["cv"]["oof"])
    assert oof.is_file() and json.loads(record(out, "knn-dino").read_text())["results"][0]["oof"] == \
        "oof/fc-in_none__knn-dino.npz"
    fits.clear()
    [again] = run_classify(store, out_dir=out, models=["knn-dino"], select="cv")
    assert fits == [] and again.extra["cv"] == first.extra["cv"]
    run_classify(store, out_dir=out, models=["knn-dino"], select="val")  # select is part of the key
    assert fits == ["knn-dino"]
    fits.clear()
    run_classify(store, out_dir=out, models=["knn-dino"], select="cv")
    oof.unlink()
    run_classify(store, out_dir=out, models=["knn-dino"], select="cv")
    assert fits == ["knn-dino", "knn-dino"] and oof.is_file()


def test_budget_skipped_models_are_not_recorded(store, tmp_path):
    out = tmp_path / "run"
    results = run_classify(store, out_dir=out, models="knn-dino,svm-rbf", budget="0.001s", select="val")
    skipped = [s["model"] for s in metrics(out)["skipped"]]
    assert skipped and sorted(p.stem.split("__")[1] for p in (out / "finished").glob("*.json")) == \
        sorted(r.model for r in results)
    assert not set(skipped) & {r.model for r in results}


def test_reused_rows_load_their_estimator_from_the_model_file(store, tmp_path):
    from classify.api import compare
    from classify.persist import load_model

    zoo(store, tmp_path / "run", models=["knn-dino"])
    [r] = zoo(store, tmp_path / "run", models=["knn-dino"])
    assert metrics(tmp_path / "run")["reused"] == ["knn-dino"] and r.fitted is None
    assert hasattr(load_model(r.model_path).model, "predict_proba")
    with pytest.raises(ValueError, match=r"out_dir= is gone.*\.save\(out_dir\)"):  # compare writes nothing
        compare(store, models="knn-dino", out_dir=tmp_path / "api")


def test_no_resume_on_the_command_lines():
    import argparse

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    assert cli.config_from_args(p.parse_args(["--features", "f", "--out", "o", "--no-resume"])).resume is False
    assert cli.config_from_args(p.parse_args(["--features", "f", "--out", "o"])).resume is True
    sys.path.insert(0, str(ROOT))
    from featcache.driver.config import resolve
    from pipeline import build_parser

    args = build_parser().parse_args(["run", "--data", "d", "--out", "o", "--no-resume"])
    assert args.resume is False
    assert resolve({}, {"data": "d", "out": "o", "resume": args.resume}).classify.resume is False
    assert resolve({}, {"data": "d", "out": "o"}).classify.resume is True


def test_stop_after_current_handles_two_ctrl_c(monkeypatch, caplog):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with caplog.at_level(logging.WARNING), StopAfterCurrent("the step in hand") as stop:
            assert stop.installed
            stop.what = "logreg"
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # the handler runs between bytecodes
            except KeyboardInterrupt:
                pytest.fail("the first Ctrl-C raised instead of asking to stop")
            assert stop.requested
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert [r.getMessage() for r in caplog.records] == ["stopping after logreg (Ctrl-C again to stop now)"]
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # someone else's handler stays theirs
        with StopAfterCurrent() as stop:
            assert not stop.installed and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_workers_leave_ctrl_c_to_the_parent():
    code = textwrap.dedent("""
        import os, signal
        from joblib import Parallel, delayed
        from featcache.common.interrupt import ignore_sigint_in_worker

        def task(i):  # in a loky worker: a Ctrl-C reaching it must not abort the fit
            ignore_sigint_in_worker()
            os.kill(os.getpid(), signal.SIGINT)
            return i

        print(Parallel(n_jobs=2)(delayed(task)(i) for i in range(4)))
        ignore_sigint_in_worker()  # the main process keeps its handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[0, 1, 2, 3]", proc.stderr


def start_child(store, out, tmp_path, slow, seconds):
    marker = tmp_path / f"{slow}.started"
    env = {**os.environ, "ZOO_SLOW": f"{slow}:{seconds}:{marker}"}
    argv = [sys.executable, str(ROOT / "tests" / "zoo_child.py"), "classify", "--features", str(store),
            "--out", str(out), "--models", ",".join(MODELS), "--select", "val"]
    log = (tmp_path / "child.log").open("w")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not marker.exists():  # the model before it is finished and recorded
        assert proc.poll() is None, (tmp_path / "child.log").read_text()
        assert time.monotonic() < deadline, "the child never reached the slow model"
        time.sleep(0.05)
    return proc


def test_a_killed_zoo_resumes(store, tmp_path, fits, caplog):
    out = tmp_path / "run"
    proc = start_child(store, out, tmp_path, "logreg", 60)
    assert [p.name for p in (out / "finished").glob("*.json")] == ["fc-in_none__knn-dino.json"]
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert [r["model"] for r in metrics(out)["results"]] == ["knn-dino"]  # the reports of what finished
    with caplog.at_level(logging.INFO, logger="classify.zoo"):
        results = zoo(store, out)
    assert fits == ["logreg", "linear"] and sorted(r.model for r in results) == sorted(MODELS)
    assert "knn-dino reused from an earlier run" in caplog.text
    assert [r["model"] for r in metrics(out)["results"]] == MODELS and metrics(out)["reused"] == ["knn-dino"]


def test_ctrl_c_finishes_the_model_in_hand_then_exits_130(store, tmp_path, fits):
    out = tmp_path / "run"
    proc = start_child(store, out, tmp_path, "logreg", 2)
    os.kill(proc.pid, signal.SIGINT)  # to the main process only, while logreg is being fitted
    assert proc.wait(timeout=60) == 130
    text = (tmp_path / "child.log").read_text()
    assert "stopping after logreg (Ctrl-C again to stop now)" in text
    assert "interrupted: work done so far is kept; rerun the same command to continue" in text
    assert sorted(p.name for p in (out / "finished").glob("*.json")) == ["fc-in_none__knn-dino.json",
                                                                          "fc-in_none__logreg.json"]
    assert [r["model"] for r in metrics(out)["results"]] == ["knn-dino", "logreg"]
    assert zoo(store, out) and fits == ["linear"] and metrics(out)["reused"] == ["knn-dino", "logreg"]
    fits.clear()
    zoo(store, out, resume=False)
    assert fits == MODELS


def test_a_spent_budget_still_reuses_what_an_earlier_pass_finished(store, tmp_path, fits):
    """run --budget's second pass: the first pass's fits cost nothing, so the budget never skips them."""
    out = tmp_path / "run"
    zoo(store, out, models=["logreg"])
    fits.clear()
    res = zoo(store, out, models=["logreg", "knn-dino"], budget=1e-6)  # spent before the first model
    assert fits == [] and [r.model for r in res] == ["logreg"]
    assert metrics(out)["reused"] == ["logreg"] and [s["model"] for s in metrics(out)["skipped"]] == ["knn-dino"]
