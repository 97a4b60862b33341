"""Eval preprocessing as data, and its geometric part (resize + center crop) without torch.

The crop is torchvision's ``Resize(resize) + CenterCrop(crop)`` on a PIL image, pixel for
pixel: the same output size rule, the same PIL resampling call, the same rounding of the
crop offsets and the same zero padding, so it needs neither torch nor torchvision. That
keeps decoding (and an extraction whose network runs on OpenVINO) free of a 2-4 s import;
``tests/test_transforms.py`` checks it against torchvision on many image shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@dataclass(frozen=True)
class TransformSpec:
    """Eval preprocessing as data, so it can be hashed into the cache key and rebuilt exactly."""

    resize: int  # shorter side after resizing
    crop: int  # square center crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TransformSpec:
        return cls(int(d["resize"]), int(d["crop"]), tuple(d["mean"]), tuple(d["std"]), str(d["interpolation"]))


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``short``: torchvision's rule (the long side truncated)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def resize_short(img: Image.Image, short: int, interpolation: str) -> Image.Image:
    size = resized_size(img.width, img.height, short)
    if size == img.size:
        return img  # torchvision returns the image untouched, and so must we
    return img.resize(size, INTERPOLATIONS[interpolation])


def center_crop(a: np.ndarray, crop: int) -> np.ndarray:
    """The central crop x crop of an (H, W, C) array, zero-padded first where it is smaller."""
    h, w = a.shape[:2]
    if crop > w or crop > h:
        pw, ph = max(crop - w, 0), max(crop - h, 0)
        a = np.pad(a, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = a.shape[:2]
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return a[top:top + crop, left:left + crop]


class CenterCrop:
    """PIL RGB image -> uint8 (crop, crop, 3) array: resize the short side, then center crop.

    Picklable (a plain object), so DataLoader workers and Ray actors can receive it.
    """

    def __init__(self, spec: TransformSpec):
        self.resize, self.crop, self.interpolation = spec.resize, spec.crop, spec.interpolation

    def __call__(self, img: Image.Image) -> np.ndarray:
        a = np.asarray(resize_short(img, self.resize, self.interpolation), dtype=np.uint8)
        return np.ascontiguousarray(center_crop(a, self.crop))
