"""What the report needs from the feature stores a run names: provenance and image paths.

A store that moved or vanished since the run is not an error: the report still renders
from results.json and says which store it could not read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.store import StoreError, StoreInfo, read_index, read_info


@dataclass(frozen=True)
class StoreFacts:
    """One store as the report shows it; ``info`` is None when the store cannot be read."""

    named: str  # the path results.json names
    path: Path | None  # where it was found
    info: StoreInfo | None
    source_root: Path | None  # images' paths are relative to this
    problem: str | None = None  # why info is None


def find_store(named: str, run_dir: Path) -> Path | None:
    """The path as saved (absolute, or relative to where the run started), else RUN_DIR/features/NAME."""
    if not named:
        return None
    for candidate in (Path(named), run_dir / named, run_dir / "features" / Path(named).name):
        if candidate.is_file():
            return candidate
    return None


def load_store(named: str, run_dir: Path) -> StoreFacts:
    path = find_store(named, run_dir)
    if path is None:
        return StoreFacts(named, None, None, None, problem="store not found")
    try:
        info = read_info(path)
    except (StoreError, OSError) as e:
        return StoreFacts(named, path, None, None, problem=str(e).splitlines()[0])
    return StoreFacts(named, path, info, _resolve_root(info.source_root, run_dir))


def _resolve_root(root: object, run_dir: Path) -> Path | None:
    """``source_root`` as written (often relative to where extraction ran); tried from here, then the run's parent."""
    if root is None:
        return None
    root = Path(str(root))
    if root.is_absolute() or root.is_dir():
        return root
    for base in (run_dir, *run_dir.resolve().parents):
        if (base / root).is_dir():
            return base / root
    return root


def load_stores(named: list[str], run_dir: Path) -> dict[str, StoreFacts]:
    return {n: load_store(n, run_dir) for n in dict.fromkeys(named) if n}


def sample_paths(facts: StoreFacts, per_class: int = 4, max_classes: int = 8) -> list[tuple[str, str]]:
    """(class name, image path) for a few readable images per class, spread evenly over each class."""
    if facts.path is None or facts.info is None:
        return []
    index = read_index(facts.path, allow_partial=True)  # the readable rows: written and decoded
    paths, labels = index["paths"], index["y"]
    names = facts.info.class_names or ["unlabeled"]
    out: list[tuple[str, str]] = []
    for c, name in enumerate(names[:max_classes]):
        rows = np.flatnonzero(labels == (c if facts.info.class_names else -1))
        if len(rows):
            pick = rows[np.unique(np.linspace(0, len(rows) - 1, min(per_class, len(rows))).round().astype(int))]
            out += [(name, str(paths[r])) for r in pick]
    return out


def image_file(root: Path | None, rel: object) -> Path | None:
    """The file behind a misclassified row's path (None when the run saved row numbers, not paths)."""
    if not isinstance(rel, str) or not rel:
        return None
    if os.path.isabs(rel):  # fine-tuning rows carry absolute paths
        return Path(rel)
    return None if root is None else Path(os.path.join(root, rel))
