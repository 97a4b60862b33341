"""Square thumbnails for the montages; a file that is gone or unreadable becomes a labelled grey tile.

A path may name a member of a tar shard (``SHARD.tar/train/ants/1.jpg``); it is read by offset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from featcache.store.tar_members import MemberMissing, open_source, split_member_path

TILE = 160
GREY = 200


@dataclass(frozen=True)
class Tile:
    pixels: np.ndarray  # (TILE, TILE, 3) uint8
    problem: str | None = None  # "missing" | "unreadable" when pixels are a grey placeholder


def grey_tile(problem: str, size: int = TILE) -> Tile:
    return Tile(np.full((size, size, 3), GREY, dtype=np.uint8), problem)


def load_tile(path: Path | None, size: int = TILE) -> Tile:
    """Center-cropped square thumbnail, EXIF-rotated; never raises for a bad file."""
    if path is None or not (path.is_file() or split_member_path(path)):
        return grey_tile("missing", size)
    try:
        with open_source(path) as f, Image.open(f) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            im = ImageOps.exif_transpose(im).convert("RGB")
            thumb = ImageOps.fit(im, (size, size), Image.Resampling.BICUBIC)
    except MemberMissing:
        return grey_tile("missing", size)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return grey_tile("unreadable", size)
    return Tile(np.asarray(thumb, dtype=np.uint8))
