"""The fine-tuning job: stage 1 (head, backbone frozen), stage 2 (unfrozen blocks, discriminative LRs).

Python API::

    from featcache.finetune.config import FinetuneConfig
    from featcache.finetune.train import finetune
    result = finetune(FinetuneConfig(data="hymenoptera", backbone="efficientnet_lite0", out="ft"))

Each epoch ends with ``OUT/last.pt`` (model, optimizer, scheduler, progress, RNG state) and,
on a new best val accuracy (ties: lower val loss), ``OUT/best.pt``. Stage 2 starts from the
best stage-1 weights, as tutorial 004 reloads its best checkpoint before unfreezing.
Every epoch's randomness (shuffling, crops, flips, dropout) derives from (seed, epoch), so
``--resume`` continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extract.backbones import Backbone, create_backbone
from extract.devices import pick_device
from extract.loaders import default_workers
from extract.sources import build_manifest
from featcache.common.errors import BadInput
from featcache.common.files import atomic_write, sha256_file
from featcache.finetune import checkpoint as ck
from featcache.finetune import tb
from featcache.finetune.config import SGD_MOMENTUM, STEP_GAMMA, FinetuneConfig, check_config
from featcache.finetune.data import Splits, epoch_seed, eval_loader, split_rows, train_loader
from featcache.finetune.loop import Outputs, predict, train_epoch
from featcache.finetune.model import HeadSite, find_head, param_groups, replace_head, set_trainable
from featcache.finetune.results import append_rows, result_row, score
from featcache.finetune.warmstart import init_head, load_warm_start
from featcache.store.rows import ResultRow

log = logging.getLogger(__name__)
RESULT_FILE = "result.json"


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint (as JSON) and restored by --resume."""

    stage: int = 1  # the stage in progress (2 once stage 2 has begun)
    done: int = 0  # epochs finished in that stage
    best_accuracy: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = -1  # global epoch of best.pt (0 = the warm-start head before any training)
    elapsed_s: float = 0.0  # training + per-epoch validation, summed over resumed sessions
    history: list[dict] = field(default_factory=list)


@dataclass
class Job:
    """What every stage needs: options, data, the network and where things go."""

    cfg: FinetuneConfig
    splits: Splits
    backbone: Backbone
    site: HeadSite
    device: torch.device
    workers: int
    out: Path
    writer: object = None  # SummaryWriter or None
    bad: set[int] = field(default_factory=set)  # rows already reported unreadable

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    def labels_of(self, rows) -> torch.Tensor:  # noqa: ANN001 - numpy rows from extract.rows.collate
        return self.splits.labels(np.asarray(rows))

    def global_epoch(self, stage: int, i: int) -> int:
        return i if stage == 1 else self.cfg.head_epochs + i


def prepare(cfg: FinetuneConfig) -> Job:
    """Check options, list the images, build the backbone with a new (maybe warm-started) head."""
    check_config(cfg)
    splits = split_rows(build_manifest(cfg.data, cfg.image_root, cfg.allow_outside_root))
    device = pick_device(cfg.device)
    backbone = create_backbone(cfg.backbone, cfg.weights, cfg.weights_file)
    site = find_head(backbone.model, backbone.default_layer)
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    head = replace_head(backbone.model, site, len(splits.class_names))
    if cfg.warm_start:
        init_head(head, *load_warm_start(cfg.warm_start, backbone, splits.class_names))
    backbone.model.to(device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    workers = default_workers(device, "process") if cfg.workers is None else cfg.workers
    return Job(cfg, splits, backbone, site, device, workers, out)


def job_identity(job: Job) -> dict:
    """Everything that changes the numbers of a run: a resume must match it exactly."""
    c = job.cfg
    return {
        "manifest": job.splits.manifest.fingerprint, "backbone": job.backbone.name, "weights": job.backbone.weights,
        "weights_sha256": job.backbone.weights_sha256, "epochs_head": c.head_epochs, "epochs": c.epochs,
        "unfreeze": c.unfreeze, "lr": c.head_lr, "stage2_lr": c.head_lr_stage2, "factor": c.backbone_lr_factor,
        "optimizer": c.optimizer, "weight_decay": c.decay, "schedule": c.schedule, "step_size": c.step_size,
        "crop_scale": list(c.crop_scale), "train_bn": c.train_bn, "batch_size": c.batch_size,
        "seed": c.seed,
        "warm_start": sha256_file(c.warm_start) if c.warm_start else None,
    }


def make_optimizer(cfg: FinetuneConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=SGD_MOMENTUM, weight_decay=cfg.decay)
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=cfg.decay)


def make_scheduler(cfg: FinetuneConfig, optimizer: torch.optim.Optimizer, epochs: int):
    """Stepped once per epoch: StepLR (x0.1 every step period) or cosine annealing to 0 over the stage."""
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_period(epochs), gamma=STEP_GAMMA)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))


def setup_stage(job: Job, stage: int) -> tuple[torch.optim.Optimizer, object]:
    """Freeze for the stage and build its optimizer (head only, or head + backbone groups) and schedule."""
    cfg = job.cfg
    if stage == 1:
        set_trainable(job.model, job.site, "none")
        groups = param_groups(job.model, job.site, cfg.head_lr, cfg.backbone_lr_factor)
    else:
        names = set_trainable(job.model, job.site, cfg.unfreeze_blocks)
        log.info("stage 2: training the head and %d blocks (%s ... %s)", len(names), names[0], names[-1])
        groups = param_groups(job.model, job.site, cfg.head_lr_stage2, cfg.backbone_lr_factor)
    optimizer = make_optimizer(cfg, groups)
    return optimizer, make_scheduler(cfg, optimizer, cfg.head_epochs if stage == 1 else cfg.epochs)


def save_best(job: Job, progress: Progress, outputs: Outputs, epoch: int) -> None:
    """best.pt on a higher val accuracy (ties: lower loss); the TensorBoard grid of its mistakes."""
    if (outputs.accuracy, -outputs.loss) <= (progress.best_accuracy, -progress.best_loss):
        return
    progress.best_accuracy, progress.best_loss, progress.best_epoch = outputs.accuracy, outputs.loss, epoch
    meta = {"backbone": job.backbone.name, "weights": job.backbone.weights, "head": job.site.name,
            "in_features": job.site.in_features, "class_names": job.splits.class_names,
            "transform": job.backbone.transform.to_dict(), "epoch": epoch, "val_accuracy": outputs.accuracy}
    ck.save_checkpoint(job.out / ck.BEST, {"model": job.model.state_dict(), "meta": json.dumps(meta)})
    if outputs.wrong_images:
        tb.log_misclassified(job.writer, epoch, torch.stack(outputs.wrong_images), outputs.wrong_true,
                             outputs.wrong_pred, job.backbone.transform, job.splits.class_names)


def validate(job: Job) -> Outputs:
    loader = eval_loader(job.splits, job.splits.val, job.backbone.transform, batch_size=job.cfg.batch_size,
                         workers=job.workers)
    return predict(job.model, loader, job.labels_of, job.device, bad=job.bad, paths=job.splits.manifest.paths)


def warm_baseline(job: Job, progress: Progress) -> None:
    """Epoch 0: the warm-started head before any step, so fine-tuning must beat the probe to replace it."""
    start = time.perf_counter()
    val = validate(job)
    progress.elapsed_s += time.perf_counter() - start
    record = {"epoch": 0, "stage": 0, "val_loss": val.loss, "val_accuracy": val.accuracy,
              "seconds": time.perf_counter() - start}
    progress.history.append(record)
    tb.log_epoch(job.writer, record)
    save_best(job, progress, val, 0)
    log.info("warm start: val loss %.4f acc %.4f (the linear probe's head, before training)", val.loss, val.accuracy)


def run_epoch(job: Job, stage: int, progress: Progress, optimizer, scheduler) -> dict:
    """Train one epoch, validate, step the schedule; return the epoch's record."""
    cfg, epoch = job.cfg, job.global_epoch(stage, progress.done + 1)
    start = time.perf_counter()
    torch.manual_seed(epoch_seed(cfg.seed, epoch))  # dropout and anything else drawn in this process
    lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
    loader = train_loader(job.splits, job.backbone.transform, epoch=epoch, seed=cfg.seed,
                          batch_size=cfg.batch_size, workers=job.workers, scale=cfg.crop_scale)
    loss, acc = train_epoch(job.model, loader, job.labels_of, optimizer, job.device, bad=job.bad,
                            paths=job.splits.manifest.paths, train_bn=cfg.train_bn)
    val = validate(job)
    scheduler.step()
    seconds = time.perf_counter() - start
    progress.done += 1
    progress.elapsed_s += seconds
    record = {"epoch": epoch, "stage": stage, "train_loss": loss, "train_accuracy": acc, "val_loss": val.loss,
              "val_accuracy": val.accuracy, "lr": lrs, "seconds": seconds}
    progress.history.append(record)
    save_best(job, progress, val, epoch)
    total = cfg.head_epochs + cfg.epochs
    log.info("epoch %d/%d (stage %d): train loss %.4f acc %.4f, val loss %.4f acc %.4f, lr %s, %.1f s", epoch,
             total, stage, loss, acc, val.loss, val.accuracy, ", ".join(f"{k} {v:.2g}" for k, v in lrs.items()),
             seconds)
    return record


def save_last(job: Job, progress: Progress, optimizer, scheduler, identity: dict) -> None:
    ck.save_checkpoint(job.out / ck.LAST, {
        "model": job.model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "progress": json.dumps(asdict(progress)), "rng": ck.rng_state(), "job": json.dumps(identity),
    })


def run_stage(job: Job, stage: int, progress: Progress, identity: dict, resumed: dict | None,
              on_epoch_end: Callable[[dict], None] | None) -> None:
    epochs = job.cfg.head_epochs if stage == 1 else job.cfg.epochs
    if progress.stage > stage or epochs == 0:
        return
    if progress.stage < stage:  # entering stage 2: continue from the best weights so far
        if (job.out / ck.BEST).is_file():
            job.model.load_state_dict(ck.load_checkpoint(job.out / ck.BEST)["model"])
        progress.stage, progress.done, resumed = stage, 0, None
    optimizer, scheduler = setup_stage(job, stage)
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
    while progress.done < epochs:
        record = run_epoch(job, stage, progress, optimizer, scheduler)
        tb.log_epoch(job.writer, record)
        save_last(job, progress, optimizer, scheduler, identity)
        if on_epoch_end is not None:
            on_epoch_end(record)


def start_or_resume(job: Job, identity: dict) -> tuple[Progress, dict | None]:
    """A fresh Progress, or the one in OUT/last.pt (model weights and RNG restored) with --resume."""
    last = job.out / ck.LAST
    if last.is_file() and not job.cfg.resume:
        raise BadInput(f"--out {job.out} holds a checkpoint ({ck.LAST}); pass --resume to continue it, "
                         "or choose another --out")
    if not last.is_file():
        if job.cfg.resume:
            log.info("--resume: no %s yet; starting from the beginning", last)
        (job.out / ck.BEST).unlink(missing_ok=True)  # a best.pt without last.pt is from an older, other run
        return Progress(), None
    state = ck.load_checkpoint(last)
    ck.check_same_job(state["job"], identity, last)
    job.model.load_state_dict(state["model"])
    ck.restore_rng(state["rng"])
    progress = Progress(**json.loads(state["progress"]))
    log.info("resuming %s: stage %d, %d epochs done, best val acc %.4f at epoch %d", last, progress.stage,
             progress.done, progress.best_accuracy, progress.best_epoch)
    return progress, state


def finetune(cfg: FinetuneConfig, on_epoch_end: Callable[[dict], None] | None = None) -> ResultRow:
    """Run (or resume) the job, score the best epoch on val (and test once), write OUT/result.json.

    ``on_epoch_end(record)`` is called after each epoch's checkpoint is written.
    """
    job = prepare(cfg)
    identity = job_identity(job)
    progress, resumed = start_or_resume(job, identity)
    purge = progress.history[-1]["epoch"] + 1 if progress.history else None  # drop events after the checkpoint
    job.writer = tb.open_writer(cfg.tensorboard, purge_step=purge)
    try:
        if cfg.warm_start and not progress.history:
            warm_baseline(job, progress)
        run_stage(job, 1, progress, identity, resumed if progress.stage == 1 else None, on_epoch_end)
        run_stage(job, 2, progress, identity, resumed if progress.stage == 2 else None, on_epoch_end)
    finally:
        if job.writer is not None:
            job.writer.close()
    return finish(job, progress)


def best_stage(cfg: FinetuneConfig, progress: Progress) -> int:
    """0: the warm-started head won; 1: a head-only epoch; 2: an unfrozen epoch."""
    return 0 if progress.best_epoch == 0 else 1 if progress.best_epoch <= cfg.head_epochs else 2


def finish(job: Job, progress: Progress) -> ResultRow:
    """Load best.pt, score it with classify's evaluate(), save the result and append it to --run-dir."""
    cfg, splits = job.cfg, job.splits
    job.model.load_state_dict(ck.load_checkpoint(job.out / ck.BEST)["model"])
    scores = {}
    for name, rows in (("val", splits.val), ("test", splits.test)):
        if len(rows):
            loader = eval_loader(splits, rows, job.backbone.transform, batch_size=cfg.batch_size, workers=job.workers)
            o = predict(job.model, loader, job.labels_of, job.device, bad=job.bad, paths=splits.manifest.paths)
            scores[name] = score(o.logits, o.labels, class_names=splits.class_names, paths=splits.paths(o.rows),
                                 predict_s=o.seconds)
    params = {"unfreeze": cfg.unfreeze if cfg.epochs else "none", "epochs_head": cfg.head_epochs,
              "epochs": cfg.epochs, "best_epoch": progress.best_epoch, "best_stage": best_stage(cfg, progress),
              "optimizer": cfg.optimizer,
              "schedule": cfg.schedule, "lr_head": cfg.head_lr, "lr_head_stage2": cfg.head_lr_stage2,
              "lr_backbone": cfg.head_lr_stage2 * cfg.backbone_lr_factor, "batch_size": cfg.batch_size,
              "warm_start": bool(cfg.warm_start), "train_bn": cfg.train_bn}
    row = result_row(model=cfg.model_name, backbone=job.backbone.name, params=params, fit_s=progress.elapsed_s,
                     val=scores["val"], val_source=splits.val_source, test=scores.get("test"),
                     model_path=str((job.out / ck.BEST).resolve()),
                     extra={"history": progress.history, "weights": job.backbone.weights,
                            "head": job.site.name, "config": cfg.to_dict()})
    atomic_write(job.out / RESULT_FILE, json.dumps(row.to_dict(), indent=2) + "\n")
    if cfg.run_dir:
        append_rows(cfg.run_dir, [row])
    log.info("%s: val acc %.4f (best epoch %d), %.1f s of training", cfg.model_name, row.val["accuracy"],
             progress.best_epoch, progress.elapsed_s)
    return row
