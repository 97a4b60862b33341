"""Checkpoints: ``last.pt`` to resume a run, ``best.pt`` to use its best epoch.

Both hold tensors and plain Python values only, so they load with
``torch.load(weights_only=True)`` (no pickled code), and both are written to a temporary
file beside the target, fsynced and renamed (``os.replace``): a kill mid-write leaves the
previous checkpoint whole.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
from torch import nn

from extract.backbones import create_backbone, load_tensors
from featcache.common.errors import BadInput
from featcache.common.files import atomic_write
from featcache.finetune.model import HeadSite, replace_head

LAST = "last.pt"
BEST = "best.pt"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buf)
    return atomic_write(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Tensors and plain values only; a file that is not our checkpoint is a one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such checkpoint")
    ckpt = load_tensors(path, str(path), "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != FORMAT_VERSION:
        raise BadInput(f"{path}: not a finetune checkpoint (format_version "
                         f"{ckpt.get('format_version') if isinstance(ckpt, dict) else None!r}, "
                         f"expected {FORMAT_VERSION})")
    return ckpt


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_same_job(saved_json: str, now: dict, path: Path) -> None:
    """A resume must continue the job the checkpoint belongs to; name the first option that differs."""
    saved = json.loads(saved_json)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise BadInput(f"--resume: {path} was made with {key}={saved.get(key)!r}, this run has "
                             f"{now.get(key)!r}; rerun with the same options or another --out")


def load_finetuned(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """A ``best.pt`` as a ready eval-mode model and its metadata (class names, transform, ...)."""
    ckpt = load_checkpoint(path)
    meta = json.loads(ckpt["meta"])
    backbone = create_backbone(meta["backbone"], weights="none")  # architecture only; the weights follow
    site = HeadSite(meta["head"], int(meta["in_features"]))
    replace_head(backbone.model, site, len(meta["class_names"]))
    backbone.model.load_state_dict(ckpt["model"])
    return backbone.model.eval(), meta
