"""The result row (store.rows.ResultRow), results.json's reader and writer, and the ranking of rows."""

import json

import pytest

from classify import ranking
from classify.stats import correctness
from featcache.store.results import append_rows, read_results, write_run
from featcache.store.rows import ResultRow, ResultsError


def row(model, acc, **more):
    return {"backbone": "b", "feature": "fc/none", "model": model, "val": {"accuracy": acc, "balanced_accuracy": acc,
                                                                           "macro_f1": acc}, "fit_s": 0.5, **more}


def test_a_row_round_trips_and_keeps_keys_it_does_not_know():
    d = row("logreg", 0.9, store="s.h5", dataset="alpha", producer="run", members=["x"], kind="soft-vote",
            from_a_newer_version={"kept": True})
    r = ResultRow.from_dict(d)
    assert r.unknown == {"from_a_newer_version": {"kept": True}} and r.key == ("b", "fc/none", "logreg")
    assert ResultRow.from_dict(r.to_dict()) == r and r.to_dict()["from_a_newer_version"] == {"kept": True}
    # A row an earlier version wrote (no kind, producer, dataset...) loads with the defaults.
    old = ResultRow.from_dict(row("knn", 0.8))
    assert (old.kind, old.dataset, old.producer, old.members, old.test) == ("model", "", "", [], None)
    assert {"dataset", "members", "producer"}.isdisjoint(old.to_dict())  # written only when set


@pytest.mark.parametrize("bad, message", [
    ({"backbone": "b"}, r"results\[0\]: missing 'feature'"),
    ({**row("m", 0.5), "fit_s": "slow"}, r"results\[0\]: 'fit_s' is str, expected int or float"),
    ([1, 2], r"results\[0\]: expected a JSON object, got list"),
])
def test_a_malformed_row_is_one_line_naming_it(bad, message):
    with pytest.raises(ResultsError, match=message):
        ResultRow.from_dict(bad, "results[0]")


def test_writers_replace_their_own_rows_and_keep_the_others(tmp_path):
    write_run(tmp_path, {"config": {}, "results": [row("logreg", 0.9)]})
    append_rows(tmp_path, [row("finetune", 0.7, model_path="ft.pt", later_key=1)], "finetune")
    write_run(tmp_path, {"config": {}, "results": [row("knn", 0.8)]})  # the rerun replaces only its rows
    data, path = read_results(tmp_path)
    assert path.name == "results.json"
    assert [(r["model"], r["producer"]) for r in data["results"]] == [("knn", "run"), ("finetune", "finetune")]
    assert data["results"][1]["later_key"] == 1
    with pytest.raises(ResultsError, match=r"results\[0\]: missing 'fit_s'"):
        write_run(tmp_path, {"results": [{k: v for k, v in row("svm", 0.1).items() if k != "fit_s"}]})
    assert len(read_results(tmp_path)[0]["results"]) == 2  # nothing written


def test_an_older_classify_output_with_metrics_json_only_still_reads(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({
        "store": "/x/lite0.h5", "feature": "fc/none", "dim": 8, "spec": {"backbone": "lite0"}, "select": "val",
        "results": [{k: v for k, v in row("logreg", 0.9).items() if k != "backbone"}]}))
    data, path = read_results(tmp_path)
    assert path.name == "metrics.json" and data["results"][0]["backbone"] == "lite0"
    assert data["extraction"] == [{"backbone": "lite0", "store": "/x/lite0.h5", "features": {"fc/none": 8}}]
    assert ranking.rank_rows(data["results"])[0].model == "logreg"


def test_ranking_finds_the_group_tied_with_rank_one():
    import numpy as np

    y = np.zeros(40, dtype=int)
    paths = [f"{i}.jpg" for i in range(40)]

    def scored(model, wrong):
        pred = y.copy()
        pred[:wrong] = 1
        acc = 1 - wrong / 40
        return row(model, acc, val={"accuracy": acc, "balanced_accuracy": acc, "macro_f1": acc, "n": 40,
                                    **correctness(pred, y, paths)})

    entries = ranking.rank_rows([scored("worse", 20), scored("best", 1), scored("close", 2)])
    assert [(e.model, e.rank, e.tied) for e in entries] == [("best", 1, True), ("close", 2, True), ("worse", 3, False)]
    assert [e.model for e in ranking.tied_group(entries)] == ["best", "close"]
    assert ranking.best_single(entries).model == "best"
    with pytest.raises(ResultsError, match="config.metric 'f1'"):
        ranking.rank_rows([], "f1")
