"""Store rows as decoded images: a bad file becomes an error row, not a crash.

A plain map-style dataset (``len`` and ``[i]``), so the thread loaders, DataLoader worker
processes and Ray actors can all use it, and neither it nor its batches need torch:
extraction decodes to uint8 numpy crops and the runtime normalizes whole batches. Items
made by a torch transform (fine-tuning's float tensors) are stacked with torch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np

from extract.images import ImageError, load_image


class ImageRows:
    """Items are (row, image | None, error message) for the given store rows.

    With ``views`` (callables ``(image, row) -> array``), rows in ``view_rows`` decode once and
    yield a stack (1 + len(views), ...) of the plain transform's output, then each view's.
    """

    def __init__(self, root: str | Path, paths: Sequence[str], rows: Sequence[int], transform: Callable,
                 max_pixels: int | None = None, draft_size: int | None = None,
                 views: Sequence[Callable] = (), view_rows: Collection[int] = ()):
        self.root, self.paths, self.rows = Path(root), paths, list(rows)
        self.transform, self.max_pixels, self.draft_size = transform, max_pixels, draft_size
        self.views, self.view_rows = list(views), frozenset(int(r) for r in view_rows) if views else frozenset()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, object, str]:
        row = self.rows[i]
        try:
            img = load_image(self.root / self.paths[row], max_pixels=self.max_pixels, draft_size=self.draft_size)
            x = self.transform(img)
            if row in self.view_rows:
                x = stack([x] + [view(img, row) for view in self.views])
            return row, x, ""
        except ImageError as e:
            return row, None, str(e)
        except Exception as e:  # noqa: BLE001 - a transform failing on one odd image must not end the job
            return row, None, f"{type(e).__name__}: {e}"


def stack(items: list) -> object:
    """np.stack for numpy items, torch.stack for tensors (imported only then)."""
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(items)


def _rows(values: list[int]) -> object:
    return np.asarray(values, dtype=np.int64)


def collate(batch: list[tuple[int, object, str]]) -> tuple[np.ndarray, object, dict]:
    """(rows of the good images, their stack or None, {row: message} of the bad ones)."""
    good = [(r, x) for r, x, _ in batch if x is not None]
    errors = {r: msg for r, x, msg in batch if x is None}
    images = stack([x for _, x in good]) if good else None
    return _rows([r for r, _ in good]), images, errors


def collate_views(batch: list[tuple[int, object, str]]) -> tuple[np.ndarray, object, dict, np.ndarray, object]:
    """:func:`collate` for :class:`ImageRows` with views: also (view_rows (M,), views (M, K, ...))."""
    good = [(r, x) for r, x, _ in batch if x is not None]
    errors = {r: msg for r, x, msg in batch if x is None}
    images = stack([x[0] if x.ndim == 4 else x for _, x in good]) if good else None  # an image is 3-d
    stacked = [(r, x[1:]) for r, x in good if x.ndim == 4]
    views = stack([v for _, v in stacked]) if stacked else None
    return _rows([r for r, _ in good]), images, errors, _rows([r for r, _ in stacked]), views
