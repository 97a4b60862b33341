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
                raise ValueError(f"--budget {text!r}: expected a duration like 90s, 10m, 1h30m or seconds") from None
            seconds = sum(float(a) * _UNITS[u] for a, u in parts)
    if not seconds > 0:
        raise ValueError(f"--budget {text!r}: must be > 0")
    return seconds


@functools.lru_cache(maxsize=1)
def machine_gflops() -> float:
    """Float32 matmul GFLOP/s of this process's BLAS on a features-like product (~0.1 s to measure)."""
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
