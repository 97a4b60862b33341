"""A run's results.json, read once as a :class:`~classify.leaderboard.Leaderboard`.

Everything the report shows comes from the leaderboard (the one object the report reads), so
the Markdown, HTML, JSON and CSV cannot disagree: they all format the same ranked
:class:`store.rows.ResultRow` list. Ranking them and finding the group tied with rank 1 is
:mod:`classify.ranking`'s, the same the run's ensembles and audit use.
"""

from __future__ import annotations

from pathlib import Path

from classify import ranking
from classify.leaderboard import Leaderboard
from classify.stats import paired_p
from featcache.common.errors import BadInput
from featcache.store.results import METRICS_FILE, RESULTS_FILE, ResultsError, read_results
from featcache.store.rows import ResultRow


class ReportError(BadInput):
    """A run directory or results file the report cannot use; the message names it."""


def parse_results(data: object, run_dir: Path, where: str = RESULTS_FILE) -> Leaderboard:
    """Check the shape of results.json (one clear line on the first problem) and rank its rows."""
    try:
        return Leaderboard.from_results(data, run_dir, where)
    except ResultsError as e:
        raise ReportError(str(e)) from None


def load_run(run_dir: str | Path) -> Leaderboard:
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


def as_run(run_dir_or_results: str | Path | dict | Leaderboard) -> Leaderboard:
    """Accept what callers have at hand: a run directory, its parsed results, or a leaderboard."""
    if isinstance(run_dir_or_results, Leaderboard):
        return run_dir_or_results
    if isinstance(run_dir_or_results, dict):
        out = (run_dir_or_results.get("config") or {}).get("out") or "."
        return parse_results(run_dir_or_results, Path(out), where="results")
    return load_run(run_dir_or_results)


def best_single(run: Leaderboard) -> ResultRow | None:
    """The best row that is one model on one feature set (what an ensemble has to beat)."""
    return ranking.best_single(run.rows)


def ensemble_verdicts(run: Leaderboard) -> list[dict]:
    """Each ensemble row against the best single model of its dataset: the paired test, and
    whether its score lies above the single model's 95% interval."""
    out = []
    for name in run.datasets:
        part = run.for_dataset(name)
        ref = best_single(part)
        for e in part.rows:
            if e.kind == "model" or ref is None:
                continue
            ci = ref.score_ci or [None, None]
            out.append({"dataset": name, "entry": e, "best": ref, "p": paired_p(ref.paired, e.paired),
                        "delta": e.score - ref.score, "outside": ci[1] is not None and e.score > ci[1]})
    return out


def across_datasets(run: Leaderboard) -> list[dict]:
    """Kornblith et al.'s summary: per backbone x feature x model present in every dataset, its
    accuracy on each (test where there is one, else val), the mean accuracy, and the mean of its
    ranks (ranked by each dataset's own selection, single models only). Best mean rank first."""
    names = run.datasets
    per: dict[tuple, dict] = {}
    for name in names:
        singles = [e for e in run.for_dataset(name).rows if e.kind == "model"]
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


def leaderboard_rows(run: Leaderboard) -> list[dict]:
    """Every number of every row, flat: the rows of leaderboard.json and leaderboard.csv."""
    return run.records()
