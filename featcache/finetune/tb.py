"""TensorBoard for fine-tuning: loss, accuracy and learning rates per epoch, and the best epoch's mistakes.

Steps are global epochs (stage 1 then stage 2), so both stages draw one curve; a resumed
run purges the events after its checkpoint, so the curves never fold back on themselves.
"""

from __future__ import annotations

import os

import torch

from extract.backbones import TransformSpec

MAX_IMAGES = 32


def open_writer(log_dir: str | os.PathLike | None, purge_step: int | None = None):  # -> SummaryWriter | None
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is only needed when asked for

    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def log_epoch(writer, record: dict) -> None:
    """``record``: epoch, train_loss/accuracy (absent for a warm-start baseline), val_loss/accuracy, lr."""
    if writer is None:
        return
    step = record["epoch"]
    for phase in ("train", "val"):
        if record.get(f"{phase}_loss") is not None:
            writer.add_scalar(f"loss/{phase}", record[f"{phase}_loss"], step)
            writer.add_scalar(f"accuracy/{phase}", record[f"{phase}_accuracy"], step)
    for group, lr in (record.get("lr") or {}).items():
        writer.add_scalar(f"lr/{group}", lr, step)
    writer.flush()


def denormalize(images: torch.Tensor, spec: TransformSpec) -> torch.Tensor:
    """Undo the backbone's normalization: (B, 3, H, W) back to 0..1 pixels."""
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def log_misclassified(writer, step: int, images: torch.Tensor, true: list[int], pred: list[int],
                      spec: TransformSpec, class_names: list[str]) -> None:
    """One grid of the val images the model got wrong at ``step`` (the best epoch so far), captions as text."""
    if writer is None or len(images) == 0:
        return
    from torchvision.utils import make_grid

    grid = make_grid(denormalize(images[:MAX_IMAGES], spec), nrow=8, padding=2)
    writer.add_image("val/misclassified_at_best", grid, step)
    lines = [f"{i}: true {class_names[t]}, predicted {class_names[p]}"
             for i, (t, p) in enumerate(zip(true[:MAX_IMAGES], pred[:MAX_IMAGES]))]
    writer.add_text("val/misclassified_at_best", "\n".join(f"    {line}" for line in lines), step)
    writer.flush()
