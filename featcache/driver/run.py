"""``pipeline.py run``: extract what is missing, classify every feature set, write one report.

Stores are named by cache key (``<backbone>-<key12>.h5`` in the feature dir), so a rerun,
or another run sharing ``--cache-dir``, reuses them. All layers and poolings of one
backbone come from one forward pass, so comparing layers costs no extra backbone passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from classify.leaderboard import Leaderboard
from classify.models import get_entry, resolve_models
from extract.plan import ExtractPlan
from extract.ray_engine import extract_ray
from extract.runner import execute, plan
from extract.sources import build_manifest
from featcache.common.files import atomic_write, safe_name
from featcache.driver.audit import audit_best, write_run_audit
from featcache.driver.budget import RunBudget
from featcache.driver.budget import first_pass as first_pass_models
from featcache.driver.classify_sets import Classified, Pass, SetPool, classify_all, joint_metric, workers_for
from featcache.driver.config import RunConfig, dataset_names
from featcache.driver.ensembles import ensemble_rows
from featcache.driver.finetune_rows import finetune_row
from featcache.store import read_info
from featcache.store.results import AUDIT_FILE, write_run
from featcache.store.rows import ResultRow
from featcache.store.write import store_status

log = logging.getLogger(__name__)


def write_json(path: Path, data: object) -> None:
    """Atomic: a reader never sees half a file, and a crash keeps the previous version."""
    atomic_write(path, json.dumps(data, indent=2, default=str))


def plan_stores(cfg: RunConfig, data: str, progress: bool) -> list[tuple[str, ExtractPlan, Path]]:
    """(backbone, extract plan, store path) per backbone: one manifest, no model built yet."""
    ext = cfg.extract
    manifest = build_manifest(data, ext.image_root, ext.allow_outside_root)
    cfg.feature_dir.mkdir(parents=True, exist_ok=True)
    planned = []
    for name in cfg.backbones:
        if not name.startswith("efficientnet_lite") and ext.weights == "DEFAULT" and ext.weights_file is None:
            log.info("%s: torchvision DEFAULT weights, from the torch hub cache (fetched there on first use)", name)
        p = plan(ext.job(data=data, backbone=name, out="-", progress=progress), manifest=manifest)
        planned.append((name, p, cfg.feature_dir / f"{safe_name(name)}-{p.cache_key[:12]}.h5"))
    return planned


def is_cached(p: ExtractPlan, store: Path) -> bool:
    try:
        return store_status(store, p.cache_key, p.spec) == "hit"
    except (OSError, ValueError):
        return False


def extract_one(name: str, p: ExtractPlan, store: Path) -> dict:
    """Extract (or reuse) one backbone's store; its record for extraction.json."""
    ext = p.cfg
    if ext.engine == "ray":
        summary = extract_ray(dataclasses.replace(ext, out=str(store), workers=None), address=ext.address,
                              workers=ext.workers or 2, gpus_per_worker=ext.gpus_per_worker,
                              cpus_per_worker=ext.cpus_per_worker)
    else:
        summary = execute(p, store)
    log.info("%s", summary.line())
    return {
        "backbone": name, "store": str(store.resolve()), "status": summary.status, "seconds": summary.seconds,
        "images_per_s": summary.images_per_s, "rows": summary.rows, "skipped": summary.skipped,
        "features": summary.features, "forward_passes": 0 if summary.status == "hit" else 1,
    }


def given_store(path: str, allow_partial: bool) -> dict:
    """``run --features F.h5``: a store made elsewhere, as extract_one's record (nothing extracted)."""
    info = read_info(path, allow_partial=allow_partial)
    return {
        "backbone": str(info.spec.get("backbone") or Path(path).stem), "store": str(Path(info.path).resolve()),
        "status": "given", "seconds": 0.0, "images_per_s": 0.0, "rows": info.n_rows, "skipped": len(info.errors),
        "features": dict(info.features), "forward_passes": 0,
    }


def extract_all(cfg: RunConfig, data: str, progress: bool) -> list[dict]:
    """One store per backbone (all layers and pools in one pass); returns one record per store."""
    return [extract_one(name, p, store) for name, p, store in plan_stores(cfg, data, progress)]


def run_backbones(cfg: RunConfig, data: str | None, name: str, cls_dir: Path, budget: RunBudget, progress: bool,
                  extra: dict, given: tuple[str, ...] = ()) -> tuple[list[dict], Classified, SetPool | None]:
    """Extract and classify backbone by backbone, in ``--backbones`` order, then the ``given``
    stores (``--features``) -> (store records, what the zoo gave, the worker pool or None). Under a
    budget, the two passes of :mod:`driver.budget`; otherwise the feature sets may be classified on
    worker processes while the next backbone extracts (:class:`~featcache.driver.classify_sets.SetPool`),
    a pool returned open for the ensembles: the caller closes it (here, on an error)."""
    planned = plan_stores(cfg, data, progress) if data is not None else []
    sets_per_backbone = max(len(cfg.extract.layers) * len(cfg.extract.pools), 1)  # until the first store says
    given_recs = [{**extra, **given_store(path, cfg.classify.allow_partial)} for path in given]
    workers = 0 if budget.total_s is not None else workers_for(  # a time budget's two passes stay here
        cfg, sets_per_backbone * len(planned) + sum(len(r["features"]) for r in given_recs),
        max([len(p.manifest) for _, p, _ in planned] + [r["rows"] or 0 for r in given_recs] + [0]))
    with contextlib.ExitStack() as on_error:
        pool = on_error.enter_context(SetPool(workers, torch=any(
            get_entry(m).uses_torch for m in resolve_models(list(cfg.classify.models))))) if workers else None
        recs, got = _extract_and_classify(cfg, planned, given_recs, name, cls_dir, budget, pool, extra)
        if pool is not None:
            got += pool.results()
        on_error.pop_all()  # done: the pool stays open for the ensembles
    return recs, got, pool


def _extract_and_classify(cfg: RunConfig, planned: list, given_recs: list[dict], name: str, cls_dir: Path,
                          budget: RunBudget, pool: SetPool | None, extra: dict) -> tuple[list[dict], Classified]:
    """The stores in order: each extracted (or reused), then classified here or handed to ``pool``."""
    fast = first_pass_models(cfg.classify.models) if budget.total_s is not None else None
    sets_per_backbone = max(len(cfg.extract.layers) * len(cfg.extract.pools), 1)
    recs, got, first = [], Classified(), Classified()
    auto = budget if budget.auto else None

    def classify(rec: dict) -> None:
        nonlocal got
        if pool is not None:
            pool.submit(cfg, rec, cls_dir, name, auto)
        else:
            got += classify_all(cfg, [rec], cls_dir, name, auto)

    for rec in given_recs:
        recs.append(rec)
        if fast is None:
            classify(rec)
        else:  # its second pass comes with the extracted stores' below
            first += classify_all(cfg, [rec], cls_dir, name, budget, Pass(tuple(fast), first=True))
    for i, (backbone, p, store) in enumerate(planned):
        cached = is_cached(p, store)
        why = budget.skip_reason(backbone, len(p.manifest), cached, sets_per_backbone) if recs else None
        if why:
            log.warning("%s skipped: %s", backbone, why)
            got.skipped.append({**({"dataset": name} if name else {}), "kind": "backbone", "backbone": backbone,
                                "model": "every model", "feature": "(not extracted)", "reason": why})
            continue
        rec = {**extra, **extract_one(backbone, p, store)}
        budget.record_extraction(backbone, rec["rows"] or 0, rec["seconds"] or 0.0, rec["status"] != "hit")
        sets_per_backbone = max(len(rec["features"]), 1)
        recs.append(rec)
        if fast is None:
            classify(rec)
        else:
            log.info("first pass on %s under the budget: %s", backbone, ",".join(fast))
            first += classify_all(cfg, [rec], cls_dir, name, budget,
                                  Pass(tuple(fast), first=True, sets_after=sets_per_backbone * (len(planned) - i - 1)))
    if fast is not None and recs:
        log.info("second pass: the rest of the zoo on %d feature sets, %s left", sum(len(r["features"]) for r in recs),
                 f"{budget.left():.0f} s")
        got += classify_all(cfg, recs, cls_dir, name, budget, Pass(reuse=first.recorded))
    return recs, got


def run_audit(rows: list[ResultRow], config: dict, out: Path) -> dict | None:
    """The best model's audit; one that cannot be made is a warning, never the run's failure."""
    try:
        return audit_best(rows, config, out)
    except (ValueError, OSError, MemoryError) as e:
        log.warning("audit left out: %s", e)
        return None


def run(cfg: RunConfig, progress: bool = True) -> Leaderboard:
    """Extract, classify every feature set, add the ensembles (and the fine-tuned row), audit the
    best; results.json written. Returns the run's leaderboard, built in memory."""
    resolve_models(list(cfg.classify.models))  # an unknown model fails before anything is extracted
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**cfg.to_dict(), "argv": sys.argv})
    t0 = time.perf_counter()
    multi = len(cfg.data) > 1
    names = dataset_names(cfg.data) if multi else [""]
    groups: list[tuple[str | None, str]] = list(zip(cfg.data, names)) or [(None, "")]
    stores, results, skipped, few_shot = [], [], [], []
    phases = {"extract_and_classify_s": 0.0, "ensembles_s": 0.0, "finetune_s": 0.0, "audit_s": 0.0}  # bench/small_n.py
    audits: dict[str, dict] = {}
    budget = RunBudget.parse(cfg.classify.budget)
    metrics: set[str] = set()  # each dataset's ranking metric (--metric auto, resolved)
    for i, (data, name) in enumerate(groups):
        cls_dir = out / "classify" / safe_name(name) if multi else out / "classify"
        t = time.perf_counter()
        recs, got, pool = run_backbones(cfg, data, name, cls_dir, budget, progress,
                                        {"dataset": name, "data": data} if multi else {},
                                        given=cfg.features if i == 0 else ())
        rows, skip = got.rows, got.skipped
        metric = got.metric(cfg.classify.metric)
        metrics.add(metric)
        phases["extract_and_classify_s"] += time.perf_counter() - t
        stores += recs
        write_json(out / "extraction.json", stores)
        t = time.perf_counter()
        with pool if pool is not None else contextlib.nullcontext():  # the workers fit the concatenations
            if cfg.ensembles:
                rows += ensemble_rows(cfg, rows, name, metric, out=cls_dir / "ensembles", pool=pool)
        phases["ensembles_s"] += time.perf_counter() - t
        t = time.perf_counter()
        tuned, why = finetune_row(cfg, data, name, rows, recs, cls_dir / "finetune", budget)
        phases["finetune_s"] += time.perf_counter() - t
        rows += tuned
        skip += why
        t = time.perf_counter()
        if cfg.audit:
            found = run_audit(rows, {**cfg.to_dict(), "metric": metric}, out)
            if found:
                audits[name] = found
        phases["audit_s"] += time.perf_counter() - t
        results += rows
        skipped += skip
        few_shot += got.few_shot
    metric = joint_metric(metrics)
    board = Leaderboard.ranked(
        [dataclasses.replace(r, producer="run") for r in results], metric, config=cfg.to_dict(),
        extraction=stores, skipped=skipped, few_shot=few_shot, seconds=time.perf_counter() - t0, dir=out,
        more={"budget_s": budget.total_s, **({"datasets": dict(zip(names, cfg.data))} if multi else {}),
              "phases": phases})
    if not write_run_audit(audits, out):
        (out / "report" / AUDIT_FILE).unlink(missing_ok=True)  # an earlier run's audit would describe other rows
    write_run(out, board.to_results())  # rows other producers added (finetune --run-dir) are kept
    return board
