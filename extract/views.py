"""Deterministic augmented views: the same (seed, row, view) always gives the same crop and flip.

Fine-tuning draws its train-time augmentation here (view = epoch), so an epoch's images do not
depend on worker processes or on where a run was resumed; an augmented feature cache
(``extract --views K``) can store views 0..K-1 of every row and rebuild any one of them.
Every view is augmented (none is the plain center crop: that is the ordinary extraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from extract.transforms import INTERPOLATIONS, TransformSpec
from featcache.common.errors import BadInput

DEFAULT_SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop's defaults
DEFAULT_RATIO = (3 / 4, 4 / 3)


def crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop: torchvision's ``RandomResizedCrop.get_params``,
    drawing from ``rng`` instead of torch's global generator."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height  # fallback: the central crop torchvision takes
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class ViewTransform:
    """``(PIL image, row) -> normalized tensor (3, crop, crop)`` (or, with ``uint8``, the uint8
    (crop, crop, 3) numpy crop, made without torch): RandomResizedCrop + horizontal flip,
    drawn from a generator seeded by (seed, row, view), then the backbone's own normalization.

    A picklable object rather than a closure, so DataLoader workers can receive it.
    """

    spec: TransformSpec
    seed: int
    view: int
    scale: tuple[float, float] = DEFAULT_SCALE
    ratio: tuple[float, float] = DEFAULT_RATIO
    uint8: bool = False  # return the uint8 (crop, crop, 3) crop; extraction normalizes whole batches

    def params(self, width: int, height: int, row: int) -> tuple[tuple[int, int, int, int], bool]:
        """The crop box and flip this view applies to ``row`` (an image of width x height)."""
        if row < 0:
            raise BadInput(f"row {row!r}: must be >= 0")
        rng = np.random.default_rng([self.seed, row, self.view])  # SeedSequence: well mixed, no collisions
        box = crop_box(width, height, self.scale, self.ratio, rng)
        return box, bool(rng.random() < 0.5)

    def crop(self, img: Image.Image, row: int) -> Image.Image:
        """torchvision's ``resized_crop`` then ``hflip`` on a PIL image, in the same PIL calls (no torch)."""
        (top, left, h, w), flip = self.params(img.width, img.height, row)
        out = img.crop((left, top, left + w, top + h))
        size = (self.spec.crop, self.spec.crop)
        if out.size != size:
            out = out.resize(size, INTERPOLATIONS[self.spec.interpolation])
        return out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out

    def __call__(self, img: Image.Image, row: int):  # -> np.ndarray (uint8) | torch.Tensor
        out = self.crop(img, row)
        if self.uint8:
            return np.array(out, dtype=np.uint8, copy=True)
        from torchvision.transforms import functional as F

        return F.normalize(F.to_tensor(out), list(self.spec.mean), list(self.spec.std))


def view_transform(spec: TransformSpec, seed: int, view: int, *, scale: tuple[float, float] = DEFAULT_SCALE,
                   ratio: tuple[float, float] = DEFAULT_RATIO, uint8: bool = False) -> ViewTransform:
    """The augmentation of view ``view``; call the result as ``t(image, row)``."""
    for name, value in (("seed", seed), ("view", view)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadInput(f"{name} {value!r}: must be an integer >= 0")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise BadInput(f"scale {scale!r}: expected 0 < min <= max <= 1")
    if not 0 < ratio[0] <= ratio[1]:
        raise BadInput(f"ratio {ratio!r}: expected 0 < min <= max")
    return ViewTransform(spec, seed, view, tuple(scale), tuple(ratio), uint8)
