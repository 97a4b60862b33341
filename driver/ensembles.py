"""The ensemble rows of one dataset's run: the two best feature sets concatenated, and the tied
group's soft vote (:mod:`classify.ensembles`). Ranked by :mod:`classify.ranking`, as the report
ranks, so "best" and "tied" mean the same here as there."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from classify import protocol as protocols
from classify import ranking
from classify.ensembles import concat_features, has_proba, soft_vote
from classify.features import load_features
from classify.train import fit_one, plan_model
from driver.budget import RunBudget
from driver.config import RunConfig
from store.rows import ResultRow

log = logging.getLogger(__name__)


def _key(backbone: str, feature: str, model: str) -> tuple[str, str, str]:
    return backbone, feature, model


def best_of_each_backbone(entries: list, by_key: dict) -> list[dict]:
    """The best-ranked single model with probabilities of each backbone, in rank order."""
    firsts: dict[str, dict] = {}
    for e in entries:
        row = by_key.get(_key(e.backbone, e.feature, e.model))
        if e.kind == "model" and row is not None and e.backbone not in firsts and has_proba(row):
            firsts[e.backbone] = row
    return list(firsts.values())


def _tagged(row: dict, dataset: str) -> dict:
    """An ensemble's row (classify.ensembles builds it as a ResultRow) in this dataset."""
    return replace(ResultRow.from_dict(row, "ensemble row"), dataset=dataset).to_dict()


def ensemble_rows(cfg: RunConfig, rows: list[dict], out_dir: Path, dataset: str) -> list[dict]:
    if not rows:
        return []
    entries = ranking.rank_rows(rows, cfg.classify.metric)
    by_key = {_key(r["backbone"], r["feature"], r["model"]): r for r in rows}
    extra_rows: list[dict] = []

    tied = [by_key[e.key] for e in ranking.tied_group(entries)]
    try:
        vote = soft_vote(tied)
    except (ValueError, OSError) as e:
        log.warning("soft vote of the tied group skipped: %s", e)
        vote = None
    if vote is not None:
        extra_rows.append(_tagged(vote, dataset))
        log.info("soft vote of %d tied rows: val %.3f", len(vote["members"]), vote["val"]["accuracy"])
    # The tied group often comes from one backbone; backbones trained at other resolutions and
    # depths err on other images, and their vote is what moved dtd10's test accuracy most
    # (bench/heldout_study.py).
    firsts = best_of_each_backbone(entries, by_key)
    keys = lambda group: {_key(r["backbone"], r["feature"], r["model"]) for r in group}  # noqa: E731
    if len(firsts) >= 2 and keys(firsts) != keys(tied):
        try:
            across = soft_vote(firsts, feature="best of each backbone")
        except (ValueError, OSError) as e:
            log.warning("soft vote across backbones skipped: %s", e)
            across = None
        if across is not None:
            extra_rows.append(_tagged(across, dataset))
            log.info("soft vote of each backbone's best (%s): val %.3f", across["backbone"], across["val"]["accuracy"])

    sets = list(dict.fromkeys((e.backbone, e.feature) for e in entries))[:2]
    if len(sets) < 2:
        return extra_rows
    best = entries[0]
    flip = (by_key[_key(best.backbone, best.feature, best.model)].get("extra") or {}).get("tta") == "flip"
    select = "cv" if best.cv else "val"
    stores = {(r["backbone"], r["feature"]): r["store"] for r in rows}
    try:
        a, b = (load_features(stores[s], s[1], flip=flip) for s in sets)
        same = sets[0][0] == sets[1][0]
        backbone = sets[0][0] if same else f"{sets[0][0]}+{sets[1][0]}"
        feature = f"{sets[0][1]} + {sets[1][1]}"
        cat = concat_features(a, b, feature)
    except (ValueError, OSError) as e:
        log.warning("concatenated feature sets skipped: %s", e)
        return extra_rows
    members = [f"{bb} {ff}" for bb, ff in sets]
    auto = RunBudget.parse(cfg.classify.budget).auto
    for name in dict.fromkeys([best.model.split("+")[0], "logreg"]):
        log.info("concat %s: %s on %s (%d-d)%s", " + ".join(members), name, backbone, cat.dim,
                 "; approximated under --budget auto" if auto else "")
        plan = None
        if auto:  # the cheap variant (logreg: 4 Cs, no refinement): 5.1 s -> ~2.5 s on dtd10's 2560-d pair
            full = plan_model(name, protocols.choose(len(cat.train), cat.dim, len(cat.class_names)), seed=cfg.classify.seed,
                              jobs=cfg.classify.jobs, budget_s=None, select=select, final_fit=cfg.classify.final_fit)
            plan = replace(full, build=replace(full.build, approximate=True), note="approximated under --budget auto")
        for res in fit_one(name, cat, out_dir=out_dir, jobs=cfg.classify.jobs, seed=cfg.classify.seed, tta=["flip" if flip else None],
                           select=select, save=False, final_fit=cfg.classify.final_fit, plan=plan):
            extra_rows.append(res.row(backbone, str(a.store), dataset, feature=feature, kind="concat",
                                      members=members).to_dict())
    return extra_rows
