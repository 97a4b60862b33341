"""Small image folders copied from the bundled sample, for tests that run a real backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
BROKEN_JPEG = b"\xff\xd8\xff\xe0 not really a jpeg"


def copy_sample(root: Path, per_class: int, broken: str | None = None) -> Path:
    """The first ``per_class`` photos of each class in train/ and val/; ``broken``: a bad file's
    relative path to add (so the error table is not empty)."""
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((SAMPLE / split / cls).glob("*.jpg"))[:per_class]:
                shutil.copy(f, root / split / cls / f.name)
    if broken:
        (root / broken).write_bytes(BROKEN_JPEG)
    return root
