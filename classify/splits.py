"""Seeded, stratified splits that still work when a class has only a few rows.

Cached-feature datasets are often small (the bundled sample has ~60 images per
class, some Kaggle classes have a handful), so the splitters here shrink instead
of failing: k-fold uses fewer folds when the rarest class cannot fill five, and
the holdout keeps singleton classes in train.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (keep, held_out): ``fraction`` of each class held out, at least one
    row of every class with two or more, none of a class with one. Sorted, deterministic."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1); got {fraction!r}")
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        if len(rows) < 2:
            continue
        n = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
        held.append(rng.permutation(rows)[:n])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(y)), held_out)
    return keep, held_out


def _folds_for(n_splits: int, y: np.ndarray) -> int:
    """Fewer folds when the rarest class cannot fill ``n_splits`` (but always at least two)."""
    _, counts = np.unique(y, return_counts=True)
    return int(max(2, min(n_splits, counts.min())))


class SmallDataKFold(StratifiedKFold):
    """Shuffled, seeded StratifiedKFold whose fold count shrinks to the rarest class's size.

    sklearn's own splitter raises when a class has fewer members than folds; a sweep on a
    tiny dataset should still run, with 2-4 folds, rather than fail.
    """

    def __init__(self, n_splits: int = 5, *, random_state: int | None = 0):
        super().__init__(n_splits=n_splits, shuffle=True, random_state=random_state)

    def split(self, X, y, groups=None):
        k = _folds_for(self.n_splits, np.asarray(y))
        yield from StratifiedKFold(k, shuffle=True, random_state=self.random_state).split(X, y, groups)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits if y is None else _folds_for(self.n_splits, np.asarray(y))
