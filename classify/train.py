"""Run the zoo on one store: fit on train, score on val (and test once), save, report.

Reports are rewritten after every model, and each finished model is recorded in
``OUT/finished/`` (:mod:`classify.finished`): a killed or interrupted run keeps what it
finished, and a rerun with the same settings reuses it instead of fitting it again. Ctrl-C
stops after the model in hand.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from classify import budget as budgets
from classify import finished, progress, selection
from classify import protocol as protocols
from classify.config import METRICS, TTA_CHOICES, VIEWS_CHOICES, ClassifyConfig  # noqa: F401 - re-exported
from classify.evaluate import ModelResult, chosen_params, evaluate
from classify.features import FeatureSet, load_features
from classify.fewshot import few_shot_curve
from classify.inputs import final_step as _final
from classify.inputs import fit_params, model_input, training_arrays  # noqa: F401 - also imported from here
from classify.knn import SweptKNN
from classify.linear_probe import LinearProbe
from classify.models import GFLOPS_REF, Build, build_model, candidate, get_entry, resolve_models
from classify.persist import MODEL_SUFFIX, SavedModel, save_model
from classify.preprocess import parse_preprocess
from classify.report import write_reports
from classify.torch_heads import TorchHead
from common.files import safe_name
from common.interrupt import StopAfterCurrent
from store import read_info

log = logging.getLogger(__name__)




def _search_extra(model: object) -> dict:
    """The sweep's CV score, so a report can show how far val and CV agree."""
    if not hasattr(model, "best_score_"):
        model = _final(model)  # a selecting final step (LinearProbe, SweptKNN)
    if not hasattr(model, "best_score_") or not np.isfinite(model.best_score_):
        return {}
    return {"cv_score": float(model.best_score_), "cv_scoring": str(model.scoring), "cv_folds": int(model.n_splits_)}


def _solver_extra(model: object) -> dict:
    """L-BFGS work of a linear probe: fits, evaluations and seconds per evaluation (for
    extrapolating to bigger stores)."""
    stats = getattr(_final(model), "fit_stats_", None)
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
    final = _final(model)
    if isinstance(final, (LinearProbe, TorchHead, SweptKNN)):
        import torch  # noqa: F401
    if isinstance(final, (LinearProbe, TorchHead)):
        import torch._dynamo  # noqa: F401


def variant_name(name: str, views: bool = False, tta: str | None = None) -> str:
    """The leaderboard name of a model trained on views and/or scored with flip TTA."""
    return name + ("+views" if views else "") + ("+flip" if tta == "flip" else "")


@dataclass(frozen=True)
class Plan:
    """One model as the protocol and the budget sized it, before fitting."""

    name: str
    build: Build
    estimate_s: float  # the fit on train (its sweep included): the report's "est. s" beside "fit s"
    note: str = ""  # what the protocol or the budget changed
    skip: str = ""  # why it is not fitted at all
    total_s: float = 0.0  # the fit, the CV of the chosen configuration and the refit: what a budget spends


def _fold_s(cand: object, gflops: float | None = None) -> float:
    """Seconds of one fit of the chosen configuration (a CV fold, the refit)."""
    work = cand.fit_cost if cand.fit_cost is not None else cand.cost
    return budgets.FOLD_OVERHEAD_S + work / (gflops or budgets.machine_gflops())


REFERENCE_CORES = 2  # the reference machine's cores (classify.models.GFLOPS_REF is its rate)


def _total_s(cand: object, fit_s: float, rows: int, select: str, final_fit: str, jobs: int,
             gflops: float | None = None, cores: int | None = None) -> float:
    """Seconds of the fit, the repeated CV of the chosen configuration and the train+val refit
    (on this machine, or at a given rate and core count)."""
    one = _fold_s(cand, gflops)
    folds = selection.FOLDS * selection.REPEATS if select == "cv" else 0
    cores = cores or (max(1, os.cpu_count() or 1) if jobs == -1 else jobs)
    if folds and cores > 1:  # folds on the workers ran ~0.8 of linear
        if rows * 1.25 >= selection.PARALLEL_FROM:  # the pool (train and val) sends every fold there
            folds = folds / (0.8 * cores)
        elif one >= selection.PARALLEL_FOLD_S:  # the first two run here and time the rest
            folds = 2 + (folds - 2) / (0.8 * cores)
    refit = 1 if selection.choose_final_fit(final_fit, select) == "train+val" else 0
    return fit_s + (folds + refit) * one


def reference_total_s(name: str, protocol: protocols.Protocol, *, seed: int, jobs: int, select: str,
                      final_fit: str) -> float:
    """A model's whole estimated cost on the reference machine (its rate and cores, whatever this
    machine's), so that ``--budget auto`` chooses the same models everywhere."""
    cand = candidate(name, Build(seed=seed, jobs=jobs, protocol=protocol))
    cores = 1 if jobs == 1 else REFERENCE_CORES
    return _total_s(cand, budgets.estimate_seconds(cand.cost, GFLOPS_REF), protocol.n_rows, select, final_fit, jobs,
                    GFLOPS_REF, cores)


def auto_zoo(names: list[str], allowance_s: float, always: Sequence[str], cost: Callable[[str], float]
             ) -> tuple[list[str], list[dict]]:
    """``run --budget auto``: the ``always`` models, then the others cheapest first while the
    estimated total stays within ``allowance_s`` -> (kept names in zoo order, skipped records)."""
    kept = [n for n in names if n in always] or names[:1]
    spent = sum(cost(n) for n in kept)
    for n in sorted((n for n in names if n not in kept), key=cost):
        if spent + cost(n) <= allowance_s:
            kept.append(n)
            spent += cost(n)
    skipped = [{"model": n, "estimate_s": cost(n),
                "reason": f"--budget auto: estimated {budgets.fmt_seconds(cost(n))} beyond this feature set's "
                          f"{budgets.fmt_seconds(allowance_s)} (a third of its extraction's estimate; --budget none runs it)"}
               for n in names if n not in kept]
    return [n for n in names if n in kept], skipped


def plan_model(name: str, protocol: protocols.Protocol, *, seed: int, jobs: int, budget_s: float | None,
               select: str = "val", final_fit: str = "auto") -> Plan:
    """Estimate a model; when the estimate of all it costs (fit, CV, refit) exceeds ``budget_s``
    (what is left), approximate it (the builder's cheap variant) or, if that does not fit either, skip it."""
    build = Build(seed=seed, jobs=jobs, protocol=protocol)
    cand = candidate(name, build)
    est = budgets.estimate_seconds(cand.cost)
    total = _total_s(cand, est, protocol.n_rows, select, final_fit, jobs)
    if budget_s is None or total <= budget_s:
        return Plan(name, build, est, cand.note, total_s=total)
    cheap = replace(build, approximate=True)
    cheap_cand = candidate(name, cheap)
    cheap_est = budgets.estimate_seconds(cheap_cand.cost)
    cheap_total = _total_s(cheap_cand, cheap_est, protocol.n_rows, select, final_fit, jobs)
    why = (f"estimated {budgets.fmt_seconds(total)} > {budgets.fmt_seconds(budget_s)} left of the budget" if budget_s > 0
           else f"estimated {budgets.fmt_seconds(total)}, and the budget is spent")
    if cheap_total <= budget_s:
        return Plan(name, cheap, cheap_est, "; ".join(filter(None, [cheap_cand.note, f"approximated: {why}"])),
                    total_s=cheap_total)
    return Plan(name, build, est, cand.note, skip=f"{why} (approximated: {budgets.fmt_seconds(cheap_total)})",
                total_s=total)


def fit_one(name: str, data: FeatureSet, *, out_dir: Path, jobs: int = 1, seed: int = 0,
            preprocess: str | Sequence[str] | None = None, tensorboard: str | os.PathLike | None = None,
            views: bool = False, tta: Sequence[str | None] = (None,), plan: Plan | None = None,
            select: str = "val", save: bool = True, final_fit: str = "auto") -> list[ModelResult]:
    """Fit one registered model on train (and its views), evaluate it on val (and test) once per
    TTA setting, save it under out_dir/models; one result per TTA setting.

    ``select="cv"``: also score the chosen configuration by repeated CV over train+val
    (:mod:`classify.selection`), kept in ``extra["cv"]``, with out-of-fold probabilities in
    out_dir/oof/. ``final_fit`` (:func:`classify.selection.choose_final_fit`): ``train+val``
    refits the chosen configuration on train and val for the saved model and the test score;
    val is still scored by the train-only fit."""
    final_fit = selection.choose_final_fit(final_fit, select)
    entry = get_entry(name)
    label = variant_name(name, views)
    stem = f"{safe_name(data.feature)}__{safe_name(label)}"
    log_dir = Path(tensorboard) / stem if tensorboard is not None and entry.uses_torch else None
    X, y, groups = training_arrays(data.train, views)
    if plan is None:
        plan = plan_model(name, protocols.choose(len(y), data.dim, len(np.unique(y))), seed=seed, jobs=jobs,
                          budget_s=None, select=select, final_fit=final_fit)
    model = build_model(name, preprocess=preprocess, seed=seed, jobs=jobs, log_dir=log_dir, build=plan.build)
    X = model_input(model, X)
    _preload_torch(model)
    # One BLAS/OpenMP thread per fit; --jobs parallelizes the sweep's candidates instead (the
    # chunked solvers and the large-store forests set their own threads). On small cached
    # features extra threads mostly spin: a tiny HGB fit took 48 s instead of 1 s on a busy
    # 2-core machine.
    log.info("%-16s fitting (estimate %s)%s", label, budgets.fmt_seconds(plan.estimate_s),
             f"; {plan.note}" if plan.note else "")
    with threadpool_limits(limits=1), progress.model_bar(f"{label} [{data.feature}]"):
        start = time.perf_counter()
        model.fit(X, y, **fit_params(model, groups))
        fit_s = time.perf_counter() - start
    steps = list(parse_preprocess(entry.preprocess if preprocess is None else preprocess))
    extra = {**_search_extra(model), **_solver_extra(model), **({"views": data.n_views, "train_samples": int(len(y))} if views else {}),
             "estimate_s": plan.estimate_s, "estimate_total_s": plan.total_s, "selection": plan.build.protocol.describe(),
             **({"note": plan.note} if plan.note else {})}
    params = {**chosen_params(model), **({"note": plan.note} if plan.note else {})}
    cv, folds = {}, None
    if select == "cv":
        with threadpool_limits(limits=1), progress.model_bar(f"{label} CV [{data.feature}]"):
            cv, folds = selection.cross_validate(model, data, views=views, ttas=tta, seed=seed, fit_params=fit_params,
                                                 n_jobs=jobs)
        log.info("%-16s CV %s", label, "  ".join(f"{variant_name(name, views, t)} {rec['mean']:.3f} ± {rec['sd']:.3f}"
                                                 for t, (rec, _) in cv.items()))
    final = model
    if final_fit == "train+val":
        with progress.model_bar(f"{label} refit on train+val [{data.feature}]"):
            start = time.perf_counter()
            final = selection.refit_on_pool(model, data, views=views, fit_params=fit_params)
            extra["refit_s"] = time.perf_counter() - start
        extra["final_fit"] = "train+val"
        log.info("%-16s refit on train+val (%d images) in %.2fs", label, len(data.train) + len(data.val),
                 extra["refit_s"])
    results = []
    for t in tta:  # scoring runs on every core: one predict per split, nothing to thrash
        val, test = (evaluate(m, model_input(m, s.X), s.y, class_names=data.class_names, paths=s.paths,
                              X_flip=model_input(m, s.flip) if t == "flip" else None) if s is not None else None
                     for m, s in ((model, data.val), (final, data.test)))
        full = variant_name(name, views, t)
        path = None if not save else save_model(SavedModel(model=final, name=full, feature=data.feature, class_names=data.class_names,
                                     spec=data.spec, cache_key=data.cache_key, store=str(Path(data.store).resolve()),
                                     preprocess=steps, views=data.n_views if views else 0, tta=t or "none",
                                     fitted_on=final_fit),
                          out_dir / "models" / f"{safe_name(data.feature)}__{safe_name(full)}{MODEL_SUFFIX}")
        cv_extra = {}
        if t in cv:
            record, proba = cv[t]
            cv_extra["cv"] = record
            if proba is not None:
                oof = selection.save_oof(out_dir / "oof" / f"{safe_name(data.feature)}__{safe_name(full)}.npz",
                                         data, proba, np.asarray(model.classes_), folds)
                cv_extra["cv"] = {**record, "oof": str(oof)}
        results.append(ModelResult(model=full, feature=data.feature, preprocess=steps, params=params,
                                   fit_s=fit_s, val=val, val_source=data.val_source, test=test,
                                   model_path=str(path) if path else None,
                                   extra={**extra, **({"tta": t} if t else {}), **cv_extra}, estimator=final))
        log.info("%-16s val acc %.3f  fit %.2fs (estimate %s)  %s", full, val["accuracy"], fit_s,
                 budgets.fmt_seconds(plan.estimate_s), results[-1].params)
    return results


def _meta(data: FeatureSet, names: list[str], *, seed: int, jobs: int, preprocess: object) -> dict:
    return {
        **({"views": data.n_views} if data.n_views else {}),
        "store": str(data.store), "feature": data.feature, "dim": data.dim, "cache_key": data.cache_key,
        "complete": data.complete, "spec": data.spec, "class_names": data.class_names,
        "n_classes": int(len(np.unique(data.train.y))), "counts": data.counts(), "val_source": data.val_source,
        "models": names, "seed": seed, "jobs": jobs, "preprocess": preprocess,
    }


def _settings(name: str, data: FeatureSet, *, views: bool, plan: Plan, tta: list[str | None], seed: int,
              preprocess: str | Sequence[str] | None, select: str, final_fit: str) -> tuple[dict, str]:
    values = finished.settings(data, name, views=views, tta=tta, seed=seed, preprocess=preprocess,
                               protocol=plan.build.protocol, select=select, approximate=plan.build.approximate,
                               final_fit=selection.choose_final_fit(final_fit, select))
    return values, finished.settings_key(values)


def _reuse_or_fit(name: str, data: FeatureSet, *, out: Path, views: bool, plan: Plan, resume: bool,
                  jobs: int, seed: int, preprocess: str | Sequence[str] | None,
                  tensorboard: str | os.PathLike | None, tta: list[str | None],
                  select: str, final_fit: str = "auto", reuse_only: bool = False
                  ) -> tuple[list[ModelResult] | None, bool]:
    """(results, reused) of one model and view mode: what an earlier run recorded in
    out/finished/ when it still holds (same settings, same files), else a new fit, recorded
    (``reuse_only``: else (None, False))."""
    label = variant_name(name, views)
    values, key = _settings(name, data, views=views, plan=plan, tta=tta, seed=seed, preprocess=preprocess,
                            select=select, final_fit=final_fit)
    done = finished.load(out, data.feature, label, key) if resume else None
    if done is not None:
        log.info("%s reused from an earlier run (%s)", label, finished.record_path(out, data.feature, label))
        return done, True
    if reuse_only:
        return None, False
    done = fit_one(name, data, out_dir=out, jobs=jobs, seed=seed, preprocess=preprocess, tensorboard=tensorboard,
                   views=views, tta=tta, plan=plan, select=select, final_fit=final_fit)
    finished.save(out, label, key, values, done)
    return done, False


def run_classify(store_path: str | os.PathLike, *, out_dir: str | os.PathLike,
                 allowance: tuple[float, Sequence[str]] | None = None, **options: object) -> list[ModelResult]:
    """Python API: :func:`classify` on ``store_path`` into ``out_dir``; ``options`` are
    :class:`~classify.config.ClassifyOptions`' fields (``feature``, ``models``, ``few_shot``, ...;
    ``views`` is accepted for ``train_on_views``), checked before any data is read."""
    if "views" in options:
        options["train_on_views"] = options.pop("views")
    for key in ("budget", "tensorboard"):
        if options.get(key) is not None and not isinstance(options[key], str):
            options[key] = str(options[key])
    if isinstance(options.get("preprocess"), (list, tuple)):
        options["preprocess"] = ",".join(options["preprocess"]) or "none"
    return classify(ClassifyConfig(features=str(store_path), out=str(out_dir), **options), allowance)


def classify(cfg: ClassifyConfig, allowance: tuple[float, Sequence[str]] | None = None) -> list[ModelResult]:
    """Fit every model of ``cfg.models`` (names, ``"all"``, ``"default"``) on one feature set of one store.

    ``train_on_views``: train on the store's augmented views too (``auto``: when it has them;
    ``both``: each model with and without, as separate rows). ``tta``: ``flip`` scores the
    average of the center and mirrored crops (``both``: with and without). Writes
    ``out/models/<feature>__<model>.skops`` (+ ``.sha256``) and the reports; returns one
    :class:`ModelResult` per model and variant.

    ``protocol``: how models are selected (:mod:`classify.protocol`). ``budget``: ``auto`` sizes
    the default zoo to the store's extraction (:func:`classify.budget.auto_allowance`; ``run``
    passes its own ``allowance``), ``none`` runs every model, a time (``"10m"``) approximates or
    skips the models whose estimate does not fit in what is left, each listed in the report.
    ``select``: what ranks the rows (:mod:`classify.selection`); ``final_fit``: what the saved
    models are fitted on; ``metric``: what the report ranks by (both are always measured);
    ``few_shot``: add the few-shot curve (:mod:`classify.fewshot`).

    ``resume``: reuse the results an earlier run with the same settings finished in
    ``out/finished/`` (their model files unchanged) instead of fitting them again. Reused results
    carry no ``estimator`` (load ``model_path``). Ctrl-C (in the main thread) stops after the
    model in hand: its record and the reports are written, then KeyboardInterrupt is raised.
    """
    store_path, out_dir, feature, allow_partial = cfg.features, cfg.out, cfg.feature, cfg.allow_partial
    jobs, seed, preprocess, tensorboard = cfg.jobs, cfg.seed, cfg.preprocess, cfg.tensorboard
    views, tta, protocol, select, final_fit, metric = (cfg.train_on_views, cfg.tta, cfg.protocol, cfg.select,
                                                       cfg.final_fit, cfg.metric)
    names = resolve_models(list(cfg.models))  # bad names fail before any data is read
    budget_s = None if cfg.budget.strip().lower() == "auto" else budgets.parse_budget(cfg.budget)
    if (allowance is None and cfg.budget.strip().lower() == "auto" and "all" not in cfg.models
            and "default" in cfg.models):  # sizes the default zoo only: models named all run
        allowance = (budgets.store_allowance(store_path, allow_partial), budgets.FIRST_PASS)
    if tensorboard is not None and not any(get_entry(n).uses_torch for n in names):
        log.warning("--tensorboard: none of %s trains a torch head; nothing will be logged", names)
    if views == "auto":
        views = "on" if read_info(store_path, allow_partial=allow_partial).views else "off"
    view_modes = {"on": [True], "off": [False], "both": [False, True]}[views]
    tta_modes = {"none": [None], "flip": ["flip"], "both": [None, "flip"]}[tta]
    data = load_features(store_path, feature, allow_partial=allow_partial, views=views != "off",
                         flip=tta != "none")
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    meta = _meta(data, names, seed=seed, jobs=jobs, preprocess=preprocess)
    select = selection.choose_select(select, len(data.val), len(data.train) + len(data.val))
    log.info("ranking by %s", "repeated CV over train+val (--select cv)" if select == "cv" else "val accuracy")
    meta["select"] = select
    meta["final_fit"] = selection.choose_final_fit(final_fit, select)
    meta["metric"] = metric
    log.info("%s: %s %d-d, %s; val: %s", data.store, data.feature, data.dim, data.counts(), data.val_source)
    n_classes = len(np.unique(data.train.y))
    chosen = {on: protocols.choose(len(data.train) * (1 + (data.n_views if on else 0)), data.dim, n_classes, protocol)
              for on in view_modes}
    for on, p in chosen.items():
        log.info("selection%s: %s", " (on views)" if on else "", p.describe())
    meta.update(protocol=chosen[view_modes[0]].to_dict(), budget_s=budget_s, skipped=[], reused=[],
                **({"protocol_views": chosen[True].to_dict()} if len(chosen) > 1 else {}))
    if allowance is not None:  # run --budget auto: (reference seconds, the models always run)
        names, auto_skipped = auto_zoo(names, allowance[0], allowance[1], lambda n: reference_total_s(
            n, chosen[view_modes[0]], seed=seed, jobs=jobs, select=select, final_fit=final_fit))
        meta["skipped"] += auto_skipped
        meta["auto_allowance_s"] = allowance[0]
        for rec in auto_skipped:
            log.info("%-16s skipped: %s", rec["model"], rec["reason"])
    if budget_s is not None:  # the cheapest first, so that a budget spent early costs the dearest models
        est = {n: plan_model(n, chosen[view_modes[0]], seed=seed, jobs=jobs, budget_s=None, select=select,
                             final_fit=final_fit).total_s for n in names}
        names = sorted(names, key=est.__getitem__)
    results: list[ModelResult] = []
    p0 = chosen[view_modes[0]]
    if any(_fold_s(candidate(n, Build(seed=seed, jobs=jobs, protocol=p0))) >= selection.PARALLEL_FOLD_S for n in names):
        selection.warm_workers(jobs)  # some model's folds will go to the workers: start them meanwhile
    start = time.perf_counter()
    with StopAfterCurrent(logger=log) as stop:
        for name, on in itertools.product(names, view_modes):
            label = stop.what = variant_name(name, on)
            left = None if budget_s is None else budget_s - (time.perf_counter() - start)
            plan = plan_model(name, chosen[on], seed=seed, jobs=jobs, budget_s=left, select=select, final_fit=final_fit)
            # A fit an earlier pass finished costs nothing: the budget skips only what it would fit.
            done, reused = _reuse_or_fit(
                name, data, out=out, views=on, resume=cfg.resume, jobs=jobs, seed=seed, preprocess=preprocess,
                tensorboard=tensorboard, tta=tta_modes, select=select, final_fit=final_fit, reuse_only=bool(plan.skip),
                plan=plan_model(name, chosen[on], seed=seed, jobs=jobs, budget_s=None, select=select,
                                final_fit=final_fit) if plan.skip else plan)
            if done is None:
                log.warning("%-16s skipped: %s", label, plan.skip)
                meta["skipped"].append({"model": label, "reason": plan.skip, "estimate_s": plan.total_s})
            else:
                results += done
                meta["reused"] += [label] if reused else []
            write_reports(out, results, meta)
            if stop.requested:
                log.warning("interrupted after %s: %d results kept in %s; rerun to continue", label, len(results), out)
                raise KeyboardInterrupt
    if cfg.few_shot:
        t = time.perf_counter()
        meta["few_shot"] = few_shot_curve(data, seed=seed)
        meta["few_shot_s"] = time.perf_counter() - t
        write_reports(out, results, meta)
    return results
