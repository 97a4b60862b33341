"""A run's results.json, read once and turned into ranked leaderboard entries.

Everything the report shows comes from here, so the Markdown, HTML, JSON and CSV
cannot disagree: they all format the same :class:`~classify.ranking.Entry` list. The rows are
:class:`store.rows.ResultRow`; ranking them and finding the group tied with rank 1 is
:mod:`classify.ranking`'s, the same the run's ensembles and audit use.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from classify import ranking
from classify.ranking import METRICS, Entry, rank, rank_key  # noqa: F401 - re-exported (moved to classify.ranking)
from classify.stats import paired_p
from common.errors import BadInput
from store.results import METRICS_FILE, RESULTS_FILE, ResultsError, read_results
from store.rows import need


class ReportError(BadInput):
    """A run directory or results file the report cannot use; the message names it."""


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
        return ranking.tied_group(self.entries)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(e.dataset for e in self.entries))

    def for_dataset(self, name: str) -> Run:
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


def parse_results(data: Any, run_dir: Path, where: str = RESULTS_FILE) -> Run:
    """Check the shape of results.json (one clear line on the first problem) and rank its rows."""
    if not isinstance(data, dict):
        raise ReportError(f"{where}: expected a JSON object with 'results', got {type(data).__name__}")
    metric = (data.get("config") or {}).get("metric") or "accuracy"
    try:
        rows = need(data, "results", where, list)
        ranking.check_metric(metric, where)
        entries = ranking.rank_rows(rows, metric, where=f"{where}: results")  # each dataset's rows among themselves
    except ResultsError as e:
        raise ReportError(str(e)) from None
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
    """Read RUN_DIR/results.json (a run's or a classify output's; an older classify output's
    metrics.json); a missing or malformed one is a :class:`ReportError` naming it."""
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
    return ranking.best_single(run.entries)


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
