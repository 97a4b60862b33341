"""One pass over a loader: a training epoch, or predictions with loss and accuracy.

Unreadable images arrive as error rows from ``extract.rows.collate``; they are
logged once each and left out, as extract leaves them out of a store's usable rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from featcache.common.errors import BadInput
from featcache.finetune.model import set_train_mode

log = logging.getLogger(__name__)
KEEP_WRONG = 32  # misclassified images kept for TensorBoard


@dataclass
class Outputs:
    """A prediction pass: logits and labels in row order, its mean loss and accuracy."""

    rows: np.ndarray
    logits: np.ndarray  # (n, classes) float32
    labels: np.ndarray
    loss: float
    accuracy: float
    seconds: float
    wrong_images: list[torch.Tensor] = field(default_factory=list)  # normalized, as fed to the model
    wrong_true: list[int] = field(default_factory=list)
    wrong_pred: list[int] = field(default_factory=list)


def _note_errors(errors: dict[int, str], seen: set[int], paths: list[str]) -> None:
    for row, msg in errors.items():
        if row not in seen:
            seen.add(row)
            log.warning("skipped %s: %s", paths[row], msg)


def train_epoch(model: nn.Module, loader: DataLoader, labels_of: Callable[[torch.Tensor], torch.Tensor],
                optimizer: torch.optim.Optimizer, device: torch.device, *, bad: set[int],
                paths: list[str], train_bn: bool = False) -> tuple[float, float]:
    """One epoch of optimizer steps; returns (mean loss, accuracy) over the images seen."""
    set_train_mode(model, train_bn)
    loss_fn = nn.CrossEntropyLoss()
    total, correct, loss_sum = 0, 0, 0.0
    for rows, images, errors in loader:
        _note_errors(errors, bad, paths)
        if images is None:
            continue
        x, y = images.to(device), labels_of(rows).to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise BadInput("no train image could be read; see the warnings above")
    return loss_sum / total, correct / total


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, labels_of: Callable[[torch.Tensor], torch.Tensor],
            device: torch.device, *, bad: set[int], paths: list[str]) -> Outputs:
    """Eval-mode logits for every readable row, with mean cross-entropy and accuracy."""
    model.eval()
    start = time.perf_counter()
    rows_all, logits_all, labels_all = [], [], []
    out = Outputs(np.empty(0, np.int64), np.empty((0, 0), np.float32), np.empty(0, np.int64), 0.0, 0.0, 0.0)
    for rows, images, errors in loader:
        _note_errors(errors, bad, paths)
        if images is None:
            continue
        y = labels_of(rows)
        logits = model(images.to(device)).float().cpu()
        pred = logits.argmax(1)
        for i in torch.nonzero(pred != y).flatten().tolist():
            if len(out.wrong_images) < KEEP_WRONG:
                out.wrong_images.append(images[i])
                out.wrong_true.append(int(y[i]))
                out.wrong_pred.append(int(pred[i]))
        rows_all.append(np.asarray(rows))
        logits_all.append(logits.numpy())
        labels_all.append(y.numpy())
    if not rows_all:
        raise BadInput("no image of the split could be read; see the warnings above")
    out.rows, out.logits, out.labels = (np.concatenate(a) for a in (rows_all, logits_all, labels_all))
    logits_t, labels_t = torch.from_numpy(out.logits), torch.from_numpy(out.labels)
    out.loss = float(nn.functional.cross_entropy(logits_t, labels_t))
    out.accuracy = float((logits_t.argmax(1) == labels_t).float().mean())
    out.seconds = time.perf_counter() - start
    return out
