"""Every option of a fine-tuning job, checked once, with the defaults in one place.

Each option is declared once, on its field (:mod:`common.options`); ``pipeline.py finetune``'s
parser and its checks are generated from them. Options left None take the defaults the
properties below derive (they depend on the optimizer or the stage length).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from extract.weights import split_weights
from featcache.common import options
from featcache.common.errors import BadInput
from featcache.common.options import option

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}  # stage-1 head LR
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.01}
STAGE2_LR_SCALE = 0.1  # stage 2 trains on "with a much lower learning rate" (tutorial 004)
SGD_MOMENTUM = 0.9
STEP_GAMMA = 0.1


def _unfreeze(value: str) -> str | None:
    return None if value == "all" or (value.isdigit() and int(value) >= 1) else \
        "expected 'all' or a number of blocks >= 1"


BLOCKS_RULE = ("blocks: the model's top-level children in order, an nn.Sequential/nn.ModuleList child opened one "
               "level into its items, parameter-free ones skipped, the head excluded (it always trains)")


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning job. Stage 1: head only, backbone frozen. Stage 2: unfrozen blocks + head."""

    data: str = option(help="image folder (train/ val/ [test/] or class folders), a CSV, or uncompressed "
                            "webdataset tar shards, quoted: 'shards/train-{000..009}.tar' (as for extract)")
    backbone: str = option(help="efficientnet_lite0, resnet50, vit_b_16, timm:NAME, ...")
    out: str = option(metavar="DIR", help="folder for last.pt, best.pt and result.json")
    weights: str = option("DEFAULT", help="DEFAULT, a torchvision enum name (IMAGENET1K_V1), none, or a "
                                          "state-dict FILE")
    weights_file: str | None = option(None, cli=False, nullable=True, help="the state-dict file of --weights FILE")
    epochs_head: int | None = option(None, type=int, low=0, nullable=True, group="stages",
                                     default_text="5; 0 with --warm-start",
                                     help="stage 1 epochs: head only, backbone frozen")
    epochs: int = option(5, type=int, low=0, group="stages", help="stage 2 epochs, unfrozen (0: head only)")
    unfreeze: str = option("all", check=_unfreeze, metavar="all|N", group="stages",
                           help=f"stage 2 trains all layers or the last N {BLOCKS_RULE}; "
                                "`pipeline.py blocks --backbone NAME` lists them")
    warm_start: str | None = option(None, nullable=True, metavar="M.skops", group="stages",
                                    help="initialise the head from a logreg saved by classify on this backbone's "
                                         "default features")
    lr: float | None = option(None, type=float, low=0, nullable=True, group="optimization",
                              default_text="0.01 sgd, 1e-3 adamw", help="stage-1 head LR")
    stage2_lr: float | None = option(None, type=float, low=0, nullable=True, group="optimization",
                                     default_text="--lr x 0.1", help="stage-2 head LR")
    backbone_lr_factor: float = option(0.1, type=float, low=0, group="optimization",
                                       help="stage-2 LR of pretrained layers = stage-2 head LR x this")
    optimizer: str = option("sgd", choices=OPTIMIZERS, group="optimization", help="sgd (momentum 0.9) or adamw")
    weight_decay: float | None = option(None, type=float, low=0, nullable=True, group="optimization",
                                        default_text="1e-4 for sgd, 0.01 for adamw", help="weight decay")
    schedule: str = option("step", choices=SCHEDULES, group="optimization",
                           help="per stage: step (LR x0.1 every --step-size epochs) or cosine to 0")
    step_size: int | None = option(None, type=int, low=1, nullable=True, group="optimization",
                                   default_text="2/3 of the stage, rounded up", help="StepLR period in epochs")
    train_bn: bool = option(False, kind="bool", group="optimization",
                            help="unfrozen BatchNorm layers use and update batch statistics (off: all BatchNorm "
                                 "layers keep their pretrained running statistics; small batches make batch ones "
                                 "noisy)")
    crop_scale: tuple[float, float] = option((0.08, 1.0), kind="pair", check=options.fraction_range, group="optimization",
                                             help="RandomResizedCrop area range of the training crops "
                                                  "(torchvision's)")
    batch_size: int = option(32, type=int, low=1, group="optimization", help="images per step")
    seed: int = option(0, type=int, low=0, group="optimization",
                       help="seed of the head, shuffling and augmentation")
    workers: int | None = option(None, type=int, low=0, nullable=True, group="running",
                                 default_text="1 on a CPU, more on a GPU", help="DataLoader decode workers")
    device: str = option("auto", group="running", help="auto, cpu, cuda, cuda:N, mps")
    resume: bool = option(False, kind="bool", group="running", help="continue from DIR/last.pt")
    tensorboard: str | None = option(None, nullable=True, metavar="DIR", group="running",
                                     help="log loss, accuracy, learning rates and the best epoch's misclassified "
                                          "val images")
    run_dir: str | None = option(None, nullable=True, metavar="RUN_DIR", group="running",
                                 help="append the result to RUN_DIR/results.json, so `pipeline.py report RUN_DIR` "
                                      "shows it")
    image_root: str | None = option(None, nullable=True, group="running",
                                    help="folder a CSV's paths are relative to")
    allow_outside_root: bool = option(False, kind="bool", group="running",
                                      help="accept CSV paths that leave the image root (../, absolute)")

    def __post_init__(self) -> None:
        # Python callers may write unfreeze=2 and crop_scale=[a, b]; keep one spelling of each.
        if isinstance(self.unfreeze, int) and not isinstance(self.unfreeze, bool):
            object.__setattr__(self, "unfreeze", str(self.unfreeze))
        if self.weights_file is None and self.weights not in (None, "file"):
            weights, weights_file = split_weights(self.weights)  # --weights FILE names a state dict
            object.__setattr__(self, "weights", weights)
            object.__setattr__(self, "weights_file", weights_file)
        options.check(self)
        for name in ("lr", "stage2_lr", "backbone_lr_factor"):
            if getattr(self, name) == 0:
                raise BadInput(f"{name} 0: must be a positive number")
        if self.head_epochs + self.epochs == 0 and not self.warm_start:
            raise BadInput("nothing to train: epochs_head and epochs are both 0 (give epochs, or a warm_start model)")

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


def check_config(cfg: FinetuneConfig) -> FinetuneConfig:
    """Checked when made (``__post_init__``); kept for callers that re-check a replaced config."""
    return cfg
