"""The split rules every stage applies to a store's (or manifest's) rows, written once.

Train fits, val selects and is reported, test is reported once. Rows without a label (-1) or
outside train/val/test are left out. A dataset without a val split (one tree of class folders)
gets a stratified 20% holdout of train with a fixed seed, so every model, every run and
fine-tuning compare on the same rows.
"""

from __future__ import annotations

import numpy as np

from featcache.common.errors import BadInput

SPLITS = ("train", "val", "test")
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0  # fixed: the val rows must not move with the model seed
VAL_SPLIT = "val split"
VAL_HOLDOUT = "holdout from train"


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (keep, held_out): ``fraction`` of each class held out, at least one
    row of every class with two or more, none of a class with one. Sorted, deterministic."""
    if not 0.0 < fraction < 1.0:
        raise BadInput(f"holdout fraction must be in (0, 1); got {fraction!r}")
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


def assign(labels: np.ndarray, splits: np.ndarray, where: str, *, fraction: float = HOLDOUT_FRACTION,
           seed: int = HOLDOUT_SEED) -> tuple[dict[str, np.ndarray], str]:
    """({"train", "val", "test"}: row positions, val source): the labeled rows of each split,
    val held out of train (stratified, seeded) when there is none. ``where`` names the data in
    errors."""
    labels, splits = np.asarray(labels), np.asarray(splits)
    labeled = labels >= 0
    at = {s: np.flatnonzero(labeled & (splits == s)) for s in SPLITS}
    if len(at["train"]) == 0:
        raise BadInput(f"{where}: no labeled train rows; a classifier needs a train split with labels")
    if len(np.unique(labels[at["train"]])) < 2:
        raise BadInput(f"{where}: the train split has only one class; a classifier needs at least two")
    if len(at["val"]):
        return at, VAL_SPLIT
    keep, held = stratified_holdout(labels[at["train"]], fraction, seed)
    if len(held) == 0:
        raise BadInput(f"{where}: no val split, and too few train rows for a {fraction:.0%} holdout")
    return {**at, "train": at["train"][keep], "val": at["train"][held]}, VAL_HOLDOUT
