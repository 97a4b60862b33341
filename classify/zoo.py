"""Compare: a planned zoo fitted on one feature set -> a :class:`~classify.leaderboard.Leaderboard`.

The loop of the comparison, and nothing else: each planned model (approximated or skipped when
a time budget runs short, :func:`classify.plan.within`) is fitted (:func:`classify.fit.fit`),
then the few-shot curve. It writes nothing itself; a caller that wants files attaches a
:class:`classify.outputs.Writer`, which reuses what an earlier run finished, saves each model as
it finishes and rewrites the reports. Ctrl-C (in the main thread) stops after the model in hand:
the writer's reports are written, then KeyboardInterrupt is raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from classify import selection
from classify.features import FeatureSet
from classify.fewshot import few_shot_curve
from classify.fit import backbone_of, fit
from classify.leaderboard import Leaderboard
from classify.plan import ZooPlan, within
from featcache.common.interrupt import StopAfterCurrent
from featcache.store.rows import ResultRow

if TYPE_CHECKING:
    from classify.outputs import Writer

log = logging.getLogger(__name__)


def comparison_meta(data: FeatureSet, zoo: ZooPlan) -> dict:
    """The settings of one comparison, as metrics.json records them."""
    return {
        **({"views": data.n_views} if data.n_views else {}),
        "store": str(data.store), "feature": data.feature, "dim": data.dim, "cache_key": data.cache_key,
        "complete": data.complete, "spec": data.spec, "class_names": data.class_names,
        "n_classes": int(len(np.unique(data.train.y))), "counts": data.counts(), "val_source": data.val_source,
        "models": list(zoo.requested), "seed": zoo.seed, "jobs": zoo.jobs, "preprocess": zoo.preprocess,
        **zoo.to_meta(), "skipped": [{"backbone": backbone_of(data), "feature": data.feature, **s} for s in zoo.skipped],
        "reused": [],
    }


def compare_zoo(data: FeatureSet, zoo: ZooPlan, writer: Writer | None = None, *,
                fitted: Mapping[str, Callable[[], list[ResultRow]]] | None = None,
                curve: Callable[[], tuple[dict, float]] | None = None) -> Leaderboard:
    """Fit every model of ``zoo`` on ``data`` -> the ranked leaderboard (rows with their fitted
    estimators in memory, skipped models and why, the few-shot curve, the seconds it took).

    ``fitted``: models fitted elsewhere (``run``'s worker processes), by label -> a function that
    returns their rows, already saved and recorded under ``writer``'s folder; ``curve``: the
    few-shot curve made elsewhere -> (curve, seconds). Then the reports are written once, at the end."""
    fitted = fitted or {}
    meta = comparison_meta(data, zoo)
    for rec in zoo.skipped:
        log.info("%-16s skipped: %s", rec["model"], rec["reason"])
    if zoo.warm_workers:
        selection.warm_workers(zoo.jobs)  # some model's folds will go to the workers: start them meanwhile
    rows: list[ResultRow] = []
    start = time.perf_counter()
    with StopAfterCurrent(logger=log) as stop:
        for full in zoo.models:
            label = stop.what = full.label
            left = None if zoo.budget.seconds is None else zoo.budget.seconds - (time.perf_counter() - start)
            plan = within(full, left)
            if label in fitted:  # fitted, saved and recorded on a worker: its files are there
                got = fitted[label]()
                rows += writer.adopt(plan, got) if writer is not None else got
            else:
                # A fit an earlier pass finished costs nothing: the budget skips only what it would fit.
                done, source = writer.recall(full if plan.skip else plan) if writer is not None else (None, "")
                if done is not None:
                    log.info("%s reused from %s", label, source)
                    rows += done
                    meta["reused"].append(label)
                elif plan.skip:
                    log.warning("%-16s skipped: %s", label, plan.skip)
                    meta["skipped"].append({"backbone": backbone_of(data), "feature": data.feature, "model": label,
                                            "reason": plan.skip, "estimate_s": plan.total_s})
                else:
                    got = fit(plan, data)
                    rows += writer.record(plan, got) if writer is not None else got
                if writer is not None:
                    writer.report(rows, meta)
            if stop.requested:
                log.warning("interrupted after %s: %d results kept; rerun to continue", label, len(rows))
                raise KeyboardInterrupt
    if zoo.few_shot:
        t = time.perf_counter()
        if curve is not None:
            meta["few_shot"], meta["few_shot_s"] = curve()
        else:
            meta["few_shot"] = few_shot_curve(data, seed=zoo.seed)
            meta["few_shot_s"] = time.perf_counter() - t
    if writer is not None and (zoo.few_shot or fitted):
        writer.report(rows, meta)
    few = meta.get("few_shot")
    curves = [{"backbone": backbone_of(data), "feature": data.feature, **few}] if few and few.get("points") else []
    return Leaderboard.ranked(rows, zoo.metric, config={"select": zoo.select}, skipped=list(meta["skipped"]),
                              few_shot=curves, seconds=time.perf_counter() - start, meta=meta,
                              extraction=[{"backbone": backbone_of(data), "store": str(data.store),
                                           "features": {data.feature: data.dim}}])
