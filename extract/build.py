"""Building a job's backbone: weights, hooked layers, a probe forward for the feature dims, BatchNorm folding.

The result is the model plus its :class:`~extract.modelcache.ModelFacts`, which the model
cache keeps so later runs can answer (a cache hit, an OpenVINO run of a cached network)
without doing any of this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from extract import costs
from extract.backbones import Backbone, create_backbone
from extract.fuse import fold_batchnorm
from extract.hooks import FeatureHooks, Tap
from extract.modelcache import ModelFacts
from featcache.store import FeatureSpec


def resolve_taps(backbone: Backbone, layers: Sequence[str]) -> list[Tap]:
    """``default`` and the family's preset names (``cls``, ``dinov2_lin4``, ``post_proj``...) become layers."""
    names = [backbone.default_layer if name in ("default", "") else backbone.presets.get(name, name) for name in layers]
    return [Tap.parse(n) for n in dict.fromkeys(names)]


def probe_features(backbone: Backbone, taps: list[Tap], pools: Sequence[str]) -> tuple[list[FeatureSpec], list[str]]:
    """One forward on a random image: validates layers and learns each feature's dim before any I/O.

    Also returns the keys whose activation a later in-place op changes (a Linear's output before a
    ReLU(inplace=True)): they are stored as copies taken at the hook, which versions before 0.2 did
    not do, so their stores get another cache key rather than a stale hit.
    """
    crop = backbone.transform.crop
    x = torch.randn(1, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    with FeatureHooks(backbone.model, taps, pools) as hooks, torch.inference_mode():
        out = hooks(x)
        shapes, changed = dict(hooks.raw_shapes), sorted(hooks.changed_in_place)
    specs = []
    for key, value in out.items():
        name, pool = key.rsplit("/", 1)
        tap = next(t for t in taps if t.name == name)
        specs.append(FeatureSpec(tap.layer, tap.side, pool, int(value.shape[1]), shapes[tap]))
    return specs, changed


def has_attention(model: nn.Module) -> bool:
    """Attention blocks (ViT, Swin, ...): NNCF quantizes those with its transformer scheme."""
    return any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__ for m in model.modules())


def build(backbone: str, weights: str, weights_file: str | None) -> Backbone:
    with costs.timed("model build"):
        return create_backbone(backbone, weights, weights_file)


def prepare(bb: Backbone, layers: Sequence[str], pools: Sequence[str], fold_bn: bool) -> tuple[Backbone, ModelFacts]:
    """(the backbone with its BatchNorms folded when asked, its facts)."""
    taps = resolve_taps(bb, layers)
    with costs.timed("probe"):
        features, changed = probe_features(bb, taps, pools)
    default_key = next(f.key for f in features if f.key.rsplit("/", 1)[0] == taps[0].name)
    folded = 0
    if fold_bn:
        with costs.timed("BatchNorm fold"):
            model, folded = fold_batchnorm(bb.model, taps, bb.transform.crop)
        bb = dataclasses.replace(bb, model=model)
    facts = ModelFacts(bb.name, bb.weights, bb.weights_sha256, bb.weights_path, bb.default_layer, bb.transform,
                       tuple(t.name for t in taps), tuple(features), default_key, folded, has_attention(bb.model),
                       dict(bb.extra), tuple(changed))
    return bb, facts


def taps_of(facts: ModelFacts) -> list[Tap]:
    return [Tap.parse(name) for name in facts.taps]
