"""Save and load trained models: a joblib pickle, its sha256 sidecar, and the feature spec.

A model is only usable on features made exactly like its training features, so the file
carries the store's spec (backbone, weights, transform, ...), feature key, cache key and
class names. Files are written to a temporary name and renamed, so a crash never leaves a
half model at the final path.

Security: a joblib file is a pickle, and unpickling runs code. ``load_model`` checks the
sidecar checksum before unpickling, which catches corruption and accidental edits, not an
attacker who can rewrite both files. Never load models from untrusted sources.
"""

from __future__ import annotations

import hmac
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import sklearn

from store.files import atomic_write, replace_atomically, sha256_file  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256"
FORMAT_VERSION = 1


@dataclass
class SavedModel:
    """A fitted estimator and what it needs to be used on new images."""

    model: Any  # fitted sklearn estimator; predicts indices into class_names
    name: str  # registry name, e.g. "logreg"
    feature: str  # store feature key, e.g. "fc:in/none"
    class_names: list[str]
    spec: dict  # the store's spec: how to make the features again
    cache_key: str
    store: str  # the store it was trained on
    preprocess: list[str] = field(default_factory=list)
    views: int = 0  # augmented views per train image it was trained on (0: center crops only)
    tta: str = "none"  # "flip": predict the average of the center and mirrored crops
    fitted_on: str = "train"  # "train+val" after --final-fit refitted it (val then says nothing about it)
    versions: dict = field(default_factory=dict)  # library versions at save time
    format_version: int = FORMAT_VERSION


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def save_model(saved: SavedModel, path: str | os.PathLike) -> Path:
    """Write ``path`` and ``path.sha256`` (``sha256sum -c`` format), each atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    if not saved.versions:
        saved.versions = _versions()
    digest = replace_atomically(path, lambda f: joblib.dump(saved, f))
    # Model first, sidecar second: a crash in between leaves a mismatch, which load refuses.
    atomic_write(sidecar_path(path), f"{digest}  {path.name}\n")
    log.debug("saved %s (sha256 %s)", path, digest[:12])
    return path


def sidecar_digest(path: str | os.PathLike) -> str:
    """The sha256 that ``path``'s sidecar records for it (ValueError when there is none)."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="ascii", errors="replace").split()
    except FileNotFoundError:
        raise ValueError(f"{path}: no checksum sidecar {side.name}; refusing to unpickle an unverified model") from None
    if not text or len(text[0]) != 64 or any(c not in "0123456789abcdef" for c in text[0].lower()):
        raise ValueError(f"{side}: not a sha256 sidecar (expected '<64 hex digits>  {path.name}')")
    return text[0].lower()


def load_model(path: str | os.PathLike) -> SavedModel:
    """Verify ``path`` against its sidecar, then unpickle it. Never load untrusted files."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    expected = sidecar_digest(path)
    actual = sha256_file(path)
    if not hmac.compare_digest(actual, expected):
        raise ValueError(f"{path}: sha256 {actual[:12]}... does not match its sidecar ({expected[:12]}...); "
                         "the file was changed or corrupted, refusing to load it")
    saved = joblib.load(path)
    if not isinstance(saved, SavedModel):
        raise ValueError(f"{path}: holds a {type(saved).__name__}, not a model saved by classify")
    if saved.versions.get("sklearn") not in (None, sklearn.__version__):
        log.warning("%s was saved with scikit-learn %s; this is %s, predictions may differ",
                    path, saved.versions["sklearn"], sklearn.__version__)
    return saved


def _versions() -> dict:
    import numpy

    versions = {"sklearn": sklearn.__version__, "numpy": numpy.__version__, "joblib": joblib.__version__}
    if "torch" in sys.modules:  # a torch head pickles an nn.Module
        versions["torch"] = sys.modules["torch"].__version__
    return versions
