"""Wilson intervals of accuracies: standard library only, so the row type (store.rows) can use them."""

from __future__ import annotations

import math

from featcache.common.errors import BadInput

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (n = 0: the whole [0, 1])."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise BadInput(f"wilson: k={k} must be between 0 and n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(accuracy: float | None, n: int | None) -> list[float] | None:
    """Wilson interval of an accuracy measured on n images (k recovered by rounding)."""
    if accuracy is None or not n:
        return None
    return list(wilson(int(round(accuracy * n)), int(n)))
