"""Time estimates before fitting, and a ``--budget`` that approximates or skips what would not fit.

Each builder states its work in GFLOP (from rows, dimensions, classes and its grid); dividing by
this machine's measured float32 matmul rate gives seconds. The estimates are rough (within
about 3x on the bench's stores) and printed beside the measured time in every report, so a
user can see how far to trust them.
"""

from __future__ import annotations

import functools
import re
import time

import numpy as np

from featcache.common.errors import BadInput
from featcache.store import read_info

_UNITS = {"s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_budget(text: str | float | int | None) -> float | None:
    """``"10m"``, ``"90s"``, ``"1h30m"``, ``"45"`` (seconds) -> seconds; None/``"none"`` -> None."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none")):
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        t = str(text).strip().lower()
        try:
            seconds = float(t)
        except ValueError:
            parts = _PART.findall(t)
            if not parts or "".join(a + u for a, u in parts) != t:
                raise BadInput(f"--budget {text!r}: expected a duration like 90s, 10m, 1h30m or seconds") from None
            seconds = sum(float(a) * _UNITS[u] for a, u in parts)
    if not seconds > 0:
        raise BadInput(f"--budget {text!r}: must be > 0")
    return seconds


# Under a time budget (run --budget 10m), every backbone first gets these (each cost <= 3 s per
# 800-row feature set on dtd10, and logreg was each backbone's best there), so the cross-backbone
# vote exists before any slow model runs; the second pass spends what is left on the rest of the
# zoo, reusing the first.
FIRST_PASS = ("logreg", "knn", "knn-dino")

# --budget auto: each feature set's zoo may cost this share of its backbone's extraction. At 1/3,
# dtd10's default run (3 backbones) kept logreg, the kNNs and Lite1/2's linear head: 53 s, 0.82x
# the tutorial script (bench/small_n.py), rank 1 test 0.915 (0.920 with every model).
AUTO_SHARE = 1 / 3

# --budget auto keeps each classifier family's one model unless it alone costs more than the
# feature set's whole extraction, counted as at least this many (reference) seconds: at 10^2
# images an extraction takes under a second at 169 img/s, while a model's fixed costs (the MLP's
# ~50 early-stopping epochs, 200 trees, the C path's evaluations) make it 1-3 s, small beside the
# run's own start-up (~4 s), so without the floor the smallest sets would lose every family but kNN.
FAMILY_FLOOR_S = 3.0

# Extraction seconds relative to Lite0 at each one's native resolution: 169 / 92 / 90 img/s on
# dtd10's 1,200 photos on a 2-core CPU (a default run, OpenVINO bf16). Other backbones count as 1.
RELATIVE_COST = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 1.8, "efficientnet_lite2": 1.9}
# Seconds per image of a Lite0 extraction on that machine, until this run measures its own.
DEFAULT_S_PER_IMAGE = 0.006


def auto_allowance(backbone: str, images: int, feature_sets: int) -> float:
    """--budget auto: reference seconds one feature set's zoo may cost (AUTO_SHARE of the
    backbone's estimated extraction, split between its feature sets)."""
    return AUTO_SHARE * images * DEFAULT_S_PER_IMAGE * RELATIVE_COST.get(backbone, 1.0) / max(feature_sets, 1)


def store_allowance(store: str, allow_partial: bool = False) -> float:
    """:func:`auto_allowance` of a store's own extraction (its backbone, rows and feature sets)."""
    info = read_info(store, allow_partial=allow_partial)
    return auto_allowance(str(info.spec.get("backbone", "")), info.n_rows, len(info.features))


_ADOPTED: list[float] = []


def adopt_gflops(value: float) -> None:
    """Take another process's :func:`machine_gflops`: a feature-set worker measured under its
    siblings' load and on one thread read 2-3x slower, and its estimates 2-3x too long."""
    _ADOPTED[:] = [float(value)]


def machine_gflops() -> float:
    """Float32 matmul GFLOP/s of this process's BLAS on a features-like product (~0.1 s to measure)."""
    return _ADOPTED[0] if _ADOPTED else _measured_gflops()


@functools.lru_cache(maxsize=1)
def _measured_gflops() -> float:
    rng = np.random.default_rng(0)
    a = rng.random((2048, 1024), dtype=np.float32)
    b = rng.random((1024, 256), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048 * 1024 * 256 / best / 1e9


OVERHEAD_S = 0.05  # building, scoring and saving a model, whatever its size
FOLD_OVERHEAD_S = 0.01  # cloning, fitting and scoring one CV fold, besides its work


def estimate_seconds(work_gflop: float, gflops: float | None = None) -> float:
    """On this machine, or at a given rate (``run --budget auto`` decides at a fixed reference rate)."""
    return OVERHEAD_S + float(work_gflop) / (gflops or machine_gflops())


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"
