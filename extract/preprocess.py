"""Decode + transform on DataLoader workers; a bad file becomes an error row, not a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Collection, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from extract.backbones import TransformSpec
from extract.images import ImageError, load_image

_INTERP = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def build_transform(spec: TransformSpec) -> Callable:
    """PIL image -> normalized float tensor (3, crop, crop), exactly as the spec says."""
    return T.Compose([
        T.Resize(spec.resize, interpolation=_INTERP[spec.interpolation], antialias=True),
        T.CenterCrop(spec.crop),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])


class ImageRows(Dataset):
    """Items are (row, tensor | None, error message) for the given store rows.

    With ``views`` (callables ``(image, row) -> tensor``), rows in ``view_rows`` decode once and
    yield a (1 + len(views), 3, H, W) stack: the plain transform first, then each view.
    """

    def __init__(self, root: str | Path, paths: Sequence[str], rows: Sequence[int], transform: Callable,
                 max_pixels: int | None = None, draft_size: int | None = None,
                 views: Sequence[Callable] = (), view_rows: Collection[int] = ()):
        self.root, self.paths, self.rows = Path(root), paths, list(rows)
        self.transform, self.max_pixels, self.draft_size = transform, max_pixels, draft_size
        self.views, self.view_rows = list(views), frozenset(int(r) for r in view_rows) if views else frozenset()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        row = self.rows[i]
        try:
            img = load_image(self.root / self.paths[row], max_pixels=self.max_pixels, draft_size=self.draft_size)
            x = self.transform(img)
            if row in self.view_rows:
                x = torch.stack([x] + [view(img, row) for view in self.views])
            return row, x, ""
        except ImageError as e:
            return row, None, str(e)
        except Exception as e:  # noqa: BLE001 - a transform failing on one odd image must not end the job
            return row, None, f"{type(e).__name__}: {e}"


def collate(batch: list[tuple[int, torch.Tensor | None, str]]) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Stack the good images; keep the bad ones as {row: message}."""
    good = [(r, x) for r, x, _ in batch if x is not None]
    errors = {r: msg for r, x, msg in batch if x is None}
    rows = torch.tensor([r for r, _ in good], dtype=torch.int64)
    images = torch.stack([x for _, x in good]) if good else None
    return rows, images, errors


def collate_views(batch: list[tuple[int, torch.Tensor | None, str]]
                  ) -> tuple[torch.Tensor, torch.Tensor | None, dict, torch.Tensor, torch.Tensor | None]:
    """:func:`collate` for :class:`ImageRows` with views: also (view_rows (M,), views (M, K, 3, H, W))."""
    good = [(r, x) for r, x, _ in batch if x is not None]
    errors = {r: msg for r, x, msg in batch if x is None}
    rows = torch.tensor([r for r, _ in good], dtype=torch.int64)
    images = torch.stack([x[0] if x.dim() == 4 else x for _, x in good]) if good else None
    stacked = [(r, x[1:]) for r, x in good if x.dim() == 4]
    view_rows = torch.tensor([r for r, _ in stacked], dtype=torch.int64)
    views = torch.stack([v for _, v in stacked]) if stacked else None
    return rows, images, errors, view_rows, views
