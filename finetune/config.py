"""Every option of a fine-tuning job, checked once, with the defaults in one place.

Options left unset (None) take the defaults below, so the CLI passes only what the user gave.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}  # stage-1 head LR
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.01}
STAGE2_LR_SCALE = 0.1  # stage 2 trains on "with a much lower learning rate" (tutorial 004)
SGD_MOMENTUM = 0.9
STEP_GAMMA = 0.1


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning job. Stage 1: head only, backbone frozen. Stage 2: unfrozen blocks + head."""

    data: str  # image folder or CSV, as for extract
    backbone: str
    out: str  # folder for last.pt, best.pt, result.json
    weights: str = "DEFAULT"
    weights_file: str | None = None
    epochs_head: int | None = None  # stage 1; None: 5, or 0 with a warm start
    epochs: int = 5  # stage 2; 0 trains the head only ("finetune-head")
    unfreeze: str = "all"  # "all" or N: the last N blocks (see finetune.model.list_blocks)
    lr: float | None = None  # stage-1 head LR; None: 0.01 for sgd, 1e-3 for adamw
    stage2_lr: float | None = None  # stage-2 head LR; None: lr x 0.1
    backbone_lr_factor: float = 0.1  # stage-2 LR of pretrained layers = stage-2 head LR x this
    optimizer: str = "sgd"  # sgd (momentum 0.9) | adamw
    weight_decay: float | None = None  # None: 1e-4 for sgd, 0.01 for adamw
    schedule: str = "step"  # step | cosine, per stage, stepped once per epoch
    step_size: int | None = None  # StepLR period in epochs; None: ceil(2/3 of the stage's epochs)
    train_bn: bool = False  # unfrozen BatchNorm uses batch statistics (default: running ones, see model.py)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range (torchvision's default)
    batch_size: int = 32
    workers: int | None = None  # None: 1 on a CPU (decode overlaps compute), more on a GPU
    device: str = "auto"
    warm_start: str | None = None  # a saved classify model (logreg) to initialise the head from
    tensorboard: str | None = None
    resume: bool = False
    run_dir: str | None = None  # append the result row to RUN_DIR/results.json
    seed: int = 0
    image_root: str | None = None
    allow_outside_root: bool = False

    def __post_init__(self) -> None:
        # Python callers may write unfreeze=2 and crop_scale=[a, b]; keep one spelling of each.
        if isinstance(self.unfreeze, int) and not isinstance(self.unfreeze, bool):
            object.__setattr__(self, "unfreeze", str(self.unfreeze))
        object.__setattr__(self, "crop_scale", tuple(self.crop_scale))

    @property
    def head_epochs(self) -> int:
        return self.epochs_head if self.epochs_head is not None else (0 if self.warm_start else 5)

    @property
    def unfreeze_blocks(self) -> int | None:
        """None for "all", else the number of trailing blocks to unfreeze."""
        return None if self.unfreeze == "all" else int(self.unfreeze)

    @property
    def head_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def head_lr_stage2(self) -> float:
        return self.stage2_lr if self.stage2_lr is not None else self.head_lr * STAGE2_LR_SCALE

    @property
    def decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY[self.optimizer]

    def step_period(self, stage_epochs: int) -> int:
        return self.step_size if self.step_size is not None else max(1, math.ceil(2 * stage_epochs / 3))

    @property
    def model_name(self) -> str:
        """The leaderboard name: finetune-head | finetune-all | finetune-lastN, "-warm" after a warm start."""
        what = "head" if self.epochs == 0 else "all" if self.unfreeze == "all" else f"last{self.unfreeze}"
        return f"finetune-{what}" + ("-warm" if self.warm_start else "")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        return d


def _int_at_least(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} {value!r}: must be an integer >= {low}")


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} {value!r}: must be a positive number")


def check_config(cfg: FinetuneConfig) -> FinetuneConfig:
    """Raise ValueError naming the first bad option; return ``cfg`` unchanged."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer {cfg.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"--schedule {cfg.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    n_blocks = cfg.unfreeze.isdigit() and int(cfg.unfreeze) >= 1 if isinstance(cfg.unfreeze, str) else False
    if cfg.unfreeze != "all" and not n_blocks:
        raise ValueError(f"--unfreeze {cfg.unfreeze!r}: expected 'all' or a number of blocks >= 1")
    if cfg.epochs_head is not None:
        _int_at_least("--epochs-head", cfg.epochs_head, 0)
    _int_at_least("--epochs", cfg.epochs, 0)
    if cfg.head_epochs + cfg.epochs == 0 and not cfg.warm_start:
        raise ValueError("--epochs-head 0 and --epochs 0: nothing to train (give epochs, or a --warm-start model)")
    _int_at_least("--batch-size", cfg.batch_size, 1)
    _int_at_least("--seed", cfg.seed, 0)
    if cfg.workers is not None:
        _int_at_least("--workers", cfg.workers, 0)
    if cfg.step_size is not None:
        _int_at_least("--step-size", cfg.step_size, 1)
    rates = (("--lr", cfg.lr), ("--stage2-lr", cfg.stage2_lr), ("--backbone-lr-factor", cfg.backbone_lr_factor))
    for name, value in rates:
        if value is not None:
            _positive(name, value)
    if cfg.weight_decay is not None and not (isinstance(cfg.weight_decay, (int, float)) and cfg.weight_decay >= 0):
        raise ValueError(f"--weight-decay {cfg.weight_decay!r}: must be >= 0")
    lo, hi = cfg.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop_scale {cfg.crop_scale!r}: expected 0 < min <= max <= 1")
    return cfg
