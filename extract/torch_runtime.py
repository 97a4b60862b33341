"""The hooked backbone run by PyTorch: any device, autocast precisions, the reference in tests.

uint8 crops are copied to the device and normalized there (a quarter of the bytes of a
float batch, channels_last for free), then the forward runs under ``inference_mode`` and
autocast until the last hooked layer has fired.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from extract.hooks import FeatureHooks
from extract.preprocess import normalize_batch
from extract.transforms import TransformSpec


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class TorchRuntime:
    """uint8 (B, H, W, 3) crops -> {feature key: (B, D) float32}; hooks stay on until :meth:`close`."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, taps: Sequence, pools: Sequence[str], transform: TransformSpec,
                 device: str, precision: str, batch_size: int, channels_last: bool = True):
        self.device = torch.device(device)
        self.layout = torch.channels_last if channels_last and self.device.type != "mps" else torch.contiguous_format
        model = model.to(self.device)
        if self.layout is torch.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.transform, self.precision, self.batch_size = transform, precision, batch_size
        self.hooks = FeatureHooks(model, taps, pools).__enter__()

    def __call__(self, u) -> dict[str, np.ndarray]:  # noqa: ANN001 - np.ndarray or torch.Tensor
        u = torch.from_numpy(np.ascontiguousarray(u)) if isinstance(u, np.ndarray) else u
        parts: list[dict[str, torch.Tensor]] = []
        with torch.inference_mode():
            for chunk in u.split(self.batch_size):
                x = normalize_batch(chunk.to(self.device, non_blocking=True), self.transform)
                with autocast(self.device, self.precision):
                    out = self.hooks(x.contiguous(memory_format=self.layout))
                parts.append({k: v.float().cpu() for k, v in out.items()})
        return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}

    def close(self) -> None:
        self.hooks.remove()

    def __enter__(self) -> TorchRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
