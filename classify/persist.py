"""Save and load trained models: a skops file (arrays + JSON, no code), its sha256 sidecar, the feature spec.

A model is only usable on features made exactly like its training features, so the file
carries the store's spec (backbone, weights, transform, ...), feature key, cache key and
class names. Files are written to a temporary name and renamed, so a crash never leaves a
half model at the final path.

Security: a model file is something users share, and unpickling runs whatever code the file
names; the sidecar checks integrity, not intent (whoever writes the model can write its
sidecar). So models are written with skops.io: numpy arrays and a JSON schema of the objects,
rebuilt only from the types listed in ``TRUSTED`` (scikit-learn's own, audited by skops, plus
this project's estimators, whose state is plain arrays). ``load_model`` lists every type a file
names *before* constructing anything and refuses one outside that list. Older ``.joblib``
pickles load only with ``trust_pickle=True`` (``--trust-pickle``).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import sklearn

from featcache.common.errors import BadInput
from featcache.common.files import atomic_write, replace_atomically, sha256_file  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256"
MODEL_SUFFIX = ".skops"
FORMAT_VERSION = 2  # 1: a joblib pickle; 2: skops
ZIP_MAGIC = b"PK\x03\x04"  # a skops file is a zip archive
# Types a model file may name beyond skops's own safe defaults (scikit-learn's estimators, numpy,
# builtins). Each is a plain-data object whose state skops stores as arrays and JSON; the test
# test_every_zoo_model_round_trips_through_skops fails when a new model needs another.
TRUSTED = (
    "classify.persist.SavedModel",
    "classify.persist.SavedVote",
    "classify.chunkmap.ChunkMap",
    "classify.kernel_svm.RBFSVC",
    "classify.knn.CosineKNN",
    "classify.knn.SweptKNN",
    "classify.linear_probe.LinearProbe",
    "classify.models.GroupedCalibratedClassifierCV",
    "classify.preprocess.CappedPCA",
    "classify.splits.RepeatedSmallDataKFold",
    "classify.splits.SmallDataKFold",
    "classify.splits.StratifiedHoldout",
    "classify.sweep.Sweep",
    "classify.torch_heads.TorchHead",  # its torch module is stored as a state dict of arrays
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)


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


@dataclass
class SavedVote:
    """A soft vote as one model file: its members' models inside it (not references to their
    files), so the one file is all ``predict`` needs, is checked by one sidecar and one type list,
    and cannot change behind its checksum when a member's file is refitted or edited."""

    members: list[SavedModel]  # each with its own feature, spec and TTA; all on the same classes
    labels: list[str]  # each member's leaderboard label, e.g. "logreg on efficientnet_lite0 _fc:in/none"
    class_names: list[str]
    name: str = "soft-vote"  # the row's model, e.g. "soft-vote of 3"
    feature: str = ""  # what the vote combines: "tied group", "best of each backbone"
    versions: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def vote_of(members: list[SavedModel], labels: list[str], name: str = "soft-vote", feature: str = "") -> SavedVote:
    """A :class:`SavedVote`, or BadInput when its members could not be averaged class by class."""
    if len(members) < 2 or len(members) != len(labels):
        raise BadInput(f"a soft vote needs 2 or more members with one label each, got {len(members)} and {len(labels)}")
    first = members[0]
    for m, label in zip(members[1:], labels[1:]):
        if m.class_names != first.class_names or list(m.model.classes_) != list(first.model.classes_):
            raise BadInput(f"soft-vote member {label} was trained on other classes than {labels[0]}")
    return SavedVote(members=list(members), labels=list(labels), class_names=list(first.class_names), name=name,
                     feature=feature)


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def save_model(saved: SavedModel | SavedVote, path: str | os.PathLike) -> Path:
    """Write ``path`` (skops) and ``path.sha256`` (``sha256sum -c`` format), each atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise BadInput(f"{path}: directory {path.parent} does not exist")
    if not saved.versions:
        saved.versions = _versions()
    saved.format_version = FORMAT_VERSION
    data = _dumps(saved)
    digest = replace_atomically(path, lambda f: f.write(data), size=len(data))
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
        raise BadInput(f"{path}: no checksum sidecar {side.name}; refusing to unpickle an unverified model") from None
    if not text or len(text[0]) != 64 or any(c not in "0123456789abcdef" for c in text[0].lower()):
        raise BadInput(f"{side}: not a sha256 sidecar (expected '<64 hex digits>  {path.name}')")
    return text[0].lower()


def load_model(path: str | os.PathLike, trust_pickle: bool = False) -> SavedModel:
    """One model saved by classify (:func:`load_saved`); a soft vote is refused here, as the
    callers (ensembles, warm starts) need one estimator."""
    saved = load_saved(path, trust_pickle)
    if not isinstance(saved, SavedModel):
        raise BadInput(f"{path}: a soft vote of {len(saved.members)} models, not one model; `predict` runs it")
    return saved


def load_saved(path: str | os.PathLike, trust_pickle: bool = False) -> SavedModel | SavedVote:
    """Verify ``path`` against its sidecar, check every type it names, then build it: one model
    or a soft vote of several.

    A pickle (an older ``.joblib`` model, or any file that is not a skops archive) is refused
    unless ``trust_pickle``: unpickling runs whatever code the file names."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such model file")
    expected = sidecar_digest(path)
    actual = sha256_file(path)
    if not hmac.compare_digest(actual, expected):
        raise BadInput(f"{path}: sha256 {actual[:12]}... does not match its sidecar ({expected[:12]}...); "
                         "the file was changed or corrupted, refusing to load it")
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head == ZIP_MAGIC:
        saved = _load_skops(path)
    elif not (trust_pickle or os.environ.get("FEATCACHE_TRUST_PICKLE") == "1"):
        raise BadInput(f"{path}: not a skops model but a pickle (the .joblib format of older versions); "
                         "loading it would run any code it names, and its sidecar proves integrity, not intent: "
                         "pass --trust-pickle only if you trust whoever wrote it, or retrain to get a .skops model")
    else:
        log.warning("%s: unpickling a model file (--trust-pickle)", path)
        saved = joblib.load(path)
    if isinstance(saved, SavedVote):
        if (len(saved.members) < 2 or len(saved.labels) != len(saved.members)
                or not all(isinstance(m, SavedModel) for m in saved.members)):
            raise BadInput(f"{path}: a soft vote whose members are not all models saved by classify")
    elif not isinstance(saved, SavedModel):
        raise BadInput(f"{path}: holds a {type(saved).__name__}, not a model saved by classify")
    if saved.versions.get("sklearn") not in (None, sklearn.__version__):
        log.warning("%s was saved with scikit-learn %s; this is %s, predictions may differ",
                    path, saved.versions["sklearn"], sklearn.__version__)
    return saved


def untrusted_types(path: str | os.PathLike) -> list[str]:
    """The types a skops file names that neither skops's defaults nor ``TRUSTED`` cover (nothing is built)."""
    try:
        named = _sio().get_untrusted_types(file=path)
    except Exception as e:  # noqa: BLE001 - a damaged or hand-made archive: zip, JSON or schema errors
        raise BadInput(f"{path}: not a readable skops model ({type(e).__name__}: {e})") from None
    return sorted(set(named) - set(TRUSTED))


class _NoTorchThroughSklearn:
    """Import hook that refuses scikit-learn's torch array-API shim while skops.io is imported.

    skops.io lists scikit-learn's estimators on import (``all_estimators``), which walks every sklearn
    package, and one of them imports torch: 2 s of a classify command that never uses torch. The walk
    skips packages that fail to import, and nothing is left in ``sys.modules`` for a later, real use.
    """

    PACKAGE = "sklearn.externals.array_api_compat.torch"

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == self.PACKAGE or name.startswith(self.PACKAGE + "."):
            raise ImportError(f"{name} (not needed to list estimators)")
        return None


def _sio() -> Any:
    """skops.io, imported on first use (its import costs ~0.5 s beyond scikit-learn's)."""
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    guard = None if "torch" in sys.modules else _NoTorchThroughSklearn()
    if guard is not None:
        sys.meta_path.insert(0, guard)
    try:
        import skops.io as sio
    finally:
        if guard is not None:
            sys.meta_path.remove(guard)
    return sio


def _dumps(obj: Any) -> bytes:
    """``skops.io.dumps(obj)`` without the indented schema: skops writes ``json.dumps(state,
    indent=2)``, which runs json's pure-Python encoder (0.2 of a 200-tree forest's 0.34 s); the
    compact schema is the same JSON to its loader. Falls back to skops's own when its internals move."""
    sio = _sio()
    try:
        from skops.io._utils import SaveContext, get_state
    except ImportError:
        return sio.dumps(obj)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = SaveContext(zip_file=archive)
        state = get_state(obj, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = sys.modules["skops"].__version__
        archive.writestr("schema.json", json.dumps(state))
    return buffer.getvalue()


def _load_skops(path: Path) -> Any:
    refused = untrusted_types(path)
    if refused:
        raise BadInput(f"{path}: names types this tool does not trust ({', '.join(refused[:4])}"
                         f"{', ...' if len(refused) > 4 else ''}); refusing to load it, nothing was built")
    try:
        return _sio().load(path, trusted=list(TRUSTED))
    except (ImportError, AttributeError, TypeError, KeyError, ValueError) as e:
        raise BadInput(f"{path}: cannot rebuild the model ({type(e).__name__}: {e})") from None


def _versions() -> dict:
    import numpy

    _sio()  # imports skops
    versions = {"sklearn": sklearn.__version__, "numpy": numpy.__version__, "skops": sys.modules["skops"].__version__}
    if "torch" in sys.modules:  # a torch head's weights
        versions["torch"] = sys.modules["torch"].__version__
    return versions
