"""A run's results.json, read once and turned into ranked leaderboard entries.

Everything the report shows comes from here, so the Markdown, HTML, JSON and CSV
cannot disagree: they all format the same :class:`Entry` list.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from classify.stats import ALPHA, accuracy_interval, paired_p

from store.results import METRICS_FILE, RESULTS_FILE, ResultsError, read_results  # noqa: E402


class ReportError(ValueError):
    """A run directory or results file the report cannot use; the message names it."""


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


@dataclass(frozen=True)
class Run:
    """results.json as the report needs it."""

    dir: Path
    config: dict
    extraction: list[dict]
    entries: list[Entry]  # ranked, best first
    seconds: float | None
    skipped: list[dict] = field(default_factory=list)  # models the budget skipped, with the reason
    few_shot: list[dict] = field(default_factory=list)  # one curve per feature set (classify.fewshot)

    @property
    def best(self) -> Entry | None:
        return self.entries[0] if self.entries else None

    @property
    def selection(self) -> str:
        """"cv" when rows were ranked by repeated CV over train+val, else "val"."""
        return "cv" if any(e.cv for e in self.entries) else "val"

    @property
    def metric(self) -> str:
        return self.entries[0].metric if self.entries else "accuracy"

    @property
    def tied_group(self) -> list[Entry]:
        return [e for e in self.entries if e.tied]

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(e.dataset for e in self.entries))

    def for_dataset(self, name: str) -> "Run":
        """The rows of one dataset, ranked among themselves (a multi-dataset report's section)."""
        extraction = [r for r in self.extraction if (r.get("dataset") or "") == name]
        data = next((r["data"] for r in extraction if r.get("data")), None)
        return replace(self, entries=[e for e in self.entries if e.dataset == name], extraction=extraction,
                       config={**self.config, **({"data": data} if data else {})},
                       skipped=[s for s in self.skipped if (s.get("dataset") or "") == name],
                       few_shot=[c for c in self.few_shot if (c.get("dataset") or "") == name])

    @property
    def multi(self) -> bool:
        return len(self.datasets) > 1

    @property
    def top_ks(self) -> list[str]:
        """Every top-k key any row has (``top1``, ``top3``...), in order of k."""
        keys = {k for e in self.entries for k in (e.val.get("top_k") or {})}
        return sorted(keys, key=lambda k: int(k[3:]) if k[3:].isdigit() else 0)

    @property
    def feature_sets(self) -> list[str]:
        return list(dict.fromkeys(e.feature_set for e in self.entries))

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(e.model for e in self.entries))


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


def _need(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ReportError(f"{where}: missing {key!r}")
    if not isinstance(obj[key], kind):
        raise ReportError(f"{where}: {key!r} is {type(obj[key]).__name__}, expected {getattr(kind, '__name__', kind)}")
    return obj[key]


METRICS = ("accuracy", "balanced_accuracy")


def _entry(row: dict, where: str, metric: str = "accuracy") -> Entry:
    names = [str(_need(row, key, where, str)) for key in ("backbone", "feature", "model")]
    val = _need(row, "val", where, dict)
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        _need(val, key, f"{where}.val", (int, float, type(None)))
    test = row.get("test")
    return Entry(
        rank=0, backbone=names[0], feature=names[1], model=names[2], val=val,
        test=test if isinstance(test, dict) else None,
        fit_s=float(_need(row, "fit_s", where, (int, float))), params=dict(row.get("params") or {}),
        val_source=str(row.get("val_source") or "val split"), store=str(row.get("store") or ""),
        model_path=row.get("model_path"),
        estimate_s=(row.get("extra") or {}).get("estimate_s"), selection=(row.get("extra") or {}).get("selection"),
        dataset=str(row.get("dataset") or ""), cv=(row.get("extra") or {}).get("cv") or None,
        kind=str(row.get("kind") or "model"), members=tuple(row.get("members") or ()), metric=metric,
        refit=(row.get("extra") or {}).get("final_fit") == "train+val",
    )


def parse_results(data: Any, run_dir: Path, where: str = RESULTS_FILE) -> Run:
    """Check the shape of results.json (one clear line on the first problem) and rank its rows."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: expected a JSON object with 'results', got {type(data).__name__}")
    rows = _need(data, "results", where, list)
    metric = (data.get("config") or {}).get("metric") or "accuracy"
    if metric not in METRICS:
        raise ReportError(f"{where}: config.metric {metric!r} is not one of {', '.join(METRICS)}")
    parsed = [_entry(r, f"{where}: results[{i}]", metric) for i, r in enumerate(rows)]
    entries = [e for name in dict.fromkeys(e.dataset for e in parsed) for e in rank([x for x in parsed
                                                                                       if x.dataset == name])]
    extraction = data.get("extraction") or []
    if not isinstance(extraction, list):
        raise ReportError(f"{where}: 'extraction' is {type(extraction).__name__}, expected list")
    seconds = data.get("seconds")
    skipped = data.get("skipped") or []
    few_shot = data.get("few_shot") or []
    return Run(dir=run_dir, config=dict(data.get("config") or {}), extraction=extraction, entries=entries,
               seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
               skipped=[s for s in skipped if isinstance(s, dict)] if isinstance(skipped, list) else [],
               few_shot=[c for c in few_shot if isinstance(c, dict) and isinstance(c.get("points"), list)]
               if isinstance(few_shot, list) else [])


def load_run(run_dir: str | Path) -> Run:
    """Read RUN_DIR/results.json (or a classify output's metrics.json); a missing or malformed
    one is a :class:`ReportError` naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    try:
        data, path = read_results(run_dir)
    except FileNotFoundError:
        raise ReportError(f"{run_dir}: not a run directory (no {RESULTS_FILE} or {METRICS_FILE}; run "
                          "`pipeline.py run` or `pipeline.py classify --out` first)") from None
    except ResultsError as e:
        raise ReportError(str(e)) from None
    return parse_results(data, run_dir, where=str(path))


def as_run(run_dir_or_results: str | Path | dict | Run) -> Run:
    """Accept what callers have at hand: a run directory, its parsed results, or a Run."""
    if isinstance(run_dir_or_results, Run):
        return run_dir_or_results
    if isinstance(run_dir_or_results, dict):
        out = (run_dir_or_results.get("config") or {}).get("out") or "."
        return parse_results(run_dir_or_results, Path(out), where="results")
    return load_run(run_dir_or_results)


def best_single(run: Run) -> Entry | None:
    """The best row that is one model on one feature set (what an ensemble has to beat)."""
    return next((e for e in run.entries if e.kind == "model"), None)


def ensemble_verdicts(run: Run) -> list[dict]:
    """Each ensemble row against the best single model of its dataset: the paired test, and
    whether its score lies above the single model's 95% interval."""
    out = []
    for name in run.datasets:
        part = run.for_dataset(name)
        ref = best_single(part)
        for e in part.entries:
            if e.kind == "model" or ref is None:
                continue
            ci = ref.score_ci or [None, None]
            out.append({"dataset": name, "entry": e, "best": ref, "p": paired_p(ref.paired, e.paired),
                        "delta": e.score - ref.score, "outside": ci[1] is not None and e.score > ci[1]})
    return out


def across_datasets(run: Run) -> list[dict]:
    """Kornblith et al.'s summary: per backbone x feature x model present in every dataset, its
    accuracy on each (test where there is one, else val), the mean accuracy, and the mean of its
    ranks (ranked by each dataset's own selection, single models only). Best mean rank first."""
    names = run.datasets
    per: dict[tuple, dict] = {}
    for name in names:
        singles = [e for e in run.for_dataset(name).entries if e.kind == "model"]
        for r, e in enumerate(singles, 1):
            per.setdefault((e.backbone, e.feature, e.model), {})[name] = (r, e)
    rows = []
    for (bb, ft, md), got in per.items():
        if len(got) != len(names):
            continue
        accs = {n: got[n][1].reported[1] for n in names}
        ranks = {n: got[n][0] for n in names}
        vals = [a for a in accs.values() if isinstance(a, (int, float))]
        rows.append({"backbone": bb, "feature": ft, "model": md, "accuracy": accs, "rank": ranks,
                     "split": {n: got[n][1].reported[0] for n in names},
                     "mean_accuracy": sum(vals) / len(vals) if len(vals) == len(names) else None,
                     "mean_rank": sum(ranks.values()) / len(ranks)})
    rows.sort(key=lambda r: (r["mean_rank"], -(r["mean_accuracy"] or 0.0)))
    return rows


def leaderboard_rows(run: Run) -> list[dict]:
    """Every number of every entry, flat: the rows of leaderboard.json and leaderboard.csv."""
    rows = []
    for e in run.entries:
        v, top = e.val, e.val.get("top_k") or {}
        vci, tci, cv = e.val_ci or [None, None], e.test_ci or [None, None], e.cv or {}
        cci = cv.get("ci") or [None, None]
        rows.append({
            **({"dataset": e.dataset} if len(run.datasets) > 1 or e.dataset else {}),
            "rank": e.rank, "backbone": e.backbone, "feature": e.feature, "layer": e.layer, "pooling": e.pooling,
            "model": e.model, "kind": e.kind, "selection_score": e.score if e.score != -math.inf else None,
            "tied_with_best": e.tied, "p_vs_best": e.p_vs_best,
            "val_n": v.get("n"), "val_accuracy": v.get("accuracy"),
            "val_accuracy_ci_low": vci[0], "val_accuracy_ci_high": vci[1],
            "cv_accuracy_mean": cv.get("mean"), "cv_accuracy_sd": cv.get("sd"), "cv_n": cv.get("n"),
            "cv_accuracy_ci_low": cci[0], "cv_accuracy_ci_high": cci[1],
            "cv_balanced_accuracy_mean": cv.get("balanced_mean"),
            "val_balanced_accuracy": v.get("balanced_accuracy"), "val_macro_f1": v.get("macro_f1"),
            "val_log_loss": v.get("log_loss"), **{f"val_{k}": top.get(k) for k in run.top_ks},
            "test_n": e.test.get("n") if e.test else None, "test_accuracy": e.test.get("accuracy") if e.test else None,
            "test_accuracy_ci_low": tci[0], "test_accuracy_ci_high": tci[1],
            "test_balanced_accuracy": e.test.get("balanced_accuracy") if e.test else None,
            "final_fit": "train+val" if e.refit else "train",
            "fit_s": e.fit_s, "estimate_s": e.estimate_s, "predict_s": v.get("predict_s"),
            "params": json.dumps(e.params, sort_keys=True), "val_source": e.val_source, "model_path": e.model_path,
            **({"members": json.dumps(list(e.members))} if e.members else {}),
        })
    return rows
