"""What ``--weights`` names: a torchvision enum name, ``DEFAULT``, ``none``, or a file (torch-free)."""

from __future__ import annotations

from pathlib import Path

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def split_weights(value: str | None) -> tuple[str, str | None]:
    """(weights, weights_file): a path-like value is a file, anything else a name (None: DEFAULT)."""
    if value is None:
        return "DEFAULT", None
    if value.endswith(WEIGHT_FILE_SUFFIXES) or "/" in value or Path(value).is_file():
        return "file", value
    return value, None
