"""Images for fine-tuning: the same rows and splits as the feature stores, as DataLoaders.

Train images get a deterministic augmented view per epoch (``extract.views``); val and
test get the backbone's exact eval transform (``extract.preprocess.build_transform``), so
a fine-tuned model is scored on the pixels the cached-feature classifiers saw. Without a
val split, val is classify's stratified 20% holdout of train (same rows, same seed), so
the two kinds of model compare on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from extract.backbones import TransformSpec
from extract.images import DEFAULT_MAX_PIXELS, ImageError, load_image
from extract.preprocess import build_transform
from extract.rows import ImageRows, collate
from extract.views import view_transform
from featcache.common.errors import BadInput
from featcache.store import Manifest, splits


@dataclass(frozen=True)
class Splits:
    """Manifest rows per split (indices into ``manifest.paths``)."""

    manifest: Manifest
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray  # empty when there is no test split
    val_source: str  # VAL_SPLIT or VAL_HOLDOUT

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    def labels(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.manifest.labels[np.asarray(rows)], dtype=torch.int64)

    def paths(self, rows: np.ndarray) -> np.ndarray:
        """Absolute paths, so a report finds the images without a feature store."""
        root = Path(self.manifest.root)
        return np.array([str(root / self.manifest.paths[r]) for r in rows], dtype=object)


def split_rows(manifest: Manifest) -> Splits:
    """Labeled rows by split; a holdout from train when there is no val split (as classify does)."""
    labels = np.asarray(manifest.labels)
    at, source = splits.assign(labels, np.asarray(manifest.splits), str(manifest.root))
    train, val, test = at["train"], at["val"], at["test"]
    for name, rows in (("val", val), ("test", test)):
        unseen = sorted(set(labels[rows].tolist()) - set(labels[train].tolist()))
        if unseen:
            raise BadInput(f"{manifest.root}: {name} has classes with no train images: "
                             f"{[manifest.class_names[i] for i in unseen]}")
    return Splits(manifest, train, val, test, source)


class AugmentedRows(Dataset):
    """Items are (row, tensor | None, error message), the view drawn for (seed, row, view)."""

    def __init__(self, root: str | Path, paths: Sequence[str], rows: Sequence[int],
                 transform: Callable, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.root, self.paths, self.rows = Path(root), paths, [int(r) for r in rows]
        self.transform, self.max_pixels = transform, max_pixels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        row = self.rows[i]
        try:
            return row, self.transform(load_image(self.root / self.paths[row], max_pixels=self.max_pixels), row), ""
        except ImageError as e:
            return row, None, str(e)
        except Exception as e:  # noqa: BLE001 - one odd image must not end a long run
            return row, None, f"{type(e).__name__}: {e}"


def train_loader(splits: Splits, spec: TransformSpec, *, epoch: int, seed: int, batch_size: int, workers: int,
                 scale: tuple[float, float]) -> DataLoader:
    """Epoch ``epoch``'s shuffled, augmented train batches; order and views depend on (seed, epoch) only.

    The last partial batch is dropped when there is more than one batch: a batch of one
    image breaks BatchNorm in train mode (one value per channel on a 1x1 feature map).
    """
    m = splits.manifest
    data = AugmentedRows(m.root, m.paths, splits.train, view_transform(spec, seed, epoch, scale=scale))
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen, num_workers=workers,
                      collate_fn=collate, drop_last=len(data) > batch_size,
                      prefetch_factor=2 if workers else None)


def eval_loader(splits: Splits, rows: np.ndarray, spec: TransformSpec, *, batch_size: int,
                workers: int) -> DataLoader:
    """Rows in order through the backbone's eval transform."""
    m = splits.manifest
    data = ImageRows(m.root, m.paths, rows, build_transform(spec), DEFAULT_MAX_PIXELS)
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      prefetch_factor=2 if workers else None)


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed per (seed, epoch): shuffling, worker seeds and dropout of that epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)
