"""Decode + transform on DataLoader workers; a bad file becomes an error row, not a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

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
    """Items are (row, tensor | None, error message) for the given store rows."""

    def __init__(self, root: str | Path, paths: Sequence[str], rows: Sequence[int], transform: Callable,
                 max_pixels: int | None = None, draft_size: int | None = None):
        self.root, self.paths, self.rows = Path(root), paths, list(rows)
        self.transform, self.max_pixels, self.draft_size = transform, max_pixels, draft_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        row = self.rows[i]
        try:
            img = load_image(self.root / self.paths[row], max_pixels=self.max_pixels, draft_size=self.draft_size)
            return row, self.transform(img), ""
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
