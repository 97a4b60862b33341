"""``extract_features``: one call from images to a feature store, for notebooks and scripts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from extract.runner import ExtractConfig, ExtractSummary, execute, plan
from extract.weights import split_weights


def extract_features(data: str | os.PathLike, backbone: str = "efficientnet_lite0",
                     out: str | os.PathLike = "features.h5", *, layers: str | tuple[str, ...] = ("default",),
                     pools: str | tuple[str, ...] = ("avg",), weights: str | None = None, progress: bool = False,
                     **options: object) -> ExtractSummary:
    """Extract ``layers`` x ``pools`` of ``backbone`` for every image of ``data`` (a folder or
    CSV, as ``pipeline.py extract --data``) into the HDF5 store ``out``; an existing complete
    store of the same job is reused, a partial one resumed. ``weights``: ``DEFAULT``, an enum
    name, ``none``, or a file. ``options`` are :class:`extract.runner.ExtractConfig`'s fields
    (``batch_size``, ``runtime``, ``precision``, ``views``...). Returns the
    :class:`extract.runner.ExtractSummary` (``store``, ``status``, ``rows``, ``features``)."""
    known = {f.name for f in dataclasses.fields(ExtractConfig)} - {"data", "backbone", "out", "layers", "pools",
                                                                    "weights", "weights_file", "progress"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"extract_features: unknown options {unknown}; valid: {sorted(known)}")

    def as_tuple(v: str | tuple[str, ...]) -> tuple[str, ...]:
        return (v,) if isinstance(v, str) else tuple(v)

    name, weights_file = split_weights(weights)
    cfg = ExtractConfig(data=str(data), backbone=backbone, out=str(out), layers=as_tuple(layers),
                        pools=as_tuple(pools), weights=name, weights_file=weights_file, progress=progress,
                        **options)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return execute(plan(cfg), Path(out))
