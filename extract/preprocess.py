"""Decode + transform on decode workers; a bad file becomes an error row, not a crash.

Extraction decodes to uint8 (H, W, 3) crops and normalizes whole batches where the forward
runs (:func:`normalize_batch`): per-image float conversion was a fifth of the decode cost,
uint8 batches are a quarter of the bytes to hand over (or to copy to a GPU), and the
batched result is already channels_last. The numbers are bit-identical to
``ToTensor() + Normalize()`` (the same element-wise ops in the same order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np
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


def build_crop(spec: TransformSpec) -> Callable:
    """PIL image -> PIL crop (crop x crop): the geometric part of :func:`build_transform`."""
    return T.Compose([
        T.Resize(spec.resize, interpolation=_INTERP[spec.interpolation], antialias=True),
        T.CenterCrop(spec.crop),
    ])


def to_uint8(img) -> torch.Tensor:  # noqa: ANN001 - PIL.Image.Image
    """PIL RGB image -> uint8 tensor (H, W, 3), as ``ToTensor`` reads it before scaling."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))


class Uint8Crop:
    """PIL image -> uint8 (crop, crop, 3) center crop; picklable, for DataLoader workers."""

    def __init__(self, spec: TransformSpec):
        self.crop = build_crop(spec)

    def __call__(self, img) -> torch.Tensor:  # noqa: ANN001
        return to_uint8(self.crop(img))


def normalize_batch(u: torch.Tensor, spec: TransformSpec) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalized float (B, 3, H, W) in channels_last memory, on u's device."""
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=u.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=u.device).view(1, 3, 1, 1)
    return u.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)


class ImageRows(Dataset):
    """Items are (row, tensor | None, error message) for the given store rows.

    With ``views`` (callables ``(image, row) -> tensor``), rows in ``view_rows`` decode once and
    yield a stack (1 + len(views), ...) of the plain transform's tensor, then each view's.
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
    """:func:`collate` for :class:`ImageRows` with views: also (view_rows (M,), views (M, K, ...))."""
    good = [(r, x) for r, x, _ in batch if x is not None]
    errors = {r: msg for r, x, msg in batch if x is None}
    rows = torch.tensor([r for r, _ in good], dtype=torch.int64)
    images = torch.stack([x[0] if x.dim() == 4 else x for _, x in good]) if good else None  # an image is 3-d
    stacked = [(r, x[1:]) for r, x in good if x.dim() == 4]
    view_rows = torch.tensor([r for r, _ in stacked], dtype=torch.int64)
    views = torch.stack([v for _, v in stacked]) if stacked else None
    return rows, images, errors, view_rows, views
