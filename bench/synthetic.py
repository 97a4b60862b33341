"""Synthetic feature stores at the sizes users' jobs produce, written through the product's writer.

    python bench/synthetic.py OUT.h5 --rows 200000 --dim 1280 --classes 100 [--dtype float16]

Like pooled CNN activations: each class is a mixture of two Gaussian blobs in a 64-d latent
space, mapped to ``dim`` non-negative features by a fixed random layer and a ReLU, plus a little
isotropic noise; a linear model does well but not perfectly, and trees, kNN, kernels and MLPs
have something to differ on. ``spread`` is calibrated (see
``SPREAD``) so a standardized scikit-learn logistic regression scores 0.8-0.9 on the 100-class,
1280-d store. 10% of the rows are ``val``; rows are generated and written chunk by chunk, so a
1.28M x 2048 store needs no more memory than one chunk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from featcache.store import FeatureSpec, Manifest, open_for_write, write_lock  # noqa: E402

SPREAD = 0.7  # calibrated: standardized sklearn logreg on 10k x 1280 x 100 scores 0.8-0.9
SPEC = {"backbone": "synthetic", "weights": "none", "weights_sha256": None, "taps": ["fc:in"],
        "transform": {"resize": 256, "crop": 224, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3},
        "precision": "fp32"}
CHUNK = 16384


LATENT = 64


def _centers(rng: np.random.Generator, classes: int, spread: float) -> np.ndarray:
    """(classes, 2, LATENT): two blob centers per class, ``spread`` latent sigmas from the origin."""
    return (rng.normal(0, 1, (classes, 2, LATENT)) * spread).astype(np.float32)


def _layer(rng: np.random.Generator, dim: int) -> tuple[np.ndarray, np.ndarray]:
    return (rng.normal(0, 1 / np.sqrt(LATENT), (LATENT, dim)).astype(np.float32),
            rng.normal(-0.5, 0.5, dim).astype(np.float32))


def sample(rng: np.random.Generator, y: np.ndarray, centers: np.ndarray, layer: tuple) -> np.ndarray:
    """Features of rows with labels ``y``: ReLU(latent @ A + b) + noise, float32."""
    z = centers[y, rng.integers(0, 2, len(y))] + rng.normal(0, 1, (len(y), LATENT)).astype(np.float32)
    X = np.maximum(z @ layer[0] + layer[1], 0)
    X += rng.normal(0, 0.3, X.shape).astype(np.float32)
    return X


def make_store(out: str | Path, rows: int, dim: int = 1280, classes: int = 100, *, dtype: str = "float32",
               seed: int = 0, spread: float = SPREAD, val_fraction: float = 0.1) -> Path:
    out = Path(out)
    rng = np.random.default_rng(seed)
    centers = _centers(rng, classes, spread)
    layer = _layer(rng, dim)
    y = rng.integers(0, classes, rows)
    split = np.where(rng.random(rows) < val_fraction, "val", "train")
    paths = [f"{s}/class{c}/img{i:07d}.jpg" for i, (s, c) in enumerate(zip(split, y))]
    manifest = Manifest(str(out.parent), paths, y.astype(np.int64), split.tolist(),
                        [f"class{c:03d}" for c in range(classes)], f"synthetic-{seed}-{rows}-{dim}-{classes}")
    feat = FeatureSpec("fc", "input", "none", dim)
    key = f"synthetic-{seed}-{rows}-{dim}-{classes}-{spread}-{dtype}"
    with write_lock(out):
        w = open_for_write(out, manifest, [feat], cache_key=key, spec={**SPEC, "dtype": dtype},
                           provenance={"synthetic": True, "seed": seed, "spread": spread},
                           default_feature=feat.key, dtype=dtype, overwrite=True)
        if w.status == "hit":
            return out
        for start in range(0, rows, CHUNK):
            stop = min(start + CHUNK, rows)
            X = sample(rng, y[start:stop], centers, layer)
            w.write(np.arange(start, stop), {feat.key: X})
        w.finish()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spread", type=float, default=SPREAD)
    a = p.parse_args(argv)
    print(make_store(a.out, a.rows, a.dim, a.classes, dtype=a.dtype, seed=a.seed, spread=a.spread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
