"""Model surgery for fine-tuning: a new head, the blocks that can be unfrozen, train/eval modes, LR groups.

Blocks (what ``--unfreeze N`` counts): the model's top-level children in registration
order, where a child that is exactly an ``nn.Sequential`` or ``nn.ModuleList`` is opened
one level into its items; blocks without parameters are skipped and the head's own
parameters never belong to a block (the head always trains). Parameters registered on
the model itself (a ViT's class token) form a first block, ``(own)``.

  - resnet18: conv1, bn1, layer1.0, layer1.1, ..., layer4.0, layer4.1 (last 2 = layer4)
  - efficientnet_lite0: _conv_stem, _bn0, _blocks.0 .. _blocks.15, _conv_head, _bn1
  - mobilenet_v3_small: features.0 .. features.12, classifier.0

Registration order is forward order in every zoo model we ship; ``list_blocks`` shows
the names so a user can check before choosing N.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from featcache.common.errors import BadInput

log = logging.getLogger(__name__)
OWN = "(own)"


@dataclass(frozen=True)
class HeadSite:
    """Where the classifier sits: its dotted name and the width of its input."""

    name: str  # e.g. "_fc", "fc", "classifier.3"
    in_features: int


def find_head(model: nn.Module, default_layer: str) -> HeadSite:
    """The classifier named by a backbone's default layer (``"_fc:in"`` -> module ``_fc``)."""
    name, _, side = default_layer.partition(":")
    if side != "in":
        raise BadInput(f"cannot fine-tune: the default layer {default_layer!r} is not the input of a "
                         "classifier (NAME:in), so there is no head to replace")
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise BadInput(f"cannot fine-tune: the model has no module {name!r} (from {default_layer!r})") from None
    if not isinstance(module, nn.Linear):
        raise BadInput(f"cannot fine-tune: {name!r} is a {type(module).__name__}, expected nn.Linear")
    return HeadSite(name, int(module.in_features))


def replace_head(model: nn.Module, site: HeadSite, n_classes: int) -> nn.Linear:
    """Put a fresh ``nn.Linear(in_features, n_classes)`` where the classifier was; return it."""
    if n_classes < 2:
        raise BadInput(f"a classifier needs at least 2 classes; got {n_classes}")
    parent_name, _, attr = site.name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    head = nn.Linear(site.in_features, n_classes)
    setattr(parent, attr, head)  # works for Sequential children too ("classifier.3" -> attr "3")
    return head


def head_of(model: nn.Module, site: HeadSite) -> nn.Linear:
    return model.get_submodule(site.name)


def list_blocks(model: nn.Module, site: HeadSite) -> list[tuple[str, list[nn.Parameter]]]:
    """(name, parameters) of every block, first to last, head parameters left out (module docstring)."""
    head_ids = {id(p) for p in head_of(model, site).parameters()}
    units: list[tuple[str, list[nn.Parameter]]] = []
    own = [p for p in model.parameters(recurse=False) if id(p) not in head_ids]
    if own:
        units.append((OWN, own))
    for name, child in model.named_children():
        items = (list(child.named_children()) if type(child) in (nn.Sequential, nn.ModuleList)
                 else [("", child)])
        for sub, module in items:
            params = [p for p in module.parameters() if id(p) not in head_ids]
            if params:
                units.append((f"{name}.{sub}" if sub else name, params))
    return units


def set_trainable(model: nn.Module, site: HeadSite, unfreeze: int | None | str) -> list[str]:
    """Freeze all but the head and the chosen blocks; return the names of the trainable blocks.

    ``unfreeze``: ``"none"`` (stage 1: head only), None (every block) or N (the last N blocks).
    """
    blocks = list_blocks(model, site)
    if unfreeze == "none":
        chosen: list[tuple[str, list[nn.Parameter]]] = []
    elif unfreeze is None:
        chosen = blocks
    else:
        if unfreeze > len(blocks):
            raise BadInput(f"--unfreeze {unfreeze}: the model has only {len(blocks)} blocks "
                             f"({', '.join(n for n, _ in blocks)}); use 'all' or a smaller N")
        chosen = blocks[len(blocks) - unfreeze:]
    for p in model.parameters():
        p.requires_grad_(False)
    for _, params in chosen:
        for p in params:
            p.requires_grad_(True)
    for p in head_of(model, site).parameters():
        p.requires_grad_(True)
    return [n for n, _ in chosen]


def set_train_mode(model: nn.Module, train_bn: bool = False) -> None:
    """Train mode for what trains; frozen submodules, and by default every BatchNorm, in eval mode.

    Why frozen parts: in train mode BatchNorm normalizes with the batch's statistics and
    overwrites its running statistics. With small batches (16-32 images of a small dataset)
    that swaps ImageNet statistics for noisy ones the frozen weights were never trained with,
    and the features drift away from the ones the head (or the linear probe it was warm-started
    from) learned on. Frozen blocks as a whole stay in eval mode for the same reason: their
    stochastic depth (EfficientNet's drop-connect) would perturb features no frozen weight can
    adapt to. A module is frozen when it has parameters and none of them trains; parameter-free
    modules outside frozen blocks (the dropout before the head) train.

    Why every BatchNorm by default: the same noise hits unfrozen blocks. On hymenoptera
    (efficientnet_lite0, batch 32, warm start) the first unfrozen epoch ended at train loss
    0.56 with batch statistics and 0.07 with the running ones, at equal val accuracy. Their
    scale and shift still train. ``train_bn=True`` lets unfrozen BatchNorm layers use and
    update batch statistics (the usual choice with large batches).
    """
    model.train()
    for m in model.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()
        elif not train_bn and isinstance(m, _BatchNorm):
            m.eval()


def param_groups(model: nn.Module, site: HeadSite, head_lr: float, backbone_factor: float) -> list[dict]:
    """Discriminative LRs: the head at ``head_lr``, trainable pretrained layers at ``head_lr x factor``.

    Frozen parameters are left out of the optimizer altogether.
    """
    head_ids = {id(p) for p in head_of(model, site).parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids]
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head, "lr": head_lr, "name": "head"}]
    if body:
        groups.append({"params": body, "lr": head_lr * backbone_factor, "name": "backbone"})
    return groups


def count_params(params: list[torch.Tensor]) -> int:
    return int(sum(p.numel() for p in params))
