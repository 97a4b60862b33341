"""The torch side of preprocessing: the float transform fine-tuning trains on, and batch normalization.

Extraction decodes to uint8 (H, W, 3) crops (:class:`extract.transforms.CenterCrop`, no torch)
and normalizes whole batches where the forward runs (:func:`normalize_batch`): per-image
float conversion was a fifth of the decode cost, uint8 batches are a quarter of the bytes to
hand over (or to copy to a GPU), and the batched result is already channels_last. The numbers
are bit-identical to ``ToTensor() + Normalize()`` (the same element-wise ops in the same order).
OpenVINO does the same normalization inside its graph (``extract.openvino_runtime``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision import transforms as T

from extract.transforms import TransformSpec

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


def normalize_batch(u: torch.Tensor, spec: TransformSpec) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalized float (B, 3, H, W) in channels_last memory, on u's device."""
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=u.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=u.device).view(1, 3, 1, 1)
    return u.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
