"""The result row: the second contract between the stages (:mod:`store.schema` is the first).

One row is one classifier scored on one feature set of one backbone, or an ensemble of such
rows. It is the one row type from fit to report: ``classify.fit`` returns it (with the fitted
estimator and its out-of-fold predictions in memory, :attr:`ResultRow.fitted`),
:mod:`classify.ranking` ranks it (``rank``, ``p_vs_best``, ``tied``), a
``classify.leaderboard.Leaderboard`` holds it, ``run`` adds its ensembles and fine-tuned row, and
the report formats it. On disk a row is the JSON object :meth:`ResultRow.to_dict` returns, in the
``results`` list of a ``results.json`` (:mod:`store.results`, its one reader and writer); the
ranking and the in-memory fit are not written (the ranking is recomputed when a file is read).

Keys this version does not know are **kept**, not refused: :meth:`ResultRow.from_dict` puts them
in :attr:`ResultRow.unknown` and :meth:`ResultRow.to_dict` writes them back. A results.json is
shared by producers that may run different versions of this code (``finetune --run-dir`` adding
its row to an older run's file, a rerun keeping the rows other producers added), so a writer that
dropped keys it does not know would silently lose another producer's data, and a reader that
refused them would make the report fail on a newer file. Missing optional keys take their
defaults, so every results.json an earlier version wrote still loads.

Like the rest of :mod:`store`, no torch, scikit-learn or numpy: values are JSON-ready already
(classify's ``to_jsonable`` makes them so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from featcache.common.errors import BadInput
from featcache.common.intervals import accuracy_interval

KINDS = ("model", "concat", "soft-vote")  # a classifier, concatenated feature sets, a soft vote of rows


class ResultsError(BadInput):
    """A results file or row that cannot be used; the message names where it is and what is wrong."""


@dataclass(frozen=True)
class ResultRow:
    """One leaderboard row as every stage writes and reads it."""

    backbone: str  # "a+b" for an ensemble across backbones
    feature: str  # the store key "<layer>/<pool>", "finetune", or what an ensemble combines
    model: str  # the zoo name with its variant ("logreg+views+flip"), "finetune", "soft-vote of 3"
    val: dict  # classify.evaluate.evaluate() on val (accuracy, its interval, the correctness bits...)
    fit_s: float
    store: str = ""  # the feature store the row was scored on ("" when none)
    dataset: str = ""  # which dataset of a multi-dataset run ("" in a single one; not written then)
    preprocess: list = field(default_factory=list)  # the preprocessing steps before the model
    params: dict = field(default_factory=dict)  # what the sweep or early stopping chose
    val_source: str = ""  # "val split" or "holdout from train"
    test: dict | None = None  # evaluate() on test, computed once
    model_path: str | None = None  # the saved model (a soft vote: its members' models in one file; None: not saved)
    extra: dict = field(default_factory=dict)  # the producer's details: estimate_s, cv, tta, final_fit...
    kind: str = "model"  # one of KINDS
    members: list = field(default_factory=list)  # what an ensemble combines (not written when empty)
    producer: str = ""  # who wrote it to results.json: run, classify, finetune (not written when empty)
    unknown: dict = field(default_factory=dict)  # keys this version does not know, kept as read
    # The ranking (classify.ranking; not written: recomputed whenever rows are read)
    rank: int = 0  # 1 = best; 0: not ranked
    p_vs_best: float | None = None  # exact McNemar p against rank 1 on the same images (None: not paired)
    tied: bool = False  # not significantly worse than rank 1 (p >= 0.05), rank 1 included
    metric: str = "accuracy"  # what ranked it: accuracy or balanced_accuracy
    # In memory only: the fitted estimator, out-of-fold and split probabilities (classify.fit.Fitted)
    fitted: Any = field(default=None, repr=False, compare=False)

    # -- identity

    @property
    def key(self) -> tuple[str, str, str]:
        """(backbone, feature, model): what names a row within one dataset."""
        return self.backbone, self.feature, self.model

    @property
    def label(self) -> str:
        return f"{self.model} on {self.feature_set}"

    @property
    def feature_set(self) -> str:
        """What the colours of the plots distinguish: one backbone's layer and pooling."""
        return f"{self.backbone} {self.feature}"

    @property
    def layer(self) -> str:
        return self.feature.rsplit("/", 1)[0] if self.kind == "model" else self.feature

    @property
    def pooling(self) -> str:
        return self.feature.rsplit("/", 1)[1] if "/" in self.feature and self.kind == "model" else ""

    # -- what the producer recorded in ``extra``

    @property
    def estimate_s(self) -> float | None:
        """The time estimated before fitting."""
        return self.extra.get("estimate_s")

    @property
    def selection(self) -> str | None:
        """How the model was selected (classify.protocol)."""
        return self.extra.get("selection")

    @property
    def cv(self) -> dict | None:
        """Repeated CV of the chosen configuration over train+val (--select cv)."""
        return self.extra.get("cv") or None

    @property
    def refit(self) -> bool:
        """The saved model was refitted on train+val (val scored by the train-only fit)."""
        return self.extra.get("final_fit") == "train+val"

    # -- scores

    @property
    def score(self) -> float:
        """What the ranking uses: the CV mean of the metric under --select cv, else its val value."""
        if self.cv:
            key = "balanced_mean" if self.metric == "balanced_accuracy" else "mean"
            return number(self.cv.get(key, self.cv.get("mean")))
        return number(self.val.get(self.metric))

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
    def score_ci(self) -> list[float] | None:
        """The interval of what the ranking uses: CV's out-of-fold accuracy, else val's."""
        return (self.cv or {}).get("ci") if self.cv else self.val_ci

    @property
    def reported(self) -> tuple[str, float | None]:
        """(split, accuracy) a cross-dataset table uses: test when there is one, else val."""
        if self.test and self.test.get("accuracy") is not None:
            return "test", self.test.get("accuracy")
        return "val", self.val.get("accuracy")

    # -- JSON

    def to_dict(self) -> dict:
        """The row as results.json holds it (dataset, members and producer only when set; then the
        keys it was read with that this version does not know)."""
        out: dict[str, Any] = {"dataset": self.dataset} if self.dataset else {}
        out.update(backbone=self.backbone, feature=self.feature, store=self.store, model=self.model,
                   preprocess=list(self.preprocess), params=dict(self.params), fit_s=self.fit_s, val=self.val,
                   val_source=self.val_source, test=self.test, model_path=self.model_path, extra=dict(self.extra),
                   kind=self.kind)
        if self.members:
            out["members"] = list(self.members)
        if self.producer:
            out["producer"] = self.producer
        out.update({k: v for k, v in self.unknown.items() if k not in out and k not in _KNOWN})
        return out

    @classmethod
    def from_dict(cls, row: Any, where: str = "row") -> ResultRow:
        """A row read from JSON (or built as a dict). ``backbone``, ``feature``, ``model`` (strings),
        ``val`` (an object) and ``fit_s`` (a number) are required; the rest default as in rows
        earlier versions wrote; unknown keys are kept. A :class:`ResultsError` names ``where`` and the
        first problem."""
        if not isinstance(row, dict):
            raise ResultsError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key, kind in _REQUIRED:
            need(row, key, where, kind)
        extra, test, members = row.get("extra"), row.get("test"), row.get("members")
        return cls(
            backbone=row["backbone"], feature=row["feature"], model=row["model"], val=row["val"],
            fit_s=float(row["fit_s"]), store=str(row.get("store") or ""), dataset=str(row.get("dataset") or ""),
            preprocess=list(row.get("preprocess") or []), params=dict(row.get("params") or {}),
            val_source=str(row.get("val_source") or ""), test=test if isinstance(test, dict) else None,
            model_path=None if row.get("model_path") is None else str(row["model_path"]),
            extra=dict(extra) if isinstance(extra, dict) else {}, kind=str(row.get("kind") or "model"),
            members=list(members) if isinstance(members, (list, tuple)) else [],
            producer=str(row.get("producer") or ""),
            unknown={k: v for k, v in row.items() if k not in _KNOWN and k not in _NOT_WRITTEN},
        )

    @classmethod
    def of(cls, row: ResultRow | dict, where: str = "row") -> ResultRow:
        """``row`` itself, or read from its dict."""
        return row if isinstance(row, cls) else cls.from_dict(row, where)


def number(x: Any) -> float:
    """A finite number as float, anything else as -inf (ranks last)."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else -math.inf


def need(obj: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    """``obj[key]``, or a :class:`ResultsError` saying it is missing or of the wrong type."""
    if not isinstance(obj, dict) or key not in obj:
        raise ResultsError(f"{where}: missing {key!r}")
    if not isinstance(obj[key], kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ResultsError(f"{where}: {key!r} is {type(obj[key]).__name__}, expected {names}")
    return obj[key]


_REQUIRED = (("backbone", str), ("feature", str), ("model", str), ("val", dict), ("fit_s", (int, float)))
_NOT_WRITTEN = frozenset({"unknown", "rank", "p_vs_best", "tied", "metric", "fitted"})  # derived or in memory
_KNOWN = frozenset(f.name for f in fields(ResultRow)) - _NOT_WRITTEN
