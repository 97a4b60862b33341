"""Each model family's standard frozen-feature layers, as named presets ``--layers`` accepts.

A CNN's standard feature is its pooled last stage, the input of its classifier
(``fc:in``, ``head.fc:in``); a token model's is not one module's output, so the presets
below are :class:`~extract.hooks.FeatureHead` modules under ``preset.`` that compute
what each family's own evaluation code computes:

- ViT / DeiT / DINOv2 / EVA (timm ``VisionTransformer``-like, torchvision ``VisionTransformer``):
  ``cls`` (the class token after the final norm), ``patch`` (the mean of the patch tokens
  after it, register and class tokens excluded), ``cls_patch`` (both, concatenated) and
  ``dinov2_lin4``: DINOv2's linear evaluation input (``dinov2/eval/linear.py``,
  ``create_linear_input`` with ``use_n_blocks=4, use_avgpool=True``): the normed class
  tokens of the last 4 blocks and the mean of the last block's normed patch tokens.
- CLIP image towers (timm ``*_clip_*``): ``pre_proj`` (the pooled embedding before the
  projection) and ``post_proj`` (the image embedding CLIP's zero-shot and probe code uses, the default).
- SigLIP (timm ``*_siglip_*``): ``attn_pool`` (its attention-pool output, the image embedding).
- ConvNeXt, ResNet and every CNN: ``pooled`` (the classifier's input: the pooled, normed last stage).

The heads have no parameters, so they change no state dict and no weights' hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from extract.hooks import FeatureHead

LAST_BLOCKS = 4  # DINOv2's linear eval: use_n_blocks=4

# What `pipeline.py backbones` suggests: the frozen-feature backbones people choose, fetched on first use.
SUGGESTED = {
    "timm:vit_small_patch14_dinov2.lvd142m": "DINOv2 ViT-S/14 (presets cls, patch, cls_patch, dinov2_lin4)",
    "timm:vit_base_patch14_dinov2.lvd142m": "DINOv2 ViT-B/14",
    "timm:vit_small_patch14_reg4_dinov2.lvd142m": "DINOv2 ViT-S/14 with 4 registers",
    "timm:vit_base_patch16_clip_224.openai": "CLIP ViT-B/16 image tower, OpenAI (pre_proj, post_proj)",
    "timm:vit_base_patch16_clip_224.laion2b": "OpenCLIP ViT-B/16 image tower, LAION-2B",
    "open_clip:ViT-B-32/laion2b_s34b_b79k": "OpenCLIP ViT-B/32, LAION-2B, through open_clip (pre_proj, post_proj)",
    "timm:vit_base_patch16_siglip_224.webli": "SigLIP ViT-B/16 (attn_pool)",
    "timm:eva02_base_patch14_224.mim_in22k": "EVA-02 ViT-B/14, MIM on ImageNet-22k",
    "timm:convnext_tiny.fb_in22k": "ConvNeXt-T, ImageNet-22k (pooled)",
    "convnext_tiny": "torchvision ConvNeXt-T, ImageNet-1k",
    "resnet50": "torchvision ResNet-50, ImageNet-1k V2",
}


def _tokens_heads(norm: str, blocks: Sequence[str], prefix: int, has_cls: bool) -> nn.ModuleDict:
    """Heads for a token model whose final ``norm`` module outputs the normed (B, T, D) sequence,
    ``prefix`` tokens (class, registers) before the patches; no class-token heads without one (SigLIP)."""
    heads = {"patch": FeatureHead((norm,), (), lambda a, m: a[0][:, prefix:].mean(1),
                                  f"mean of the patch tokens after the final norm ({prefix} prefix tokens excluded)")}
    if not has_cls:
        return nn.ModuleDict(heads)
    heads["cls"] = FeatureHead((norm,), (), lambda a, m: a[0][:, 0], "class token after the final norm")
    heads["cls_patch"] = FeatureHead((norm,), (), lambda a, m: torch.cat([a[0][:, 0], a[0][:, prefix:].mean(1)], 1),
                                     "class token and patch-token mean, concatenated")
    if len(blocks) >= LAST_BLOCKS:
        last = tuple(blocks[-LAST_BLOCKS:])

        def lin4(acts: list[Tensor], mods: list[Callable[[Tensor], Tensor]]) -> Tensor:
            normed = [mods[0](x) for x in acts]
            return torch.cat([x[:, 0] for x in normed] + [normed[-1][:, prefix:].mean(1)], dim=1)

        heads["dinov2_lin4"] = FeatureHead(last, (norm,), lin4,
                                           "DINOv2 linear eval: class tokens of the last 4 blocks + patch mean")
    return nn.ModuleDict(heads)


def _attach(model: nn.Module, heads: nn.ModuleDict) -> dict[str, str]:
    model.add_module("preset", heads)
    return {name: f"preset.{name}" for name in heads}


def timm_presets(model: nn.Module, name: str) -> tuple[str, dict[str, str]]:
    """(default layer, preset -> layer) for a timm model; token models get their heads attached."""
    modules = dict(model.named_modules())
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifier = cfg.get("classifier")
    pooled = f"{classifier}:in" if isinstance(classifier, str) and classifier in modules else None
    presets: dict[str, str] = {}
    if pooled:
        presets["pooled"] = pooled
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and "norm" in modules and hasattr(model, "num_prefix_tokens"):
        names = [f"blocks.{i}" for i in range(len(blocks))]
        has_cls = getattr(model, "cls_token", None) is not None
        presets |= _attach(model, _tokens_heads("norm", names, int(model.num_prefix_tokens), has_cls))
    arch = name.split(".")[0]
    head = modules.get(classifier) if isinstance(classifier, str) else None
    if "clip" in arch and isinstance(head, nn.Linear) and "ft" not in cfg.get("tag", ""):
        presets["pre_proj"], presets["post_proj"] = f"{classifier}:in", classifier  # timm keeps CLIP's proj as head
        return classifier, presets
    if "attn_pool" in modules and modules["attn_pool"] is not None and not isinstance(modules["attn_pool"], nn.Identity):
        presets["attn_pool"] = "attn_pool"
        return "attn_pool", presets
    if pooled:
        return pooled, presets
    return (presets and next(iter(presets.values()))) or "", presets


class OpenClipImage(nn.Module):
    """An open_clip image tower (``model.visual``) whose two embeddings are named modules.

    The forward is open_clip's own ``VisionTransformer.forward`` (``_embeds``, the
    transformer, ``_pool``, then ``@ proj``) with the pooled vector passed through
    ``pre_proj`` and the projected one through ``post_proj`` (identities, for the hooks);
    other towers (ModifiedResNet, timm trunks) run as they are, their output ``post_proj``.
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual, self.pre_proj, self.post_proj = visual, nn.Identity(), nn.Identity()
        self._vit = all(hasattr(visual, a) for a in ("_embeds", "transformer", "_pool", "proj"))

    def forward(self, x: Tensor) -> Tensor:
        v = self.visual
        if not self._vit:
            return self.post_proj(v(x))
        pooled, _ = v._pool(v.transformer(v._embeds(x)))
        pooled = self.pre_proj(pooled)
        return self.post_proj(pooled @ v.proj if v.proj is not None else pooled)

    def presets(self) -> dict[str, str]:
        return {"post_proj": "post_proj", **({"pre_proj": "pre_proj"} if self._vit else {})}


def torchvision_presets(model: nn.Module, default: str) -> dict[str, str]:
    """torchvision's ViTs get the token heads (``encoder.ln`` is their final norm); every model ``pooled``."""
    presets = {"pooled": default}
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if isinstance(layers, nn.Sequential) and hasattr(encoder, "ln") and hasattr(model, "class_token"):
        names = [f"encoder.layers.{n}" for n, _ in layers.named_children()]
        presets |= _attach(model, _tokens_heads("encoder.ln", names, 1, True))
    return presets
