"""A job's cache identity: the spec of everything that decides its stored numbers, and its key.

``cache_spec`` is what a store records and compares (a stale-cache bug is a field missing here);
``cache_key`` is its hash, which the store, shard merges and the runner share. The view layout
(which rows get augmented views) is part of the same contract.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import numpy as np

from extract.views import DEFAULT_RATIO
from featcache.store import ViewLayout

if TYPE_CHECKING:
    from extract.config import ExtractConfig
    from extract.modelcache import ModelFacts
    from featcache.store import Manifest


def cache_spec(cfg: ExtractConfig, facts: ModelFacts, manifest: Manifest, precision: str, runtime: str,
               calibration: dict | None = None) -> dict:
    """Everything that decides the stored numbers. Missing one here is the stale-cache bug.

    The runtime is in it except at fp32, where OpenVINO's rows agree with torch's within 4e-6
    (relative, tests/test_openvino.py on every backbone family), as close as BatchNorm folding
    moves them, so a torch and an OpenVINO fp32 store share a key; bf16, fp16 and int8 run
    other kernels on each, so they do not.
    """
    return {
        "backbone": facts.backbone,
        "weights": facts.weights,
        "weights_sha256": facts.weights_sha256,
        "features": [f.key for f in facts.features],
        "transform": facts.transform.to_dict(),
        "draft": cfg.draft,
        "max_pixels": cfg.max_pixels,
        "precision": precision,
        "fold_bn": cfg.fold_bn,
        "dtype": cfg.dtype,
        "manifest": manifest.fingerprint,
        "rows": len(manifest),
        **({"views": view_spec(cfg)} if cfg.views or cfg.flip else {}),  # absent when off: plain stores keep keys
        **({"runtime": runtime} if runtime != "torch" and precision != "fp32" else {}),
        **({"calibration": calibration} if calibration is not None else {}),
        # features a later in-place op changes, which earlier versions stored changed: not the same numbers
        **({"copied_before_inplace": list(facts.copied)} if facts.copied else {}),
    }


def view_spec(cfg: ExtractConfig) -> dict:
    return {"k": cfg.views, "seed": cfg.view_seed, "scale": list(cfg.view_scale), "ratio": list(DEFAULT_RATIO),
            "splits": list(cfg.view_splits), "flip": True}


def view_layout(cfg: ExtractConfig, manifest: Manifest) -> ViewLayout | None:
    """The rows that get views: those of ``view_splits`` (a single-tree store's rows are all "train")."""
    if not (cfg.views or cfg.flip):
        return None
    rows = np.flatnonzero(np.isin(np.asarray(manifest.splits, dtype=object), list(cfg.view_splits)))
    attrs = {k: v for k, v in view_spec(cfg).items() if k != "k"}
    return ViewLayout(rows=rows.astype(np.int64), k=cfg.views, flip=True, attrs=attrs)


def cache_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
