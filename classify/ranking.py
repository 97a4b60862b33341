"""Result rows ranked by the chosen metric, with the group statistically tied with rank 1.

What "best" and "tied" mean everywhere: the report's leaderboard (:mod:`report.results`), the
run's ensembles (the tied group's soft vote, each backbone's best: :mod:`driver.ensembles`) and
its audit (the best single model's feature set: :mod:`driver.audit`) all rank here, so they
cannot disagree. Rows are :class:`store.rows.ResultRow` (or their dicts, as results.json holds
them); an :class:`Entry` is one row with its rank, its paired test against rank 1 and its tie mark.

Numpy and the standard library only (:mod:`classify.stats`): the report imports this without
scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from classify.config import METRICS
from classify.stats import ALPHA, accuracy_interval, paired_p
from store.rows import ResultRow, ResultsError, need


@dataclass(frozen=True)
class Entry:
    """One leaderboard row: a classifier trained on one feature set of one backbone."""

    rank: int  # 1 = best
    backbone: str
    feature: str  # store key, "<layer>/<pool>"
    model: str
    val: dict  # ModelResult.val as saved
    test: dict | None
    fit_s: float
    params: dict
    val_source: str
    store: str
    model_path: str | None
    estimate_s: float | None = None  # the time estimated before fitting
    selection: str | None = None  # how the model was selected (classify.protocol)
    dataset: str = ""  # which dataset of a multi-dataset run ("" in a single one)
    cv: dict | None = None  # repeated CV of the chosen configuration over train+val (--select cv)
    kind: str = "model"  # model | concat (concatenated feature sets) | soft-vote (tied group, or each backbone's best)
    members: tuple[str, ...] = ()  # what an ensemble combines
    p_vs_best: float | None = None  # exact McNemar p against rank 1 on the same images (None: not paired)
    tied: bool = False  # not significantly worse than rank 1 (p >= 0.05), rank 1 included
    metric: str = "accuracy"  # what ranks the rows: accuracy or balanced_accuracy (run --metric)
    refit: bool = False  # the saved model was refitted on train+val (val scored by the train-only fit)

    @classmethod
    def of(cls, row: ResultRow | dict, where: str = "row", metric: str = "accuracy") -> Entry:
        """An unranked entry of one row; a :class:`store.rows.ResultsError` names ``where`` and the
        first problem (a row without a type, or a val without the metrics the ranking reads)."""
        row = ResultRow.of(row, where)
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            need(row.val, key, f"{where}.val", (int, float, type(None)))
        extra = row.extra
        return cls(
            rank=0, backbone=row.backbone, feature=row.feature, model=row.model, val=row.val, test=row.test,
            fit_s=float(row.fit_s), params=dict(row.params), val_source=row.val_source or "val split",
            store=row.store, model_path=row.model_path, estimate_s=extra.get("estimate_s"),
            selection=extra.get("selection"), dataset=row.dataset, cv=extra.get("cv") or None, kind=row.kind,
            members=tuple(row.members), metric=metric, refit=extra.get("final_fit") == "train+val",
        )

    @property
    def key(self) -> tuple[str, str, str]:
        """(backbone, feature, model), as :attr:`store.rows.ResultRow.key`."""
        return self.backbone, self.feature, self.model

    @property
    def score(self) -> float:
        """What the ranking uses: the CV mean of the metric under --select cv, else its val value."""
        if self.cv:
            key = "balanced_mean" if self.metric == "balanced_accuracy" else "mean"
            return _number(self.cv.get(key, self.cv.get("mean")))
        return _number(self.val.get(self.metric))

    @property
    def paired(self) -> dict:
        """The per-image record the paired test uses: CV's out-of-fold predictions, else val's."""
        return self.cv if self.cv else self.val

    @property
    def val_ci(self) -> list[float] | None:
        return self.val.get("accuracy_ci") or accuracy_interval(self.val.get("accuracy"), self.val.get("n"))

    @property
    def test_ci(self) -> list[float] | None:
        if not self.test:
            return None
        return self.test.get("accuracy_ci") or accuracy_interval(self.test.get("accuracy"), self.test.get("n"))

    @property
    def layer(self) -> str:
        return self.feature.rsplit("/", 1)[0] if self.kind == "model" else self.feature

    @property
    def pooling(self) -> str:
        return self.feature.rsplit("/", 1)[1] if "/" in self.feature and self.kind == "model" else ""

    @property
    def score_ci(self) -> list[float] | None:
        """The interval of what the ranking uses: CV's out-of-fold accuracy, else val's."""
        return (self.cv or {}).get("ci") if self.cv else self.val_ci

    @property
    def reported(self) -> tuple[str, float | None]:
        """(split, accuracy) a cross-dataset table uses: test when there is one, else val."""
        if self.test and self.test.get("accuracy") is not None:
            return "test", self.test.get("accuracy")
        return "val", self.val.get("accuracy")

    @property
    def feature_set(self) -> str:
        """What the colours of the plots distinguish: one backbone's layer and pooling."""
        return f"{self.backbone} {self.feature}"

    @property
    def label(self) -> str:
        return f"{self.model} on {self.feature_set}"


def _number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else -math.inf


def rank_key(e: Entry) -> tuple:
    """Best score first (the metric's CV mean under --select cv, else its val value); ties go to
    val accuracy, balanced accuracy, macro-F1, then the faster fit."""
    v = e.val
    return (-e.score, -_number(v.get("accuracy")), -_number(v.get("balanced_accuracy")), -_number(v.get("macro_f1")),
            _number(e.fit_s), e.backbone, e.feature, e.model)


def rank(entries: list[Entry]) -> list[Entry]:
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


def rank_rows(rows: Iterable[ResultRow | dict], metric: str = "accuracy", where: str = "results") -> list[Entry]:
    """Every row as an :class:`Entry`, each dataset's rows ranked among themselves (datasets in
    the order their first row comes); a malformed row is a :class:`store.rows.ResultsError`
    naming ``where[i]``."""
    check_metric(metric, where)
    parsed = [Entry.of(r, f"{where}[{i}]", metric) for i, r in enumerate(rows)]
    return [e for name in dict.fromkeys(e.dataset for e in parsed)
            for e in rank([x for x in parsed if x.dataset == name])]


def tied_group(entries: list[Entry]) -> list[Entry]:
    """The rows the data cannot tell apart from rank 1 (rank 1 included), in rank order."""
    return [e for e in entries if e.tied]


def best_single(entries: list[Entry]) -> Entry | None:
    """The best row that is one model on one feature set (what an ensemble has to beat)."""
    return next((e for e in entries if e.kind == "model"), None)
