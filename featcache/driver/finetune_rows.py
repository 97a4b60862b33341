"""``run --finetune off|auto|on``: a fine-tuned network as a row of the run's own leaderboard.

The recipe is LP-FT (Kumar et al. 2022): the head starts as the run's logistic regression on
the same backbone's default features (refitted on train alone when the run refitted it on
train+val, so that val, which keeps the best epoch, stays unseen), then the last
:data:`RECIPE` blocks train with AdamW, a cosine schedule and discriminative learning rates
(backbone = head x 0.1), each epoch on a fresh augmented view of every train image; the best
epoch by val accuracy is kept (epoch 0 = the probe itself, so the row is never worse than the
probe on val). It is scored by classify's own ``evaluate`` on val and test, and its
``best.pt`` is what ``pipeline.py predict`` runs.

``auto`` fine-tunes only with a GPU. Measured on this project's 2-core CPU (dtd10, Lite0,
600 train images): the last 3 blocks for 4 epochs took 209 s and kept epoch 0 (val 0.855,
test 0.880, the probe's own); every block, 4 epochs at 10x the LR, kept the probe as well
(README, "Fine-tune"). On a CPU the same minutes buy more as the other backbones' features.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from extract.devices import pick_device
from featcache.common.files import safe_name
from featcache.driver.budget import DEFAULT_S_PER_IMAGE, RunBudget
from featcache.driver.config import RunConfig
from featcache.finetune.config import FinetuneConfig
from featcache.store.rows import ResultRow

log = logging.getLogger(__name__)

RECIPE = {"unfreeze": "3", "epochs": 4, "optimizer": "adamw", "schedule": "cosine"}
# An epoch re-runs the whole backbone on every train image (augmented, decoded again), the backward
# pass of the unfrozen blocks and the val scoring: measured 30-50 s per epoch for dtd10's 600 + 200
# images on the 2-core CPU, where Lite0 extracts at 150 img/s: ~10x an extracted image's seconds.
EPOCH_COST = 10.0


def wanted(mode: str, device: str) -> str | None:
    """Why the run does not fine-tune (None: it does)."""
    if mode == "off":
        return "--finetune off"
    if mode == "on":
        return None
    if pick_device(device).type == "cuda":
        return None
    return ("--finetune auto fine-tunes on a GPU only: on a CPU the recipe cost minutes and kept the probe's "
            "head (dtd10, Lite0: 209 s, best epoch 0); --finetune on runs it anyway")


def warm_start_row(rows: list[ResultRow], backbone: str) -> ResultRow | None:
    """The run's logreg on ``backbone``'s default features (the classifier's input), if saved."""
    for r in rows:
        if (r.kind == "model" and r.backbone == backbone and r.model == "logreg" and r.model_path
                and r.feature.split("/")[0].endswith(":in")):
            return r
    return None


def finetune_row(cfg: RunConfig, data: str, dataset: str, rows: list[ResultRow], stores: list[dict], out_dir: Path,
                 budget: RunBudget) -> tuple[list[ResultRow], list[dict]]:
    """([the fine-tuned row], [why it was skipped]) for the first backbone the run classified."""
    tag = {"dataset": dataset} if dataset else {}
    if not stores:
        return [], []
    if data is None or not stores:  # a run of given stores only (--features): no images to fine-tune on
        return [], []
    rec = stores[0]
    backbone = rec["backbone"]

    def skipped(why: str) -> tuple[list, list]:
        log.info("fine-tuning %s skipped: %s", backbone, why)
        return [], [{**tag, "kind": "finetune", "backbone": backbone, "model": "finetune", "feature": "finetune",
                     "reason": why}]

    why = wanted(cfg.finetune, cfg.extract.device)
    if why:
        return skipped(why)
    warm = warm_start_row(rows, backbone)
    n_train = int(round((rec.get("rows") or 0) * 0.6))  # about train's share; only sizes the estimate
    est = RECIPE["epochs"] * EPOCH_COST * n_train * (budget.s_per_image or DEFAULT_S_PER_IMAGE)
    left = budget.left()
    if left is not None and est > left:
        return skipped(f"estimated {est:.0f} s > {max(left, 0):.0f} s left of the run's --budget")
    weights, weights_file = cfg.extract.weights, cfg.extract.weights_file
    ft_out = out_dir / safe_name(backbone)
    ft_cfg = FinetuneConfig(data=data, backbone=backbone, out=str(ft_out), weights=weights, weights_file=weights_file,
                            warm_start=warm.model_path if warm else None, device=cfg.extract.device, seed=cfg.classify.seed,
                            image_root=cfg.extract.image_root, resume=True, **RECIPE)
    log.info("fine-tuning %s: last %s blocks, %d epochs (%s)%s", backbone, RECIPE["unfreeze"], RECIPE["epochs"],
             "LP-FT from the run's logreg" if warm else "head trained first", f", estimate {est:.0f} s")
    from featcache.finetune.train import finetune  # torch and torchvision (~2 s): only when the run fine-tunes

    try:
        result = finetune(ft_cfg)
    except ValueError as e:
        if not str(e).startswith("--resume:"):
            raise
        log.info("%s: an earlier fine-tune with other settings; starting again (%s)", ft_out, e)
        shutil.rmtree(ft_out)
        result = finetune(ft_cfg)
    return [replace(result, store=rec["store"], dataset=dataset)], []
