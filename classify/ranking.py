"""Result rows ranked by the chosen metric, with the group statistically tied with rank 1.

What "best" and "tied" mean everywhere: the report's leaderboard (:mod:`report.results`), the
run's ensembles (the tied group's soft vote, each backbone's best: :mod:`driver.ensembles`) and
its audit (the best single model's feature set: :mod:`driver.audit`) all rank here, so they
cannot disagree. Rows are :class:`store.rows.ResultRow` (or their dicts, as results.json holds
them); ranking sets each row's rank, its paired test against rank 1 and its tie mark.

Numpy and the standard library only (:mod:`classify.stats`): the report imports this without
scikit-learn.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from classify.config import METRICS
from classify.stats import ALPHA, paired_p
from featcache.store.rows import ResultRow, ResultsError, need, number


def ranked_row(row: ResultRow | dict, where: str = "row", metric: str = "accuracy") -> ResultRow:
    """An unranked row set to be ranked by ``metric``; a :class:`store.rows.ResultsError` names
    ``where`` and the first problem (a row without a type, or a val without the metrics the ranking reads)."""
    row = ResultRow.of(row, where)
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        need(row.val, key, f"{where}.val", (int, float, type(None)))
    return replace(row, metric=metric, val_source=row.val_source or "val split", rank=0, p_vs_best=None,
                   tied=False)


def rank_key(e: ResultRow) -> tuple:
    """Best score first (the metric's CV mean under --select cv, else its val value); ties go to
    val accuracy, balanced accuracy, macro-F1, then the faster fit."""
    v = e.val
    return (-e.score, -number(v.get("accuracy")), -number(v.get("balanced_accuracy")), -number(v.get("macro_f1")),
            number(e.fit_s), e.backbone, e.feature, e.model)


def rank(entries: list[ResultRow]) -> list[ResultRow]:
    """Ranked, with each row's paired test against the best-scoring row and the tied-with-best marking.

    A row is tied with the best when the exact McNemar test on the same images does not find it
    worse at the 5% level: the data cannot tell them apart. Rows scored on other images are not
    compared (p None, not tied). No correction for the many comparisons: it errs towards calling
    rows tied, the cautious side for a claim of "best".

    When a soft vote (of the tied group, or of each backbone's best) is itself tied with the best,
    the higher-scoring one goes first: among rows the
    data cannot separate, their average is the pick with the least variance
    (bench/selection_study.py measures it on held-out test sets).
    """
    entries = sorted(entries, key=rank_key)
    marked = []
    for i, e in enumerate(entries):
        p = 1.0 if i == 0 else paired_p(entries[0].paired, e.paired)
        marked.append(replace(e, p_vs_best=p, tied=i == 0 or (p is not None and p >= ALPHA)))
    vote = next((e for e in marked if e.kind == "soft-vote"), None)
    if vote is not None and vote.tied and marked[0] is not vote:
        marked.remove(vote)
        marked.insert(0, vote)
    return [replace(e, rank=i + 1) for i, e in enumerate(marked)]


def check_metric(metric: str, where: str = "results") -> str:
    if metric not in METRICS:
        raise ResultsError(f"{where}: config.metric {metric!r} is not one of {', '.join(METRICS)}")
    return metric


def rank_rows(rows: Iterable[ResultRow | dict], metric: str = "accuracy", where: str = "results") -> list[ResultRow]:
    """Every row ranked by ``metric``, each dataset's rows among themselves (datasets in the order
    their first row comes); a malformed row is a :class:`store.rows.ResultsError` naming ``where[i]``."""
    check_metric(metric, where)
    parsed = [ranked_row(r, f"{where}[{i}]", metric) for i, r in enumerate(rows)]
    return [e for name in dict.fromkeys(e.dataset for e in parsed)
            for e in rank([x for x in parsed if x.dataset == name])]


def tied_group(entries: list[ResultRow]) -> list[ResultRow]:
    """The rows the data cannot tell apart from rank 1 (rank 1 included), in rank order."""
    return [e for e in entries if e.tied]


def best_single(entries: list[ResultRow]) -> ResultRow | None:
    """The best row that is one model on one feature set (what an ensemble has to beat)."""
    return next((e for e in entries if e.kind == "model"), None)
