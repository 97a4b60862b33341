"""Seeded, stratified splits that still work when a class has only a few rows.

Cached-feature datasets are often small (the bundled sample has ~60 images per
class, some Kaggle classes have a handful), so the splitters here shrink instead
of failing: k-fold uses fewer folds when the rarest class cannot fill five, and
the holdout keeps singleton classes in train.

Augmented views of an image are near-copies of it, so they must never sit on both sides of a
split. Training on views passes ``groups`` (one id per source image, its center crop first):
folds are then drawn over images, and a held-out fold is scored on center crops only, the way
val and test are scored.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from featcache.store.splits import stratified_holdout  # noqa: F401 - the split rules live with the store


def _folds_for(n_splits: int, y: np.ndarray) -> int:
    """Fewer folds when the rarest class cannot fill ``n_splits`` (but always at least two)."""
    _, counts = np.unique(y, return_counts=True)
    return int(max(2, min(n_splits, counts.min())))


def group_centers(groups: np.ndarray) -> np.ndarray:
    """Index of each group's first sample (its center crop), in sample order."""
    _, first = np.unique(np.asarray(groups), return_index=True)
    return np.sort(first)


def grouped(groups: np.ndarray, center_split: tuple[np.ndarray, np.ndarray], centers: np.ndarray,
            held_views: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A split of the centers -> (every sample of the train images, the held-out centers, or with
    ``held_views`` every sample of the held-out images)."""
    train, held = center_split
    groups = np.asarray(groups)
    fit = np.flatnonzero(np.isin(groups, groups[centers[train]]))
    return fit, (np.flatnonzero(np.isin(groups, groups[centers[held]])) if held_views else centers[held])


class SmallDataKFold(StratifiedKFold):
    """Shuffled, seeded StratifiedKFold whose fold count shrinks to the rarest class's size.

    sklearn's own splitter raises when a class has fewer members than folds; a sweep on a
    tiny dataset should still run, with 2-4 folds, rather than fail.
    """

    def __init__(self, n_splits: int = 5, *, random_state: int | None = 0, held_views: bool = False):
        super().__init__(n_splits=n_splits, shuffle=True, random_state=random_state)
        self.held_views = held_views  # grouped folds: score held-out views too (a partition, as
        # cross_val_predict needs) instead of center crops only

    def split(self, X, y, groups=None):
        y = np.asarray(y)
        if groups is None:
            k = _folds_for(self.n_splits, y)
            yield from StratifiedKFold(k, shuffle=True, random_state=self.random_state).split(X, y)
            return
        centers = group_centers(groups)  # without views: every sample, so the same folds as above
        k = _folds_for(self.n_splits, y[centers])
        for fold in StratifiedKFold(k, shuffle=True, random_state=self.random_state).split(centers, y[centers]):
            yield grouped(groups, fold, centers, self.held_views)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        if y is None:
            return self.n_splits
        y = np.asarray(y)
        return _folds_for(self.n_splits, y if groups is None else y[group_centers(groups)])


class StratifiedHoldout(SmallDataKFold):
    """One seeded, stratified split: ``fraction`` of each class held out (DINOv2's protocol for
    large stores: choose on a holdout of train, then refit once). Grouped like the k-fold."""

    def __init__(self, fraction: float = 0.1, *, random_state: int | None = 0, held_views: bool = False):
        super().__init__(2, random_state=random_state, held_views=held_views)
        self.fraction = fraction

    def split(self, X, y, groups=None):
        y = np.asarray(y)
        if groups is None:
            yield stratified_holdout(y, self.fraction, self.random_state or 0)
            return
        centers = group_centers(groups)
        yield grouped(groups, stratified_holdout(y[centers], self.fraction, self.random_state or 0), centers,
                      self.held_views)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return 1


class RepeatedSmallDataKFold(SmallDataKFold):
    """``n_repeats`` SmallDataKFold partitions with different seeds, for stores so small that one
    k-fold's score moves with the draw."""

    def __init__(self, n_splits: int = 5, n_repeats: int = 2, *, random_state: int | None = 0,
                 held_views: bool = False):
        super().__init__(n_splits, random_state=random_state, held_views=held_views)
        self.n_repeats = n_repeats

    def split(self, X, y, groups=None):
        for r in range(self.n_repeats):
            seed = None if self.random_state is None else self.random_state + 1000 * r
            yield from SmallDataKFold(self.n_splits, random_state=seed, held_views=self.held_views).split(X, y, groups)

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_repeats * super().get_n_splits(X, y, groups)
