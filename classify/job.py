"""``classify --out``: one store's feature set compared into one folder, files written as it goes.

:func:`prepare` reads the feature set and plans the zoo (bad options and model names fail before
any data is read); :func:`classify` compares with a :class:`~classify.outputs.Writer` attached,
so each model is saved and recorded as it finishes, a rerun resumes, and the reports are
rewritten after every model. ``run`` calls the same two steps for each of its feature sets.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from classify import budget as budgets
from classify.config import ClassifyConfig
from classify.features import FeatureSet, load_features
from classify.leaderboard import Leaderboard
from classify.models import resolve_models
from classify.outputs import Writer
from classify.plan import Budget, Shape, ZooPlan, check_tensorboard, plan_zoo, views_mode
from classify.table import shown_path
from classify.zoo import compare_zoo
from featcache.store import read_info

log = logging.getLogger(__name__)


def default_budget(cfg: ClassifyConfig) -> Budget:
    """``--budget``: a time, none, or ``auto`` (the default zoo sized to the store's extraction;
    models named in ``--models`` all run)."""
    text = cfg.budget.strip().lower()
    if text != "auto":
        return Budget(seconds=budgets.parse_budget(cfg.budget))
    if "all" not in cfg.models and "default" in cfg.models:
        return Budget(allowance_s=budgets.store_allowance(cfg.features, cfg.allow_partial))
    return Budget()


def load(cfg: ClassifyConfig) -> tuple[FeatureSet, str]:
    """(the feature set ``cfg`` compares, its views mode): what :func:`prepare` reads, and what a
    worker fitting one of its models reads again."""
    views = views_mode(cfg.train_on_views, bool(read_info(cfg.features, allow_partial=cfg.allow_partial).views)
                       if cfg.train_on_views == "auto" else False)
    data = load_features(cfg.features, cfg.feature, allow_partial=cfg.allow_partial, views=views != "off",
                         flip=cfg.tta != "none")
    return data, views


def prepare(cfg: ClassifyConfig, budget: Budget | None = None) -> tuple[FeatureSet, ZooPlan]:
    """(the feature set, the plan of its comparison); ``budget`` defaults to ``cfg.budget``'s."""
    names = resolve_models(list(cfg.models))  # bad names fail before any data is read
    warning = check_tensorboard(names, cfg.tensorboard)
    if warning:
        log.warning("%s", warning)
    data, views = load(cfg)
    zoo = plan_zoo(Shape.of(data), cfg, views=views, budget=budget or default_budget(cfg))
    log.info("ranking by %s", "repeated CV over train+val (--select cv)" if zoo.select == "cv" else "val accuracy")
    counts = ", ".join(f"{k} {v}" for k, v in data.counts().items())
    log.info("%s: %s %d-d, %s; val: %s", shown_path(data.store), data.feature, data.dim, counts, data.val_source)
    for on, p in zoo.protocols.items():
        log.info("selection%s: %s", " (on views)" if on else "", p.describe())
    return data, zoo


def classify(cfg: ClassifyConfig, budget: Budget | None = None) -> Leaderboard:
    """Compare ``cfg.models`` on one feature set of one store, writing into ``cfg.out``:
    ``models/<feature>__<model>.skops`` (+ ``.sha256``), ``oof/`` under ``--select cv``, the
    resume ledger ``finished/``, results.json, metrics.json, metrics.csv and summary.md."""
    data, zoo = prepare(cfg, budget)
    out = Path(cfg.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    board = compare_zoo(data, zoo, Writer(out, data, resume=cfg.resume))
    return replace(board, dir=out, config={**board.config, "out": str(out)})


def run_classify(store_path: str | os.PathLike, *, out_dir: str | os.PathLike, **options: object) -> Leaderboard:
    """:func:`classify` on ``store_path`` into ``out_dir``; ``options`` are
    :class:`~classify.config.ClassifyOptions`' fields (``feature``, ``models``, ``few_shot``, ...;
    ``views`` is accepted for ``train_on_views``), checked before any data is read."""
    if "views" in options:
        options["train_on_views"] = options.pop("views")
    for key in ("budget", "tensorboard"):
        if options.get(key) is not None and not isinstance(options[key], str):
            options[key] = str(options[key])
    if isinstance(options.get("preprocess"), (list, tuple)):
        options["preprocess"] = ",".join(options["preprocess"]) or "none"
    return classify(ClassifyConfig(features=str(store_path), out=str(out_dir), **options))
