"""How sure a comparison is: intervals for accuracies, a paired test between two classifiers.

Numpy and the standard library only (the report imports this without scikit-learn). Checked
against scipy in tests/test_stats.py on known counts.

- :func:`wilson`: the Wilson score interval of a proportion (k of n right). Unlike the normal
  approximation it stays inside [0, 1] and keeps its coverage near 0 and 1, where small val
  splits of good features live (0.98 on 50 images is [0.895, 0.996]).
- :func:`mcnemar`: the exact McNemar test of two classifiers on the same images: only the
  images exactly one of them gets right carry information, and under "equally good" each of
  those is a fair coin. Two-sided p = 2 * P(Binomial(b + c, 1/2) <= min(b, c)), capped at 1.
- Per-image correctness travels as bits (:func:`pack`/:func:`unpack`) in a canonical image
  order, with a hash of that order (:func:`images_key`) so two rows are only paired when
  they were scored on the very same images.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Sequence

import numpy as np

from featcache.common.errors import BadInput
from featcache.common.intervals import Z95, accuracy_interval, wilson  # noqa: F401 - re-exported

ALPHA = 0.05


def _log_binom_cdf_half(k: int, n: int) -> float:
    """log P(Binomial(n, 1/2) <= k), summed in log space so n in the millions stays exact enough."""
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms)) - n * math.log(2)


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (b: only A right, c: only B right)."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * math.exp(_log_binom_cdf_half(min(b, c), n)))


def discordant(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(images only A gets right, images only B gets right) from two boolean correctness vectors."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise BadInput(f"correctness vectors of different lengths: {a.shape} vs {b.shape}")
    return int((a & ~b).sum()), int((~a & b).sum())


def images_key(paths: Sequence[str]) -> str:
    """A short hash of the (sorted) images a score was computed on."""
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        h.update(p.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def canonical_order(paths: Sequence[str]) -> np.ndarray:
    """The permutation that sorts ``paths`` (the order the bits are stored in)."""
    return np.argsort(np.asarray([str(p) for p in paths], dtype=object), kind="stable")


def pack(correct: np.ndarray) -> str:
    """Booleans as base64 bits (a 100,000-image split is 17 KB of JSON)."""
    return base64.b64encode(np.packbits(np.asarray(correct, bool)).tobytes()).decode("ascii")


def unpack(text: str, n: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    if len(bits) < n:
        raise BadInput(f"correctness bits hold {len(bits)} images, expected {n}")
    return bits[:n].astype(bool)


def correctness(pred: np.ndarray, y: np.ndarray, paths: Sequence[str] | None) -> dict:
    """``{"images", "correct"}``: the per-image record a paired test needs, in sorted-path order."""
    right = np.asarray(pred) == np.asarray(y)
    if paths is None:
        paths = [str(i) for i in range(len(right))]
    order = canonical_order(paths)
    return {"images": images_key(paths), "correct": pack(right[order])}


def paired_p(a: dict, b: dict) -> float | None:
    """McNemar p of two scores that carry ``images``/``correct``/``n`` on the same images; else None."""
    if not a or not b or a.get("images") is None or a.get("images") != b.get("images") \
            or not a.get("correct") or not b.get("correct"):
        return None
    n = int(a.get("n") or 0)
    return mcnemar(*discordant(unpack(a["correct"], n), unpack(b["correct"], n)))
