"""The plan of a comparison: every "auto" and the budget resolved once, before any fit.

From the data's shape and the options, :func:`plan_zoo` decides which models run (and which
``--budget auto`` leaves out, and why), with which grid and selection protocol, how rows are
ranked (``select``), what the saved models are fitted on (``final_fit``), and what each model is
estimated to cost. :func:`within` is the one decision taken while the zoo runs: under a time
budget (``--budget 10m``), a model whose estimate exceeds what is left is approximated (its
builder's cheap variant) or skipped. Nothing here fits or reads a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from classify import budget as budgets
from classify import protocol as protocols
from classify import selection
from classify.config import ClassifyOptions
from classify.models import (
    GFLOPS_REF,
    Build,
    Candidate,
    candidate,
    family_models,
    family_of,
    first_of_family,
    get_entry,
    resolve_models,
)

REFERENCE_CORES = 2  # the reference machine's cores (classify.models.GFLOPS_REF is its rate)
IMBALANCED = 1.5  # largest over smallest train class from which --metric auto and --class-weight auto balance
VIEW_MODES = {"on": (True,), "off": (False,), "both": (False, True)}
TTA_MODES = {"none": (None,), "flip": ("flip",), "both": (None, "flip")}


def variant_name(name: str, views: bool = False, tta: str | None = None) -> str:
    """The leaderboard name of a model trained on views and/or scored with flip TTA."""
    return name + ("+views" if views else "") + ("+flip" if tta == "flip" else "")


@dataclass(frozen=True)
class ModelPlan:
    """One model and view mode, sized by the protocol (and the budget), before fitting."""

    name: str
    build: Build  # seed, jobs, protocol, approximate
    views: bool = False  # trained on the store's augmented views as well
    tta: tuple[str | None, ...] = (None,)  # scored once per mode: None (center crop), "flip"
    select: str = "val"  # "val" or "cv": what ranks the rows
    final_fit: str = "train"  # "train" or "train+val": what the returned estimator is fitted on
    preprocess: str | None = None  # None: the model's own
    tensorboard: str | None = None  # a folder for the torch heads' curves
    estimate_s: float = 0.0  # the fit on train (its sweep included): the report's "est. s" beside "fit s"
    total_s: float = 0.0  # the fit, the CV of the chosen configuration and the refit: what a budget spends
    note: str = ""  # what the protocol or the budget changed
    skip: str = ""  # why it is not fitted at all
    repeats: int = selection.REPEATS  # of the K-fold scoring its chosen configuration under select="cv"

    @property
    def label(self) -> str:
        return variant_name(self.name, self.views)


@dataclass(frozen=True)
class Budget:
    """What one feature set's zoo may spend: a time (``--budget 10m``, or run's share of its own),
    and/or ``--budget auto``'s allowance in reference seconds for the default zoo."""

    seconds: float | None = None
    allowance_s: float | None = None


@dataclass(frozen=True)
class ZooPlan:
    """Everything a comparison will do on one feature set."""

    models: tuple[ModelPlan, ...]  # each model and view mode, in the order they are fitted
    requested: tuple[str, ...]  # the models asked for (names, "default" and "all" resolved)
    select: str
    final_fit: str
    metric: str
    protocols: dict  # {views: Protocol}
    budget: Budget
    skipped: tuple[dict, ...] = ()  # what --budget auto leaves out, each with its estimate and why
    few_shot: bool = False
    warm_workers: bool = False  # some model's CV folds will go to worker processes: start them early
    seed: int = 0
    jobs: int = 1
    preprocess: str | None = None
    class_weight: str | None = None  # "balanced" or None, resolved
    imbalance: float = 1.0  # largest over smallest train class

    def to_meta(self) -> dict:
        """The plan as metrics.json records it."""
        first = next(iter(self.protocols.values()))  # of the first view mode
        return {"select": self.select, "final_fit": self.final_fit, "metric": self.metric,
                "class_weight": self.class_weight or "none", "imbalance": self.imbalance,
                "protocol": first.to_dict(), "budget_s": self.budget.seconds,
                **({"protocol_views": self.protocols[True].to_dict()} if len(self.protocols) > 1 else {}),
                **({"auto_allowance_s": self.budget.allowance_s} if self.budget.allowance_s is not None else {})}


def views_mode(train_on_views: str, store_has_views: bool) -> str:
    """``auto``: train on views when the store has them."""
    if train_on_views == "auto":
        return "on" if store_has_views else "off"
    return train_on_views


def fold_s(cand: Candidate, gflops: float | None = None) -> float:
    """Seconds of one fit of the chosen configuration (a CV fold, the refit)."""
    work = cand.fit_cost if cand.fit_cost is not None else cand.cost
    return budgets.FOLD_OVERHEAD_S + work / (gflops or budgets.machine_gflops())


def total_s(cand: Candidate, fit_s: float, rows: int, plan: ModelPlan, gflops: float | None = None,
            cores: int | None = None) -> float:
    """Seconds of the fit, the out-of-fold predictions of the chosen configuration and the
    train+val refit (on this machine, or at a given rate and core count)."""
    one = fold_s(cand, gflops)
    refit = 1 if plan.final_fit == "train+val" else 0
    if plan.select != "cv":
        return fit_s + refit * one
    if cand.oof_fits is not None and not plan.views:  # its family's shortcut (classify.oof), the refit in it
        return fit_s + cand.oof_fits * one
    folds = selection.FOLDS * plan.repeats
    jobs = plan.build.jobs
    cores = cores or (max(1, os.cpu_count() or 1) if jobs == -1 else jobs)
    if cores > 1:  # folds on the workers ran ~0.8 of linear
        if rows * 1.25 >= selection.PARALLEL_FROM:  # the pool (train and val) sends every fold there
            folds = folds / (0.8 * cores)
        elif one >= selection.PARALLEL_FOLD_S:  # the first two run here and time the rest
            folds = 2 + (folds - 2) / (0.8 * cores)
    return fit_s + (folds + refit) * one


def estimated(plan: ModelPlan) -> ModelPlan:
    """``plan`` with its estimates on this machine."""
    cand = candidate(plan.name, plan.build)
    est = budgets.estimate_seconds(cand.cost)
    return replace(plan, estimate_s=est, total_s=total_s(cand, est, plan.build.protocol.n_rows, plan),
                   note="; ".join(dict.fromkeys(filter(None, [plan.note, cand.note]))))


def reference_total_s(plan: ModelPlan) -> float:
    """A model's whole estimated cost on the reference machine (its rate and cores, whatever this
    machine's), so that ``--budget auto`` chooses the same models everywhere."""
    cand = candidate(plan.name, plan.build)
    cores = 1 if plan.build.jobs == 1 else REFERENCE_CORES
    return total_s(cand, budgets.estimate_seconds(cand.cost, GFLOPS_REF), plan.build.protocol.n_rows, plan,
                   GFLOPS_REF, cores)


# What --budget auto may trim of a family's one model before dropping the family, in order:
# the second CV repeat, then the model's own cheap variant (fewer grid points, trees or landmarks).
TRIMS = ({"repeats": 1}, {"repeats": 1, "approximate": True})


def _family(name: str) -> dict:
    """What a skipped record says of its model's family, so a report can merge a family dropped everywhere."""
    return {"family": family_of(name), "family_models": family_models(name)}


def auto_zoo(names: list[str], allowance_s: float, cost: Callable[..., float]
             ) -> tuple[list[str], dict[str, dict], list[dict]]:
    """``--budget auto`` -> (kept names in zoo order, {name: the trim it runs with}, skipped records).

    ``cost(name, **trim)``: a model's reference seconds, trimmed as in :data:`TRIMS`. Each family's
    one model (:func:`~classify.models.first_of_family`) runs unless, trimmed as far as it goes, it
    alone is estimated to cost more than the feature set's whole extraction (``allowance_s`` is
    :data:`~classify.budget.AUTO_SHARE` of it; never less than :data:`~classify.budget.FAMILY_FLOOR_S`);
    while they together cost more than that, the dearest are scored by one CV repeat. The second
    variants share the allowance, cheapest first. A trim may carry ``why`` (for the model's note)."""
    extraction = max(allowance_s / budgets.AUTO_SHARE, budgets.FAMILY_FLOOR_S)
    firsts = [n for n in names if first_of_family(n)]
    kept, trims, skipped = [], {}, []
    for n in firsts:
        fits = [t for t in ({}, *TRIMS) if cost(n, **t) <= extraction]
        if fits:
            kept.append(n)
            trims.update({n: fits[0]} if fits[0] else {})
        else:
            cheapest = cost(n, **TRIMS[-1])
            skipped.append({"model": n, "estimate_s": cheapest, **_family(n), "reason": (
                f"--budget auto: estimated {budgets.fmt_seconds(cheapest)} at its cheapest, more than this feature "
                f"set's whole extraction ({budgets.fmt_seconds(extraction)}); the one {family_of(n)} "
                "(--budget none runs it)")})
    # Together, the families' models should cost less than the extraction too: the dearest give up
    # their second CV repeat first (their models stay whole; only the ranking's estimate is noisier).
    for n in sorted(kept, key=lambda n: -cost(n, **trims.get(n, {}))):
        if sum(cost(m, **trims.get(m, {})) for m in kept) <= extraction:
            break
        if not trims.get(n) and cost(n, **TRIMS[0]) < cost(n):
            trims[n] = {**TRIMS[0], "why": "the families' models together cost more than the extraction"}
    spent = 0.0
    for n in sorted((n for n in names if n not in firsts), key=cost):
        if spent + cost(n) <= allowance_s:
            kept.append(n)
            spent += cost(n)
        else:
            skipped.append({"model": n, "estimate_s": cost(n), **_family(n), "reason": (
                f"--budget auto: a second {family_of(n)}; estimated {budgets.fmt_seconds(cost(n))}, beyond the "
                f"{budgets.fmt_seconds(allowance_s)} (a third of the extraction's estimate) that models past one "
                "per family share (--budget none runs it)")})
    order = {n: i for i, n in enumerate(names)}
    return sorted(kept, key=order.get), trims, sorted(skipped, key=lambda r: order[r["model"]])


def within(plan: ModelPlan, left_s: float | None) -> ModelPlan:
    """``plan`` under ``left_s`` seconds of budget (None: no budget): itself when its estimate
    fits, else its cheap variant when that fits, else marked skipped with why."""
    if left_s is None or plan.total_s <= left_s:
        return plan
    cheap = estimated(replace(plan, build=replace(plan.build, approximate=True), note=""))
    why = (f"estimated {budgets.fmt_seconds(plan.total_s)} > {budgets.fmt_seconds(left_s)} left of the budget"
           if left_s > 0 else f"estimated {budgets.fmt_seconds(plan.total_s)}, and the budget is spent")
    if cheap.total_s <= left_s:
        return replace(cheap, note="; ".join(filter(None, [cheap.note, f"approximated: {why}"])))
    return replace(plan, skip=f"{why} (approximated: {budgets.fmt_seconds(cheap.total_s)})")


@dataclass(frozen=True)
class Shape:
    """What a plan reads of the data: sizes only."""

    n_train: int
    n_val: int
    dim: int
    n_classes: int
    n_views: int = 0  # augmented views per train image (0: none loaded)
    imbalance: float = 1.0  # rows of the largest train class over the smallest's

    @classmethod
    def of(cls, data: object) -> Shape:
        """The shape of a :class:`~classify.features.FeatureSet`."""
        counts = np.unique(data.train.y, return_counts=True)[1]
        return cls(len(data.train), len(data.val), data.dim, len(counts), data.n_views,
                   float(counts.max() / counts.min()))

    @property
    def imbalanced(self) -> bool:
        return self.imbalance >= IMBALANCED


def resolve_metric(metric: str, shape: Shape) -> str:
    """``auto``: balanced accuracy on imbalanced train classes (accuracy would reward learning
    the prior), else accuracy."""
    if metric != "auto":
        return metric
    return "balanced_accuracy" if shape.imbalanced else "accuracy"


def resolve_class_weight(class_weight: str, shape: Shape) -> str | None:
    """``auto``: balanced on imbalanced train classes; None: unweighted."""
    if class_weight == "auto":
        return "balanced" if shape.imbalanced else None
    return None if class_weight == "none" else class_weight


def plan_zoo(shape: Shape, options: ClassifyOptions, *, views: str = "off", budget: Budget | None = None) -> ZooPlan:
    """The comparison ``options`` (:class:`~classify.config.ClassifyOptions`) asks for on data of
    ``shape``; ``views`` is ``train_on_views`` resolved (:func:`views_mode`)."""
    o = options
    names = requested = resolve_models(list(o.models))
    budget = budget or Budget()
    select = selection.choose_select(o.select, shape.n_val, shape.n_train + shape.n_val)
    final_fit = selection.choose_final_fit(o.final_fit, select)
    weight = resolve_class_weight(o.class_weight, shape)
    view_modes = VIEW_MODES[views]
    protos = {on: protocols.choose(shape.n_train * (1 + (shape.n_views if on else 0)), shape.dim, shape.n_classes,
                                   o.protocol) for on in view_modes}

    def planned(name: str, on: bool, repeats: int = selection.REPEATS, approximate: bool = False,
                why: str = "in full it costs more than the extraction") -> ModelPlan:
        # Only a cheap variant approximates the model (the skipped table lists it); one CV repeat
        # scores the whole model with a noisier estimate, which its note says.
        one = f"scored by one CV repeat of {selection.REPEATS}"
        note = (f"approximated: its cheap variant, {one} (--budget auto: {why})" if approximate else
                f"{one} (--budget auto: {why})" if repeats < selection.REPEATS else "")
        build = Build(seed=o.seed, jobs=o.jobs, protocol=protos[on], class_weight=weight, approximate=approximate)
        return estimated(ModelPlan(name, build, views=on, tta=TTA_MODES[o.tta], select=select, final_fit=final_fit,
                                   preprocess=o.preprocess, tensorboard=o.tensorboard, repeats=repeats, note=note))

    skipped: list[dict] = []
    trims: dict[str, dict] = {}
    if budget.allowance_s is not None:  # --budget auto, in reference seconds
        names, trims, skipped = auto_zoo(names, budget.allowance_s,
                                         lambda n, **trim: reference_total_s(planned(n, view_modes[0], **trim)))
    if budget.seconds is not None:  # the cheapest first, so that a budget spent early costs the dearest models
        names = sorted(names, key=lambda n: planned(n, view_modes[0]).total_s)
    models = tuple(planned(n, on, **trims.get(n, {})) for n in names for on in view_modes)
    warm = any(fold_s(candidate(m.name, m.build)) >= selection.PARALLEL_FOLD_S for m in models
               if m.views == view_modes[0])
    return ZooPlan(models, tuple(requested), select, final_fit, resolve_metric(o.metric, shape), protos, budget,
                   tuple(skipped), bool(o.few_shot), warm, o.seed, o.jobs, o.preprocess, weight, shape.imbalance)


def plan_one(name: str, shape: Shape, options: ClassifyOptions | None = None, **changes: object) -> ModelPlan:
    """One model planned as :func:`plan_zoo` plans it, on center crops; ``options``:
    :class:`~classify.config.ClassifyOptions` (default ones), ``changes`` override its fields."""
    opts = replace(options or ClassifyOptions(), models=(name,), train_on_views="off", **changes)
    return plan_zoo(shape, opts).models[0]


def check_tensorboard(names: Sequence[str], tensorboard: str | os.PathLike | None) -> str | None:
    """A warning when ``--tensorboard`` is given but no model trains a torch head."""
    if tensorboard is not None and not any(get_entry(n).uses_torch for n in names):
        return f"--tensorboard: none of {list(names)} trains a torch head; nothing will be logged"
    return None
