"""Fit one planned model on a feature set's arrays -> its leaderboard rows, all in memory.

One row per TTA mode, each a :class:`store.rows.ResultRow` carrying the fitted estimator (the
one test and ``predict`` see), the probabilities it was scored with, and under ``select="cv"``
its out-of-fold predictions (:class:`Fitted`). Nothing is written: saving the model, the
out-of-fold file and the reports is :mod:`classify.outputs`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from classify import budget as budgets
from classify import clock, progress, selection
from classify.evaluate import chosen_params, evaluate_with_proba, to_jsonable
from classify.features import FeatureSet, Split
from classify.knn import SweptKNN
from classify.linear_probe import LinearProbe
from classify.model_inputs import final_step, fit_params, model_input, training_arrays
from classify.models import build_model, get_entry
from classify.persist import SavedModel
from classify.plan import ModelPlan, variant_name
from classify.preprocess import parse_preprocess
from classify.table import param_text
from classify.torch_heads import TorchHead
from featcache.common.files import safe_name
from featcache.store.rows import ResultRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutOfFold:
    """Repeated CV's out-of-fold probabilities over train+val (pool order: train, then val)."""

    proba: np.ndarray  # (repeats, n, classes) float32
    fold: np.ndarray  # (repeats, n): each image's fold in each repeat
    classes: np.ndarray
    paths: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Fitted:
    """What a row's fit leaves in memory: the model to save, and the probabilities an ensemble reuses."""

    saved: SavedModel  # the fitted estimator (``saved.model``) with what predict needs to use it
    oof: OutOfFold | None = None
    proba: dict = field(default_factory=dict)  # split -> (probabilities, y, paths), of the estimator that scored it

    @property
    def estimator(self) -> object:
        return self.saved.model


def backbone_of(data: FeatureSet) -> str:
    """The backbone a feature set's rows are named by: its store's, else the store's file name."""
    return str(data.spec.get("backbone") or Path(str(data.store) or "store").stem)


def stem(feature: str, label: str) -> str:
    """The file stem of one model's outputs (model file, out-of-fold file, ledger record)."""
    return f"{safe_name(feature)}__{safe_name(label)}"


def _search_extra(model: object) -> dict:
    """The sweep's CV score, so a report can show how far val and CV agree."""
    if not hasattr(model, "best_score_"):
        model = final_step(model)  # a selecting final step (LinearProbe, SweptKNN)
    if not hasattr(model, "best_score_") or not np.isfinite(model.best_score_):
        return {}
    return {"cv_score": float(model.best_score_), "cv_scoring": str(model.scoring), "cv_folds": int(model.n_splits_)}


def _solver_extra(model: object) -> dict:
    """L-BFGS work of a linear probe: fits, evaluations and seconds per evaluation (for
    extrapolating to bigger stores)."""
    stats = getattr(final_step(model), "fit_stats_", None)
    if not stats:
        return {}
    fits = stats["path"] + ([stats["refit"]] if stats["refit"] else [])
    evals = sum(f["n_eval"] for f in fits)
    return {"lbfgs": {"path_fits": len(stats["path"]), "evals": evals, "iters": sum(f["n_iter"] for f in fits),
                      "s_per_eval": sum(f["seconds"] for f in fits) / max(evals, 1),
                      "refit_iters": stats["refit"]["n_iter"] if stats["refit"] else None}}


def _preload_torch(model: object) -> None:
    """Imports a fit time should not include: torch for the heads, probes and kNN, and the
    optimizers' first-use import of torch._dynamo (1.5-2.5 s here, once per process)."""
    final = final_step(model)
    if isinstance(final, (LinearProbe, TorchHead, SweptKNN)):
        import torch  # noqa: F401
    if isinstance(final, (LinearProbe, TorchHead)):
        import torch._dynamo  # noqa: F401


def _score(model: object, split: Split, data: FeatureSet, tta: str | None) -> tuple[dict, tuple | None]:
    """(scores, (probabilities, y, paths) or None) of ``model`` on one split."""
    flip = model_input(model, split.flip) if tta == "flip" else None
    scores, proba = evaluate_with_proba(model, model_input(model, split.X), split.y, class_names=data.class_names,
                                        paths=split.paths, X_flip=flip)
    return scores, None if proba is None else (proba, split.y, split.paths)


def fit(plan: ModelPlan, data: FeatureSet) -> list[ResultRow]:
    """Fit ``plan``'s model on train (and its views), score it on val (and test) once per TTA
    mode -> one row per mode.

    ``plan.select == "cv"``: also score the chosen configuration by repeated CV over train+val
    (:mod:`classify.selection`), in ``extra["cv"]``, its out-of-fold probabilities in
    ``row.fitted.oof``. ``plan.final_fit == "train+val"`` refits the chosen configuration on
    train and val for the returned estimator and the test score; val is still scored by the
    train-only fit."""
    entry, label = get_entry(plan.name), plan.label
    log_dir = (Path(plan.tensorboard) / stem(data.feature, label)
               if plan.tensorboard is not None and entry.uses_torch else None)
    X, y, groups = training_arrays(data.train, plan.views)
    model = build_model(plan.name, preprocess=plan.preprocess, seed=plan.build.seed, jobs=plan.build.jobs,
                        log_dir=log_dir, build=plan.build)
    X = model_input(model, X)
    _preload_torch(model)
    # One BLAS/OpenMP thread per fit; --jobs parallelizes the sweep's candidates instead (the
    # chunked solvers and the large-store forests set their own threads). On small cached
    # features extra threads mostly spin: a tiny HGB fit took 48 s instead of 1 s on a busy
    # 2-core machine.
    log.info("%-16s fitting (estimate %s)%s", label, budgets.fmt_seconds(plan.estimate_s),
             f"; {plan.note}" if plan.note else "")
    with threadpool_limits(limits=1), progress.model_bar(f"{label} [{data.feature}]"):
        start = clock.now()
        model.fit(X, y, **fit_params(model, groups))
        fit_s = clock.now() - start
    steps = list(parse_preprocess(entry.preprocess if plan.preprocess is None else plan.preprocess))
    extra = {**_search_extra(model), **_solver_extra(model),
             **({"views": data.n_views, "train_samples": int(len(y))} if plan.views else {}),
             "estimate_s": plan.estimate_s, "estimate_total_s": plan.total_s,
             "selection": plan.build.protocol.describe(), **({"note": plan.note} if plan.note else {}),
             **({"class_weight": plan.build.class_weight} if plan.build.class_weight else {})}
    params = {**chosen_params(model), **({"note": plan.note} if plan.note else {})}
    cv, folds, pooled = {}, None, None
    if plan.select == "cv":
        with threadpool_limits(limits=1), progress.model_bar(f"{label} CV [{data.feature}]"):
            cv, folds, pooled = selection.cross_validate(model, data, views=plan.views, ttas=plan.tta,
                                                         seed=plan.build.seed, repeats=plan.repeats,
                                                         n_jobs=plan.build.jobs)
        log.info("%-16s CV %s", label, "  ".join(f"{variant_name(plan.name, plan.views, t)} {rec['mean']:.3f} "
                                                 f"± {rec['sd']:.3f}" for t, (rec, _) in cv.items()))
    final = model
    if plan.final_fit == "train+val" and pooled is not None:  # the out-of-fold shortcut fitted it
        final, extra["refit_s"], extra["final_fit"] = pooled, 0.0, "train+val"
        log.info("%-16s refit on train+val: made by its %s", label, next(iter(cv.values()))[0]["method"])
    elif plan.final_fit == "train+val":
        with progress.model_bar(f"{label} refit on train+val [{data.feature}]"):
            start = clock.now()
            final = selection.refit_on_pool(model, data, views=plan.views)
            extra["refit_s"] = clock.now() - start
        extra["final_fit"] = "train+val"
        log.info("%-16s refit on train+val (%d images) in %.2fs", label, len(data.train) + len(data.val),
                 extra["refit_s"])
    rows = []
    for t in plan.tta:  # scoring runs on every core: one predict per split, nothing to thrash
        val, val_proba = _score(model, data.val, data, t)
        test, test_proba = _score(final, data.test, data, t) if data.test is not None else (None, None)
        full = variant_name(plan.name, plan.views, t)
        saved = SavedModel(model=final, name=full, feature=data.feature, class_names=data.class_names,
                           spec=data.spec, cache_key=data.cache_key,
                           store=str(Path(data.store).resolve()) if str(data.store) else "",
                           preprocess=steps, views=data.n_views if plan.views else 0, tta=t or "none",
                           fitted_on=plan.final_fit)
        oof = None
        if t in cv and cv[t][1] is not None:
            p = selection.pool(data)
            oof = OutOfFold(cv[t][1], folds, np.asarray(model.classes_), p.paths.astype(str), p.y)
        fitted = Fitted(saved, oof, {k: v for k, v in (("val", val_proba), ("test", test_proba)) if v is not None})
        rows.append(ResultRow(
            backbone=backbone_of(data), feature=data.feature, model=full, val=val, fit_s=fit_s,
            store=str(data.store), preprocess=steps, params=to_jsonable(params), val_source=data.val_source,
            test=test, extra=to_jsonable({**extra, **({"tta": t} if t else {}), **({"cv": cv[t][0]} if t in cv else {})}),
            fitted=fitted))
        log.info("%-16s val acc %.3f  fit %.2fs (estimate %s)  %s", full, val["accuracy"], fit_s,
                 budgets.fmt_seconds(plan.estimate_s), param_text(params))
    return rows
