"""int8 networks: NNCF post-training quantization, calibrated on up to 300 of the job's own train images.

Published results for NNCF's int8 on ImageNet are small drops (EfficientNet-Lite0 75.50 ->
75.18, ResNet-18 69.78 -> 69.48, ViT-B/16 81.07 -> 80.95) but failures exist (MobileNetV3-small
57.9 -> 41.9 without bias correction), so every quantized backbone is checked where it is
made: the calibration images go through both networks, and the features' cosine and a
linear probe's cross-validated accuracy on each are recorded in the store and logged, with a
warning when the probe moves by more than a point or a row's cosine falls below 0.95.

The calibration rows are evenly spaced over the train rows (all rows when there are none),
so every class in a class-sorted manifest is in; they and the settings are in the store's
spec, so the cache key says which network made the features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from extract.sources import fingerprint
from featcache.store import Manifest

log = logging.getLogger(__name__)
MAX_IMAGES = 300
SETTINGS = {"method": "nncf.quantize", "preset": "performance", "fast_bias_correction": True, "batch": 1}
MIN_COSINE = 0.95
MAX_PROBE_DROP = 0.01


def calibration_rows(manifest: Manifest, limit: int = MAX_IMAGES) -> np.ndarray:
    splits = np.asarray(manifest.splits, dtype=object)
    rows = np.flatnonzero(splits == "train")
    if not len(rows):
        rows = np.arange(len(manifest))
    if len(rows) > limit:
        rows = rows[np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(np.int64))]
    return rows.astype(np.int64)


def calibration_spec(manifest: Manifest, rows: np.ndarray, transformer: bool) -> dict:
    """What decides the int8 network besides the float one: which images, and how."""
    labels = np.asarray(manifest.labels)[rows]
    fp = fingerprint(Path(manifest.root), [manifest.paths[r] for r in rows], labels,
                     [manifest.splits[r] for r in rows])
    return {"rows": int(len(rows)), "fingerprint": fp, "model_type": "transformer" if transformer else "cnn",
            **SETTINGS}


def quantize(net, images: np.ndarray, transformer: bool):  # noqa: ANN001 - openvino.Model in and out
    """``net`` (uint8 NHWC input) quantized to int8 with ``images`` (N, H, W, 3) as the calibration set."""
    import contextlib
    import io

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" as nncf imports torch
    import nncf

    nncf.set_log_level(logging.ERROR)
    data = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    with contextlib.redirect_stdout(io.StringIO()):  # nncf's progress bars (rich) print whatever the log level
        return nncf.quantize(net, data, subset_size=len(images), preset=nncf.QuantizationPreset.PERFORMANCE,
                             fast_bias_correction=True, **kwargs)


def probe_accuracy(X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float | None:
    """Cross-validated accuracy of a ridge classifier (standardized features, dual form): a cheap,
    deterministic linear probe in numpy, to compare two feature sets of the same images."""
    classes = np.unique(y[y >= 0])
    keep = y >= 0
    X, y = X[keep].astype(np.float64), y[keep]
    if len(classes) < 2 or len(y) < 2 * folds:
        return None
    order = np.random.default_rng(seed).permutation(len(y))
    hits = 0
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        mu, sd = X[train].mean(0), X[train].std(0) + 1e-6
        A, B = (X[train] - mu) / sd, (X[test] - mu) / sd
        Y = (y[train][:, None] == classes[None, :]).astype(np.float64)
        K = A @ A.T
        alpha = np.linalg.solve(K + np.trace(K) / len(K) * np.eye(len(K)), Y)
        hits += int(((B @ A.T @ alpha).argmax(1) == np.searchsorted(classes, y[test])).sum())
    return hits / len(y)


def compare(reference: dict[str, np.ndarray], quantized: dict[str, np.ndarray], labels: Sequence[int]) -> dict:
    """Per feature: cosine of each row to the float network's, and the probe accuracy on both."""
    y = np.asarray(labels)
    out = {}
    for key, ref in reference.items():
        q = quantized[key]
        cos = (ref * q).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(q, axis=1)).clip(1e-12)
        out[key] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                    "probe_fp32": probe_accuracy(ref, y), "probe_int8": probe_accuracy(q, y)}
    return out


def warn_if_degraded(check: dict, backbone: str) -> None:
    for key, c in check.items():
        log.info("int8 %s %s on %s: cosine to fp32 mean %.4f (min %.4f); probe accuracy fp32 %s, int8 %s",
                 backbone, key, "the calibration images", c["cosine_mean"], c["cosine_min"],
                 _pct(c["probe_fp32"]), _pct(c["probe_int8"]))
        drop = (c["probe_fp32"] - c["probe_int8"]) if c["probe_fp32"] is not None and c["probe_int8"] is not None else 0
        if drop > MAX_PROBE_DROP or c["cosine_min"] < MIN_COSINE:
            log.warning("int8 quantization of %s degrades %s: probe accuracy %s -> %s, min cosine %.3f; "
                        "compare with --precision fp32 before trusting it", backbone, key,
                        _pct(c["probe_fp32"]), _pct(c["probe_int8"]), c["cosine_min"])


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"
