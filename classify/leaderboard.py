"""A :class:`Leaderboard`: the ranked rows of a comparison and what the report says about them.

One object from the zoo to the report: :func:`classify.zoo.compare_zoo` returns one for a
feature set, ``run`` joins its feature sets', ensembles' and fine-tuned rows into one, the
report (:mod:`report`) reads one, and ``results.json`` is one written down
(:meth:`Leaderboard.to_results`, :meth:`Leaderboard.from_results`). In a notebook,
``board.best.predict(X)``, ``board.to_pandas()`` and the compact table Jupyter shows.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from classify import ranking
from featcache.store.results import read_results
from featcache.store.rows import ResultRow, ResultsError, need


@dataclass(frozen=True)
class Leaderboard:
    """Ranked rows (best first) and the facts beside them, as results.json holds them."""

    rows: list[ResultRow]
    config: dict = field(default_factory=dict)  # the options that made it (``metric`` ranks the rows)
    extraction: list[dict] = field(default_factory=list)  # one record per store
    skipped: list[dict] = field(default_factory=list)  # models, backbones or the fine-tune left out, and why
    few_shot: list[dict] = field(default_factory=list)  # one curve per feature set (classify.fewshot)
    seconds: float | None = None  # the whole comparison or run
    dir: Path | None = None  # where it was written or read (None: only in memory)
    meta: dict = field(default_factory=dict)  # a classify comparison's settings (metrics.json's keys)
    more: dict = field(default_factory=dict)  # other top-level keys of results.json (budget_s, phases, datasets)

    @classmethod
    def ranked(cls, rows: list[ResultRow | dict], metric: str = "accuracy", **facts: Any) -> Leaderboard:
        """``rows`` ranked by ``metric`` (each dataset's among themselves)."""
        config = {**facts.pop("config", {}), "metric": metric}
        return cls(ranking.rank_rows(rows, metric), config=config, **facts)

    # -- what it says

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):  # noqa: ANN204 - the ranked rows, best first
        return iter(self.rows)

    def __getitem__(self, i: int) -> ResultRow:
        return self.rows[i]

    @property
    def top(self) -> ResultRow | None:
        """Rank 1."""
        return self.rows[0] if self.rows else None

    @property
    def best(self) -> Any:
        """The fitted estimator of the best-ranked row that has one in memory (``predict``,
        ``predict_proba``); None when no row was fitted in this process (a board read from disk:
        ``classify.persist.load_model(row.model_path)`` loads a row's model; ``featcache predict``
        runs any row's file, a soft vote's included)."""
        return next((r.fitted.estimator for r in self.rows if r.fitted is not None), None)

    @property
    def selection(self) -> str:
        """"cv" when rows were ranked by repeated CV over train+val, else "val"."""
        return "cv" if any(e.cv for e in self.rows) else "val"

    @property
    def metric(self) -> str:
        return self.rows[0].metric if self.rows else self.config.get("metric") or "accuracy"

    @property
    def tied_group(self) -> list[ResultRow]:
        return ranking.tied_group(self.rows)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(e.dataset for e in self.rows))

    @property
    def multi(self) -> bool:
        return len(self.datasets) > 1

    def for_dataset(self, name: str) -> Leaderboard:
        """The rows of one dataset, ranked among themselves (a multi-dataset report's section)."""
        extraction = [r for r in self.extraction if (r.get("dataset") or "") == name]
        data = next((r["data"] for r in extraction if r.get("data")), None)
        return replace(self, rows=[e for e in self.rows if e.dataset == name], extraction=extraction,
                       config={**self.config, **({"data": data} if data else {})},
                       skipped=[s for s in self.skipped if (s.get("dataset") or "") == name],
                       few_shot=[c for c in self.few_shot if (c.get("dataset") or "") == name])

    @property
    def top_ks(self) -> list[str]:
        """Every top-k key any row has (``top1``, ``top3``...), in order of k."""
        keys = {k for e in self.rows for k in (e.val.get("top_k") or {})}
        return sorted(keys, key=lambda k: int(k[3:]) if k[3:].isdigit() else 0)

    @property
    def feature_sets(self) -> list[str]:
        return list(dict.fromkeys(e.feature_set for e in self.rows))

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(e.model for e in self.rows))

    # -- as tables

    def records(self) -> list[dict]:
        """Every number of every row, flat: the rows of leaderboard.csv, leaderboard.json and :meth:`to_pandas`."""
        out = []
        for e in self.rows:
            v, top = e.val, e.val.get("top_k") or {}
            vci, tci, cv = e.val_ci or [None, None], e.test_ci or [None, None], e.cv or {}
            cci = cv.get("ci") or [None, None]
            out.append({
                **({"dataset": e.dataset} if len(self.datasets) > 1 or e.dataset else {}),
                "rank": e.rank, "backbone": e.backbone, "feature": e.feature, "layer": e.layer, "pooling": e.pooling,
                "model": e.model, "kind": e.kind, "selection_score": e.score if e.score != -math.inf else None,
                "tied_with_best": e.tied, "p_vs_best": e.p_vs_best,
                "val_n": v.get("n"), "val_accuracy": v.get("accuracy"),
                "val_accuracy_ci_low": vci[0], "val_accuracy_ci_high": vci[1],
                "cv_accuracy_mean": cv.get("mean"), "cv_accuracy_sd": cv.get("sd"), "cv_n": cv.get("n"),
                "cv_accuracy_ci_low": cci[0], "cv_accuracy_ci_high": cci[1],
                "cv_balanced_accuracy_mean": cv.get("balanced_mean"),
                "val_balanced_accuracy": v.get("balanced_accuracy"), "val_macro_f1": v.get("macro_f1"),
                "val_log_loss": v.get("log_loss"), **{f"val_{k}": top.get(k) for k in self.top_ks},
                "test_n": e.test.get("n") if e.test else None,
                "test_accuracy": e.test.get("accuracy") if e.test else None,
                "test_accuracy_ci_low": tci[0], "test_accuracy_ci_high": tci[1],
                "test_balanced_accuracy": e.test.get("balanced_accuracy") if e.test else None,
                "final_fit": "train+val" if e.refit else "train",
                "fit_s": e.fit_s, "estimate_s": e.estimate_s, "predict_s": v.get("predict_s"),
                "params": json.dumps(e.params, sort_keys=True), "val_source": e.val_source, "model_path": e.model_path,
                **({"members": json.dumps(list(e.members))} if e.members else {}),
            })
        return out

    def to_pandas(self) -> Any:
        """:meth:`records` as a DataFrame: the columns of leaderboard.csv."""
        import pandas as pd

        records = self.records()
        columns = list(dict.fromkeys(k for r in records for k in r))
        return pd.DataFrame.from_records(records, columns=columns or None)

    def _repr_html_(self) -> str:
        from classify.table import html_table  # the compact table the report shows

        return html_table(self.rows, styled=True)

    # -- on disk

    def to_results(self) -> dict:
        """results.json's top-level keys."""
        return {"config": self.config, **self.more, "extraction": self.extraction,
                "results": [r.to_dict() for r in self.rows], "skipped": self.skipped, "few_shot": self.few_shot,
                **({"seconds": self.seconds} if self.seconds is not None else {})}

    @classmethod
    def from_results(cls, data: Any, run_dir: str | os.PathLike | None = None, where: str = "results") -> Leaderboard:
        """results.json's contents, checked (a :class:`store.rows.ResultsError` names ``where``
        and the first problem) and ranked."""
        if not isinstance(data, dict):
            raise ResultsError(f"{where}: expected a JSON object with 'results', got {type(data).__name__}")
        config = dict(data.get("config") or {})
        metric = config.get("metric") or "accuracy"
        rows = need(data, "results", where, list)
        ranking.check_metric(metric, where)
        extraction = data.get("extraction") or []
        if not isinstance(extraction, list):
            raise ResultsError(f"{where}: 'extraction' is {type(extraction).__name__}, expected list")
        seconds, skipped, few_shot = data.get("seconds"), data.get("skipped") or [], data.get("few_shot") or []
        known = {"config", "extraction", "results", "skipped", "few_shot", "seconds"}
        return cls(ranking.rank_rows(rows, metric, where=f"{where}: results"), config=config, extraction=extraction,
                   skipped=[s for s in skipped if isinstance(s, dict)] if isinstance(skipped, list) else [],
                   few_shot=[c for c in few_shot if isinstance(c, dict) and isinstance(c.get("points"), list)]
                   if isinstance(few_shot, list) else [],
                   seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
                   dir=Path(run_dir) if run_dir is not None else None,
                   more={k: v for k, v in data.items() if k not in known})

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Leaderboard:
        """RUN_DIR/results.json (a run's or a classify output's; an older classify output's metrics.json)."""
        data, path = read_results(run_dir)
        return cls.from_results(data, run_dir, where=str(path))

    def save(self, out_dir: str | os.PathLike) -> Path:
        """What ``classify --out`` writes: each fitted row's model file (and out-of-fold file),
        results.json, metrics.json, metrics.csv and summary.md. Returns ``out_dir``."""
        from classify.outputs import save_files, write_reports

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = [save_files(out, r) for r in self.rows]
        write_reports(out, rows, {**self.meta, "skipped": self.skipped,
                                  **({"few_shot": self.few_shot[0]} if self.few_shot else {})})
        return out
