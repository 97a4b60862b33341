"""``pipeline.py run``: extract what is missing, classify every feature set, write one report.

Stores are named by cache key (``<backbone>-<key12>.h5`` in the feature dir), so a rerun,
or another run sharing ``--cache-dir``, reuses them. All layers and poolings of one
backbone come from one forward pass, so comparing layers costs no extra backbone passes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

from driver.config import RunConfig
from store.files import safe_name

log = logging.getLogger(__name__)


def write_json(path: Path, data: object) -> None:
    """Atomic: a reader never sees half a file, and a crash keeps the previous version."""
    from store.files import atomic_write

    atomic_write(path, json.dumps(data, indent=2, default=str))


# The extract options a run passes through unchanged (same names in RunConfig and ExtractConfig).
RUN_EXTRACT_FIELDS = ("layers", "pools", "batch_size", "workers", "loader", "device", "runtime", "precision", "dtype",
                      "compression", "channels_last", "fold_bn", "draft", "image_root", "allow_outside_root", "views",
                      "view_seed", "view_scale", "force")


def extract_all(cfg: RunConfig, data: str, progress: bool) -> list[dict]:
    """One store per backbone (all layers and pools in one pass); returns one record per store."""
    from extract.weights import split_weights
    from extract.runner import ExtractConfig, execute, plan
    from extract.sources import build_manifest

    manifest = build_manifest(data, cfg.image_root)
    weights, weights_file = split_weights(cfg.weights)
    cfg.feature_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for name in cfg.backbones:
        if not name.startswith("efficientnet_lite") and weights == "DEFAULT" and weights_file is None:
            log.info("%s: using torchvision DEFAULT weights from the torch hub cache", name)
        shared = {f.name: getattr(cfg, f.name) for f in fields(ExtractConfig) if f.name in RUN_EXTRACT_FIELDS}
        if cfg.max_pixels is not None:
            shared["max_pixels"] = cfg.max_pixels or None
        if cfg.view_scale is None:
            shared.pop("view_scale")
        ecfg = ExtractConfig(data=data, backbone=name, out="-", weights=weights, weights_file=weights_file,
                             progress=progress, **shared)
        p = plan(ecfg, manifest=manifest)
        store = cfg.feature_dir / f"{safe_name(name)}-{p.cache_key[:12]}.h5"
        summary = execute(p, store)
        log.info("%s", summary.line())
        records.append({
            "backbone": name, "store": str(store.resolve()), "status": summary.status, "seconds": summary.seconds,
            "images_per_s": summary.images_per_s, "rows": summary.rows, "skipped": summary.skipped,
            "features": summary.features, "forward_passes": 0 if summary.status == "hit" else 1,
        })
    return records


def classify_all(cfg: RunConfig, stores: list[dict], out: Path, dataset: str) -> tuple[list[dict], list[dict], list]:
    """Every feature set of every store through the zoo -> (result rows, skipped models, few-shot curves)."""
    from classify.train import run_classify

    results, skipped, few_shot = [], [], []
    tag = {"dataset": dataset} if dataset else {}
    for rec in stores:
        for key in rec["features"]:
            name = safe_name(f"{rec['backbone']}__{key}")
            log.info("classifying %s%s %s with %s", f"{dataset}: " if dataset else "", rec["backbone"], key,
                     ",".join(cfg.models))
            tb = str(Path(cfg.tensorboard) / (f"{dataset}__" if dataset else "") / name) if cfg.tensorboard else None
            res = run_classify(rec["store"], feature=key, models=list(cfg.models), jobs=cfg.jobs, seed=cfg.seed,
                               out_dir=out / name, tensorboard=tb, views=cfg.train_on_views,
                               tta=cfg.tta, protocol=cfg.protocol, budget=cfg.budget, select=cfg.select,
                               few_shot=cfg.few_shot, preprocess=cfg.preprocess, resume=cfg.resume,
                               final_fit=cfg.final_fit, metric=cfg.metric)
            for r in res:
                row = r if isinstance(r, dict) else r.to_dict()
                results.append({**tag, "backbone": rec["backbone"], "feature": key, "store": rec["store"], **row})
            metrics = out / name / "metrics.json"
            meta = json.loads(metrics.read_text()) if metrics.is_file() else {}
            skipped += [{**tag, "backbone": rec["backbone"], "feature": key, **s} for s in meta.get("skipped", [])]
            if meta.get("few_shot"):
                few_shot.append({**tag, "backbone": rec["backbone"], "feature": key, **meta["few_shot"]})
    return results, skipped, few_shot


def run(cfg: RunConfig, progress: bool = True) -> dict:
    from driver.config import dataset_names
    from driver.ensembles import ensemble_rows

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**cfg.to_dict(), "argv": sys.argv})
    t0 = time.perf_counter()
    multi = len(cfg.data) > 1
    names = dataset_names(cfg.data) if multi else [""]
    stores, results, skipped, few_shot = [], [], [], []
    for data, name in zip(cfg.data, names):
        recs = [{**({"dataset": name, "data": data} if multi else {}), **r} for r in extract_all(cfg, data, progress)]
        stores += recs
        write_json(out / "extraction.json", stores)
        cls_dir = out / "classify" / safe_name(name) if multi else out / "classify"
        rows, skip, curves = classify_all(cfg, recs, cls_dir, name)
        if cfg.ensembles:
            rows += ensemble_rows(cfg, rows, cls_dir / "ensembles", name)
        results += rows
        skipped += skip
        few_shot += curves
    results = [{**r, "producer": "run"} for r in results]
    summary = {"config": cfg.to_dict(), "extraction": stores, "results": results, "skipped": skipped,
               "few_shot": few_shot, **({"datasets": dict(zip(names, cfg.data))} if multi else {}),
               "seconds": time.perf_counter() - t0}
    from store.results import write_run

    write_run(out, summary)  # rows other producers added (finetune --run-dir) are kept
    return summary
