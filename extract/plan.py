"""A planned job: the :class:`ExtractPlan` type and what reads it without running it.

The runner makes plans (``extract.runner.plan``) and executes them; the runtimes
(``extract.runtime``), the Ray engine and shard merges only read them, so they import this
module, not the runner. Building the torch model stays lazy (:func:`build_module`): a plan whose
facts came from the model cache never imports torch.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from extract import costs
from extract.modelcache import ModelFacts, cache_home
from extract.rows import ImageRows
from extract.spec import cache_key, cache_spec, view_layout
from extract.transforms import CenterCrop
from extract.views import view_transform

if TYPE_CHECKING:
    import numpy as np

    from extract.backbones import Backbone
    from extract.config import ExtractConfig
    from featcache.store import FeatureSpec, Manifest


@dataclass
class ExtractPlan:
    """A resolved job: everything known before the first image is read (the model itself is built
    only when the job has rows to extract; :meth:`model`)."""

    cfg: ExtractConfig
    device: str
    runtime: str
    precision: str
    manifest: Manifest  # this job's rows (a shard's slice with --shard)
    facts: ModelFacts
    spec: dict
    backbone: Backbone | None = None  # once built (BatchNorms folded as asked)
    full_manifest: Manifest | None = None  # every row of the job, before --shard (int8 calibration)
    custom: bool = False  # built from a Backbone object the caller passed: not in the model cache

    @property
    def cache_key(self) -> str:
        return cache_key(self.spec)

    @property
    def features(self) -> list[FeatureSpec]:
        return list(self.facts.features)

    @property
    def default_key(self) -> str:
        return self.facts.default_key

    @property
    def folded(self) -> int:
        return self.facts.folded

    def model(self) -> Backbone:
        """The frozen backbone, built now if the plan's facts came from the model cache."""
        if self.backbone is None:
            b = build_module()
            bb, facts = b.prepare(b.build(self.cfg.backbone, self.cfg.weights, self.cfg.weights_file),
                                  self.cfg.layers, self.cfg.pools, self.cfg.fold_bn)
            _check_same_facts(self.facts, facts)
            self.backbone = bb
        return self.backbone


def build_module() -> ModuleType:
    """extract.build, whose import is torch's (2-4 s here): timed as a fixed cost."""
    if "extract.build" not in sys.modules:
        with costs.timed("torch import"):
            import extract.build  # noqa: F401
    return sys.modules["extract.build"]


def _check_same_facts(cached: ModelFacts, built: ModelFacts) -> None:
    fields = ("weights", "weights_sha256", "features", "default_key", "folded", "transform", "taps", "copied")
    diff = [f for f in fields if getattr(cached, f) != getattr(built, f)]
    if diff:
        raise RuntimeError(f"the model cache ({cache_home()}) disagrees with {built.backbone} as built now "
                           f"(in {', '.join(diff)}); delete that folder and run again")


def with_runtime(p: ExtractPlan, runtime: str) -> ExtractPlan:
    """The same job on another runtime (its spec and cache key follow)."""
    spec = cache_spec(p.cfg, p.facts, p.full_manifest or p.manifest, p.precision, runtime, p.spec.get("calibration"))
    if "shard" in p.spec:
        spec["shard"] = p.spec["shard"]
    return dataclasses.replace(p, runtime=runtime, spec=spec)


def image_rows(p: ExtractPlan, pending: np.ndarray) -> ImageRows:
    """The job's pending rows as decoded uint8 crops (and views), as every engine reads them."""
    spec, cfg = p.facts.transform, p.cfg
    draft = max(spec.resize, spec.crop) if cfg.draft else None
    layout = view_layout(cfg, p.manifest)
    views = [view_transform(spec, cfg.view_seed, v, scale=cfg.view_scale, uint8=True) for v in range(cfg.views)]
    return ImageRows(p.manifest.root, p.manifest.paths, pending, CenterCrop(spec), cfg.max_pixels, draft,
                     views=views, view_rows=layout.rows if layout else ())
