"""Shared fixtures. ``make_store`` builds a synthetic feature store through the real writer API."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from featcache.store import FeatureSpec, Manifest, open_for_write, write_lock

STORE_SPEC = {"backbone": "synthetic", "weights": "none", "weights_sha256": None, "taps": ["fc:in"],
              "transform": {"resize": 256, "crop": 224, "interpolation": "bilinear", "mean": [0.5] * 3,
                            "std": [0.5] * 3}, "dtype": "float32", "precision": "fp32"}


def build_store(
    tmp_path: Path,
    n_per_class: int | Mapping[str, int],
    n_classes: int,
    dim: int,
    splits: Sequence[str] = ("train", "val"),
    separable: bool = True,
    seed: int = 0,
    *,
    name: str = "features.h5",
    finish: bool = True,
    labels_for: Mapping[str, Sequence[int]] | None = None,
    spread: float = 6.0,
) -> Path:
    """A store of Gaussian blobs: ``n_per_class`` rows of every class in every split.

    ``separable``: class means ``spread`` noise-sigmas apart (False: one mean, labels are noise).
    ``n_per_class`` may map split -> count. ``labels_for`` restricts a split to some classes.
    ``finish=False`` leaves ``NAME.partial`` with half the rows written, like an interrupted run.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1, (n_classes, dim))
    means *= spread / np.linalg.norm(means, axis=1, keepdims=True).clip(1e-9) * np.sqrt(2) / 2
    if not separable:
        means[:] = 0.0
    paths, labels, split_names = [], [], []
    for split in splits:
        n = n_per_class[split] if isinstance(n_per_class, Mapping) else n_per_class
        for c in (labels_for or {}).get(split, range(n_classes)):
            for i in range(n):
                paths.append(f"{split}/class{c}/img{i:04d}.jpg")
                labels.append(c)
                split_names.append(split)
    y = np.array(labels, dtype=np.int64)
    X = (rng.normal(0, 1, (len(y), dim)) + means[y]).astype(np.float32)
    manifest = Manifest(str(tmp_path), paths, y, split_names, [f"class{c}" for c in range(n_classes)], f"fp{seed}")
    out = tmp_path / name
    feat = FeatureSpec("fc", "input", "none", dim)
    with write_lock(out):
        w = open_for_write(out, manifest, [feat], cache_key=f"synthetic-{seed}-{dim}", spec=dict(STORE_SPEC),
                           provenance={"test": True}, default_feature=feat.key)
        stop = len(y) if finish else len(y) // 2
        w.write(np.arange(stop), {feat.key: X[:stop]})
        if finish:
            w.finish()
        else:
            w.close()
    return out


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One model cache (facts, converted OpenVINO networks) for the whole session, never the user's."""
    os.environ["FEATCACHE_HOME"] = str(tmp_path_factory.mktemp("featcache-home"))


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., Path]:
    """``make_store(n_per_class, n_classes, dim, splits=('train', 'val'), separable=True, seed=0, **kw)``."""

    def make(*args, **kwargs) -> Path:
        return build_store(tmp_path, *args, **kwargs)

    return make


@pytest.fixture
def single_threaded():
    """One BLAS/OpenMP thread, as ``classify.fit`` fits: spinning threads on a busy machine
    made a tiny HGB fit take 50x longer."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


# Modules whose tests run real backbones, whole runs, subprocesses or servers (seconds each):
# `make test-fast` (-m "not slow") leaves them out; `make test` (CI) runs everything.
SLOW_MODULES = {
    "test_api", "test_audit", "test_backbones", "test_concurrency", "test_docs", "test_driver", "test_extract",
    "test_faults", "test_families", "test_fetch", "test_finetune", "test_fuse", "test_hooks", "test_hymenoptera",
    "test_images", "test_loader", "test_openvino", "test_packaging", "test_ray", "test_reliability", "test_shards",
    "test_tarsource", "test_views", "test_zoo_resume", "test_report_compare", "test_lint", "test_sources",
    "test_transforms", "test_export", "test_classify_sets",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
