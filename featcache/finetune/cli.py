"""Command-line options of fine-tuning: ``pipeline.py finetune`` and ``pipeline.py blocks``.

The options are generated from :class:`finetune.config.FinetuneConfig`, where each is declared once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from featcache.common import options
from featcache.finetune.config import BLOCKS_RULE, FinetuneConfig

DESCRIPTION = ("Fine-tune a backbone with a new head: stage 1 trains the head on the frozen backbone (or takes "
               "it from a logreg fitted on cached features, --warm-start), stage 2 unfreezes all layers or the "
               "last N blocks and trains on with discriminative learning rates. Keeps the best epoch by val "
               "accuracy; --resume continues an interrupted run; --run-dir adds the result to a run's report.")

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every fine-tuning option, generated from :class:`~finetune.config.FinetuneConfig`."""
    required = ("data", "backbone", "out")
    options.add_arguments(p, FinetuneConfig, only=required, required=required)
    options.add_arguments(p, FinetuneConfig, exclude=required)


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    return options.build(FinetuneConfig, options.given(args, FinetuneConfig))


def main_finetune(args: argparse.Namespace) -> int:
    from featcache.finetune.train import finetune

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
    from featcache.finetune.model import count_params, find_head, list_blocks

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
