"""Command-line options of fine-tuning: ``pipeline.py finetune`` and ``pipeline.py blocks``.

Options default to None so that ``FinetuneConfig``'s defaults stand (one place to change them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = ("Fine-tune a backbone with a new head: stage 1 trains the head on the frozen backbone (or takes "
               "it from a logreg fitted on cached features, --warm-start), stage 2 unfreezes all layers or the "
               "last N blocks and trains on with discriminative learning rates. Keeps the best epoch by val "
               "accuracy; --resume continues an interrupted run; --run-dir adds the result to a run's report.")

BLOCKS_RULE = ("blocks: the model's top-level children in order, an nn.Sequential/nn.ModuleList child opened one "
               "level into its items, parameter-free ones skipped, the head excluded (it always trains)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from extract.cli import add_model_arguments

    p.add_argument("--data", required=True,
                   help="image folder (train/ val/ [test/] or class folders), a CSV, or uncompressed webdataset "
                        "tar shards, quoted: 'shards/train-{000..009}.tar' (as for extract)")
    add_model_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for last.pt, best.pt and result.json")
    g = p.add_argument_group("stages")
    g.add_argument("--epochs-head", type=int, default=None,
                   help="stage 1 epochs: head only, backbone frozen (default 5; 0 with --warm-start)")
    g.add_argument("--epochs", type=int, default=None, help="stage 2 epochs, unfrozen (default 5; 0: head only)")
    g.add_argument("--unfreeze", default=None, metavar="all|N",
                   help=f"stage 2 trains all layers (default) or the last N {BLOCKS_RULE}; "
                        "`pipeline.py blocks --backbone NAME` lists them")
    g.add_argument("--warm-start", default=None, metavar="M.skops",
                   help="initialise the head from a logreg saved by classify on this backbone's default features")
    g = p.add_argument_group("optimization")
    g.add_argument("--lr", type=float, default=None, help="stage-1 head LR (default 0.01 sgd, 1e-3 adamw)")
    g.add_argument("--stage2-lr", type=float, default=None, help="stage-2 head LR (default --lr x 0.1)")
    g.add_argument("--backbone-lr-factor", type=float, default=None,
                   help="stage-2 LR of pretrained layers = stage-2 head LR x this (default 0.1)")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), default=None, help="sgd (momentum 0.9, default) or adamw")
    g.add_argument("--weight-decay", type=float, default=None, help="default 1e-4 for sgd, 0.01 for adamw")
    g.add_argument("--schedule", choices=("step", "cosine"), default=None,
                   help="per stage: step (LR x0.1 every --step-size epochs, default) or cosine to 0")
    g.add_argument("--step-size", type=int, default=None, help="StepLR period (default: 2/3 of the stage, rounded up)")
    g.add_argument("--train-bn", action="store_true", default=None,
                   help="unfrozen BatchNorm layers use and update batch statistics (default: all BatchNorm "
                        "layers keep their pretrained running statistics; small batches make batch ones noisy)")
    g.add_argument("--batch-size", type=int, default=None, help="images per step (default 32)")
    g.add_argument("--seed", type=int, default=None, help="seed of the head, shuffling and augmentation (default 0)")
    g = p.add_argument_group("running")
    g.add_argument("--workers", type=int, default=None, help="DataLoader decode workers (default 1 on a CPU)")
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps")
    g.add_argument("--resume", action="store_true", default=None, help="continue from DIR/last.pt")
    g.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="log loss, accuracy, learning rates and the best epoch's misclassified val images")
    g.add_argument("--run-dir", default=None, metavar="RUN_DIR",
                   help="append the result to RUN_DIR/results.json, so `pipeline.py report RUN_DIR` shows it")
    g.add_argument("--image-root", default=None, help="folder a CSV's paths are relative to")


def config_from_args(args: argparse.Namespace):  # -> FinetuneConfig
    from extract.weights import split_weights
    from finetune.config import FinetuneConfig

    weights, weights_file = split_weights(args.weights)
    given = {
        "weights": weights, "weights_file": weights_file, "epochs_head": args.epochs_head, "epochs": args.epochs,
        "unfreeze": args.unfreeze, "lr": args.lr, "stage2_lr": args.stage2_lr,
        "backbone_lr_factor": args.backbone_lr_factor, "optimizer": args.optimizer,
        "weight_decay": args.weight_decay, "train_bn": args.train_bn, "schedule": args.schedule,
        "step_size": args.step_size,
        "batch_size": args.batch_size, "workers": args.workers, "device": args.device,
        "warm_start": args.warm_start, "tensorboard": args.tensorboard, "resume": args.resume,
        "run_dir": args.run_dir, "seed": args.seed, "image_root": args.image_root,
    }
    return FinetuneConfig(data=args.data, backbone=args.backbone, out=args.out,
                          **{k: v for k, v in given.items() if v is not None})


def main_finetune(args: argparse.Namespace) -> int:
    from finetune.train import finetune

    cfg = config_from_args(args)
    result = finetune(cfg)
    v = result.val
    print(f"{result.model}: val accuracy {v['accuracy']:.4f} (balanced {v['balanced_accuracy']:.4f}, "
          f"n={v['n']}), best epoch {result.params['best_epoch']}, {result.fit_s:.1f} s of training")
    print(f"best model: {result.model_path}; result: {Path(cfg.out) / 'result.json'}"
          + (f"; added to {Path(cfg.run_dir) / 'results.json'}" if cfg.run_dir else ""))
    return 0


def main_blocks(args: argparse.Namespace) -> int:
    from extract.backbones import create_backbone
    from finetune.model import count_params, find_head, list_blocks

    backbone = create_backbone(args.backbone, weights="none")  # the architecture is all that matters here
    site = find_head(backbone.model, backbone.default_layer)
    blocks = list_blocks(backbone.model, site)
    print(f"{backbone.name}: head {site.name} ({site.in_features} inputs); --unfreeze N trains the last N of:")
    for i, (name, params) in enumerate(blocks):
        print(f"  {len(blocks) - i:3d}  {name:24s} {count_params(params):>11,d} parameters")
    return 0


def add_subcommands(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The hook pipeline.py calls: adds ``finetune`` and ``blocks``."""
    p = sub.add_parser("finetune", parents=parents, help="fine-tune a backbone end to end (a report row)",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=main_finetune)
    b = sub.add_parser("blocks", parents=parents, help="list the blocks `finetune --unfreeze N` counts",
                       description=f"List a backbone's {BLOCKS_RULE}; N=1 is the last one.")
    b.add_argument("--backbone", required=True, help="efficientnet_lite0, resnet50, timm:NAME, ...")
    b.set_defaults(func=main_blocks)
