"""Feature sets classified on worker processes: when, in what order, with whose log lines and errors."""

import dataclasses
import logging
from pathlib import Path

import pytest

from featcache.driver import classify_sets as C
from featcache.driver.config import resolve
from featcache.store import read_info


def _cfg(tmp_path: Path, **kw) -> object:
    return resolve({}, {"data": "d", "out": str(tmp_path / "run"), "models": ["logreg", "knn"], "few_shot": False,
                        **kw})


def test_workers_only_for_several_small_sets_on_several_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(C.os, "cpu_count", lambda: 2)
    cfg = _cfg(tmp_path)
    assert C.workers_for(cfg, 3, 131) == 3  # one more than the cores: each model of each set is a task
    assert C.workers_for(cfg, 2, 131) == 3
    assert C.workers_for(cfg, 1, 131) == 3  # one set's models side by side too
    assert C.workers_for(cfg, 0, 131) == 0  # nothing to classify
    assert C.workers_for(cfg, 3, C.PARALLEL_MAX_ROWS + 1) == 0  # a large zoo uses every core itself
    assert C.workers_for(_cfg(tmp_path, jobs=1), 3, 131) == 0
    assert C.workers_for(_cfg(tmp_path, jobs=2), 6, 131) == 2
    monkeypatch.setattr(C.os, "cpu_count", lambda: 16)  # 3 zoos of 5,000 rows: each spreads its folds instead
    assert C.workers_for(cfg, 3, 5_000) == 0 and C.workers_for(cfg, 3, 131) == C.MAX_WORKERS
    monkeypatch.setattr(C.os, "cpu_count", lambda: 1)
    assert C.workers_for(cfg, 3, 131) == 0


def _recs(paths: list[Path]) -> list[dict]:
    out = []
    for i, p in enumerate(paths):
        info = read_info(p)
        out.append({"backbone": f"bb{i}", "store": str(p), "status": "given", "rows": info.n_rows,
                    "features": dict(info.features)})
    return out


def test_sets_on_workers_come_back_in_order_with_their_log_lines_and_results_as_here(tmp_path, make_store, caplog):
    stores = [make_store(12, 3, 16, seed=s, name=f"s{s}.h5") for s in range(2)]
    recs = _recs(stores)
    cfg = _cfg(tmp_path)
    here = C.classify_all(cfg, recs, tmp_path / "here", "")
    caplog.clear()
    with caplog.at_level(logging.INFO), C.SetPool(2, torch=False) as pool:
        for rec in recs:
            pool.submit(cfg, rec, tmp_path / "pool", "", None)
        got = pool.results()
    assert [(r.backbone, r.model) for r in got.rows] == [(r.backbone, r.model) for r in here.rows]
    assert [r.val["accuracy"] for r in got.rows] == [r.val["accuracy"] for r in here.rows]
    assert [r.extra["cv"]["mean"] for r in got.rows] == [r.extra["cv"]["mean"] for r in here.rows]
    assert got.rows[0].fitted is not None  # the fitted models come back, for the ensembles
    assert set(got.recorded) == set(here.recorded) and got.metrics == here.metrics
    # each set's lines, logged here in the order the sets were given, one block after another
    starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("classifying ")]
    assert starts == [f"classifying bb{i} {next(iter(rec['features']))} with logreg,knn" for i, rec in enumerate(recs)]
    fitted = [r.getMessage().split()[0] for r in caplog.records if r.name == "classify.fit" and "val acc" in r.getMessage()]
    assert fitted == ["logreg", "knn"] * 2
    assert len(list((tmp_path / "pool").glob("bb1__*/metrics.json"))) == 1


def test_a_bad_option_fails_when_the_set_is_planned_here(tmp_path, make_store):
    recs = _recs([make_store(12, 3, 16, name="ok.h5")])
    bad = dataclasses.replace(_cfg(tmp_path), classify=dataclasses.replace(_cfg(tmp_path).classify,
                                                                          models=("no-such-model",)))
    with C.SetPool(1, torch=False) as pool, pytest.raises(ValueError, match="no-such-model"):
        pool.submit(bad, recs[0], tmp_path / "pool", "", None)


def test_an_error_on_a_worker_is_raised_here_after_the_sets_log_lines(tmp_path, make_store, caplog, monkeypatch):
    recs = _recs([make_store(12, 3, 16, name="ok.h5")])
    # The workers read the store again: one that is gone by then fails there, as a fit can.
    real = C.plan_set

    def planned_then_removed(*args, **kw):
        p = real(*args, **kw)
        Path(recs[0]["store"]).unlink()
        return p

    monkeypatch.setattr(C, "plan_set", planned_then_removed)
    with caplog.at_level(logging.INFO), C.SetPool(1, torch=False) as pool:
        pool.submit(_cfg(tmp_path), recs[0], tmp_path / "pool", "", None)
        with pytest.raises(Exception, match="ok.h5"):
            pool.results()
    assert any(r.getMessage().startswith("classifying bb0") for r in caplog.records)


def test_fits_on_workers_are_timed_in_cpu_seconds_not_in_the_wait_for_a_shared_core():
    import time

    from classify import clock

    def waited_then_worked() -> float:
        t = clock.now()
        time.sleep(0.3)  # a fit waiting for a core other workers hold: not the fit's cost
        sum(range(200_000))
        return clock.now() - t

    assert waited_then_worked() >= 0.3  # in-process: the wall clock
    with clock.cpu_seconds():
        assert waited_then_worked() < 0.2
    assert waited_then_worked() >= 0.3  # the wall clock again after the block
