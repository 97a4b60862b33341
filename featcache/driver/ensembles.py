"""The ensemble rows of one dataset's run: the two best feature sets concatenated, and the tied
group's soft vote (:mod:`classify.ensembles`). Ranked by :mod:`classify.ranking`, as the report
ranks, so "best" and "tied" mean the same here as there. Everything comes from the rows in
memory: the members' probabilities and out-of-fold predictions their fits left, and the public
plan and fit for the concatenated feature sets. Each soft vote is saved as one model file holding
its members' models (``RUN/classify/ensembles/<what>.skops``), which ``predict`` runs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from classify import ranking
from classify.ensembles import concat_features, has_proba, soft_vote, vote_model
from classify.features import load_features
from classify.fit import fit
from classify.persist import MODEL_SUFFIX, save_model
from classify.plan import Shape, plan_one
from classify.table import short_backbone
from featcache.common.errors import BadInput
from featcache.common.files import safe_name
from featcache.driver.budget import RunBudget
from featcache.driver.config import RunConfig
from featcache.store.rows import ResultRow

if TYPE_CHECKING:
    from featcache.driver.classify_sets import SetPool

log = logging.getLogger(__name__)


def best_of_each_backbone(ranked: list[ResultRow], by_key: dict) -> list[ResultRow]:
    """The best-ranked single model with probabilities of each backbone, in rank order."""
    firsts: dict[str, ResultRow] = {}
    for e in ranked:
        row = by_key.get(e.key)
        if e.kind == "model" and row is not None and e.backbone not in firsts and has_proba(row):
            firsts[e.backbone] = row
    return list(firsts.values())


def save_vote(vote: ResultRow, members: list[ResultRow], folder: Path) -> ResultRow:
    """``vote`` with its model file, ``folder/<feature>.skops``: its members' models in one file
    that ``predict`` runs, so rank 1 is usable as ranked even when it is a vote. A member whose
    file cannot be verified leaves the row without a file (a warning), as before."""
    try:
        saved = vote_model(vote, members)
    except BadInput as e:
        log.warning("soft vote %s not saved as a model file: %s", vote.feature, e)
        return vote
    folder.mkdir(parents=True, exist_ok=True)
    return replace(vote, model_path=str(save_model(saved, folder / f"{safe_name(vote.feature)}{MODEL_SUFFIX}")))


def _vote(members: list[ResultRow], dataset: str, feature: str, what: str, out: Path | None = None
          ) -> list[ResultRow]:
    try:
        vote = soft_vote(members, feature=feature)
    except (ValueError, OSError) as e:
        log.warning("soft vote of %s skipped: %s", what, e)
        return []
    if vote is None:
        return []
    log.info("soft vote of %s (%s): val %.3f", what, short_backbone(vote.backbone), vote.val["accuracy"])
    vote = replace(vote, dataset=dataset)
    return [vote if out is None else save_vote(vote, members, out)]


def ensemble_rows(cfg: RunConfig, rows: list[ResultRow], dataset: str, metric: str, out: Path | None = None,
                  pool: SetPool | None = None) -> list[ResultRow]:
    """The soft votes (the tied group; each backbone's best) and the concatenated feature sets, ranked by ``metric``;
    each vote saved as one model file under ``out`` (None: not saved). ``pool``: the run's workers,
    which fit the concatenations side by side while the votes are made here."""
    if not rows:
        return []
    ranked = ranking.rank_rows(rows, metric)
    concat = concat_rows(cfg, ranked, dataset, pool)  # started first: on workers they fit while the votes are made
    by_key = {r.key: r for r in rows}
    tied = [by_key[e.key] for e in ranking.tied_group(ranked)]
    extra_rows = _vote(tied, dataset, "tied group", f"{len(tied)} tied rows", out)
    # The tied group often comes from one backbone; backbones trained at other resolutions and
    # depths err on other images, and their vote is what moved dtd10's test accuracy most
    # (bench/heldout_study.py).
    firsts = best_of_each_backbone(ranked, by_key)
    if len(firsts) >= 2 and {r.key for r in firsts} != {r.key for r in tied}:
        extra_rows += _vote(firsts, dataset, "best of each backbone", "each backbone's best", out)
    return extra_rows + concat()


def concat_rows(cfg: RunConfig, ranked: list[ResultRow], dataset: str, pool: SetPool | None = None
                ) -> Callable[[], list[ResultRow]]:
    """The two best feature sets side by side, fitted with rank 1's model type and logreg, on
    ``pool``'s workers or here -> a function that returns their rows (waiting for the workers)."""
    sets = list(dict.fromkeys((e.backbone, e.feature) for e in ranked))[:2]
    if len(sets) < 2:
        return lambda: []
    best = ranked[0]
    flip = best.extra.get("tta") == "flip"
    stores = {(r.backbone, r.feature): r.store for r in ranked}
    try:
        a, b = (load_features(stores[s], s[1], flip=flip) for s in sets)
        same = sets[0][0] == sets[1][0]
        backbone = sets[0][0] if same else f"{sets[0][0]}+{sets[1][0]}"
        feature = f"{sets[0][1]} + {sets[1][1]}"
        cat = concat_features(a, b, feature)
    except (ValueError, OSError) as e:
        log.warning("concatenated feature sets skipped: %s", e)
        return lambda: []
    members = [f"{bb} {ff}" for bb, ff in sets]
    auto = RunBudget.parse(cfg.classify.budget).auto
    fits = []
    for name in dict.fromkeys([best.model.split("+")[0], "logreg"]):
        log.info("concat %s: %s on %s (%d-d)%s", " + ".join(members), name, short_backbone(backbone), cat.dim,
                 "; approximated under --budget auto" if auto else "")
        plan = plan_one(name, Shape.of(cat), cfg.classify, select="cv" if best.cv else "val",
                        tta="flip" if flip else "none", tensorboard=None, preprocess=None, protocol="auto")
        if auto:  # the cheap variant (logreg: 4 Cs, no refinement): 5.1 s -> ~2.5 s on dtd10's 2560-d pair
            plan = replace(plan, build=replace(plan.build, approximate=True), note="approximated under --budget auto")
        if pool is not None:  # a worker shares the cores with the other: one job each
            fits.append(pool.call(fit, replace(plan, build=replace(plan.build, jobs=1)), cat))
        else:
            fits.append(partial(fit, plan, cat))

    def rows() -> list[ResultRow]:
        return [replace(r, backbone=backbone, store=str(a.store), dataset=dataset, feature=feature, kind="concat",
                        members=members) for wait in fits for r in wait()]
    return rows
