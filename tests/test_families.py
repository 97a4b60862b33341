"""Each family's preset features equal what the family's own code computes (random weights: the
recipes are under test, not the weights)."""

from __future__ import annotations

import pytest
import torch

from extract.build import prepare, resolve_taps
from extract.hooks import FeatureHooks

timm = pytest.importorskip("timm")


def features(bb, layers: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    taps = resolve_taps(bb, layers)
    with FeatureHooks(bb.model, taps, ["avg"]) as hooks, torch.inference_mode():
        out = hooks(x)
    return {name: out[f"{tap.name}/none"] for name, tap in zip(layers, taps)}


def create(name: str):
    from extract.backbones import create_backbone

    return create_backbone(name, "none")


def dinov2_linear_input(model, x: torch.Tensor, n: int = 4) -> torch.Tensor:
    """dinov2/eval/linear.py ``create_linear_input(x_tokens_list, use_n_blocks=4, use_avgpool=True)`` on
    ``get_intermediate_layers(x, n, return_class_token=True)`` (normed), through timm's port of it."""
    inter = model.forward_intermediates(x, indices=n, norm=True, return_prefix_tokens=True, output_fmt="NLC",
                                        intermediates_only=True)
    x_tokens_list = [(patch, prefix[:, 0]) for patch, prefix in inter]  # (patch tokens, class token)
    output = torch.cat([class_token for _, class_token in x_tokens_list[-n:]], dim=-1)
    output = torch.cat((output, torch.mean(x_tokens_list[-1][0], dim=1)), dim=-1)
    return output.reshape(output.shape[0], -1).float()


def test_vit_presets_match_timm_and_dinov2s_linear_eval() -> None:
    bb = create("timm:test_vit.r160_in1k")
    torch.manual_seed(0)
    x = torch.randn(3, 3, 160, 160)
    got = features(bb, ["cls", "patch", "cls_patch", "dinov2_lin4", "default"], x)
    with torch.inference_mode():
        tokens = bb.model.forward_features(x)
        pre_logits = bb.model.forward_head(tokens, pre_logits=True)
        lin4 = dinov2_linear_input(bb.model, x)
    torch.testing.assert_close(got["cls"], pre_logits)  # global_pool="token": the class token after norm
    torch.testing.assert_close(got["patch"], tokens[:, 1:].mean(1))
    torch.testing.assert_close(got["cls_patch"], torch.cat([pre_logits, tokens[:, 1:].mean(1)], 1))
    torch.testing.assert_close(got["dinov2_lin4"], lin4)
    assert got["dinov2_lin4"].shape[1] == 5 * bb.model.embed_dim
    torch.testing.assert_close(got["default"], pre_logits)


def test_dinov2_with_registers_excludes_the_register_tokens() -> None:
    from extract.families import timm_presets

    model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56).eval()
    assert model.num_prefix_tokens == 5
    default, presets = timm_presets(model, "vit_small_patch14_reg4_dinov2.lvd142m")
    assert default == "head:in"
    from extract.backbones import Backbone
    from extract.transforms import TransformSpec

    bb = Backbone("timm:dinov2", model, default, TransformSpec(56, 56), "none", presets=presets)
    x = torch.randn(2, 3, 56, 56)
    got = features(bb, ["patch", "dinov2_lin4"], x)
    with torch.inference_mode():
        tokens = model.forward_features(x)
        lin4 = dinov2_linear_input(model, x)
    torch.testing.assert_close(got["patch"], tokens[:, 5:].mean(1))
    torch.testing.assert_close(got["dinov2_lin4"], lin4)


def test_clip_tower_pre_and_post_projection() -> None:
    bb = create("timm:vit_base_patch32_clip_224.openai")
    assert bb.default_layer == "head"  # the image embedding CLIP's zero-shot and probe code use
    x = torch.randn(2, 3, 224, 224)
    got = features(bb, ["pre_proj", "post_proj"], x)
    with torch.inference_mode():
        tokens = bb.model.forward_features(x)
        pre = bb.model.forward_head(tokens, pre_logits=True)
        post = bb.model(x)
    torch.testing.assert_close(got["pre_proj"], pre)
    torch.testing.assert_close(got["post_proj"], post)
    assert post.shape[1] == 512 and pre.shape[1] == 768


def test_siglip_attention_pool_and_no_class_token_presets() -> None:
    bb = create("timm:vit_base_patch16_siglip_224.webli")
    assert bb.default_layer == "attn_pool"
    assert "cls" not in bb.presets and "dinov2_lin4" not in bb.presets  # SigLIP has no class token
    x = torch.randn(2, 3, 224, 224)
    got = features(bb, ["attn_pool", "patch"], x)
    with torch.inference_mode():
        tokens = bb.model.forward_features(x)
        emb = bb.model.forward_head(tokens, pre_logits=True)
    torch.testing.assert_close(got["attn_pool"], emb)
    torch.testing.assert_close(got["patch"], tokens.mean(1))


def test_convnext_and_resnet_pool_the_last_stage() -> None:
    bb = create("timm:test_convnext.r160_in1k")
    assert bb.default_layer == "head.fc:in" and bb.presets["pooled"] == "head.fc:in"
    x = torch.randn(2, 3, 160, 160)
    got = features(bb, ["pooled"], x)
    with torch.inference_mode():
        torch.testing.assert_close(got["pooled"], bb.model.forward_head(bb.model.forward_features(x), pre_logits=True))
    bb = create("resnet18")
    assert bb.presets == {"pooled": "fc:in"}


def test_torchvision_vit_token_presets() -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    from extract.backbones import Backbone, _default_layer
    from extract.families import torchvision_presets
    from extract.transforms import TransformSpec

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=5, num_heads=2, hidden_dim=16, mlp_dim=32).eval()
    default = _default_layer(model)
    bb = Backbone("vit", model, default, TransformSpec(32, 32), "none", presets=torchvision_presets(model, default))
    x = torch.randn(2, 3, 32, 32)
    got = features(bb, ["cls", "patch", "dinov2_lin4", "pooled"], x)
    with torch.inference_mode():
        seq = model.encoder(torch.cat([model.class_token.expand(2, -1, -1), model._process_input(x)], 1))
        outs, h = [], model.encoder.dropout(torch.cat([model.class_token.expand(2, -1, -1), model._process_input(x)], 1)
                                            + model.encoder.pos_embedding)
        for layer in model.encoder.layers:
            h = layer(h)
            outs.append(model.encoder.ln(h))
    torch.testing.assert_close(got["cls"], seq[:, 0])
    torch.testing.assert_close(got["pooled"], seq[:, 0])  # torchvision's head reads the class token
    torch.testing.assert_close(got["patch"], seq[:, 1:].mean(1))
    torch.testing.assert_close(got["dinov2_lin4"], torch.cat([o[:, 0] for o in outs[-4:]] + [outs[-1][:, 1:].mean(1)], 1))


def test_presets_leave_the_state_dict_alone_and_survive_a_copy() -> None:
    import copy

    bb = create("timm:test_vit.r160_in1k")
    fresh = timm.create_model("test_vit.r160_in1k", pretrained=False)
    assert set(bb.model.state_dict()) == set(fresh.state_dict())  # the heads hold no state
    twin = copy.deepcopy(bb.model)
    with torch.no_grad():
        twin.norm.weight.mul_(2.0)  # a copy's heads use the copy's own norm
    x = torch.randn(1, 3, 160, 160)
    a = features(bb, ["dinov2_lin4"], x)["dinov2_lin4"]
    b = features(type(bb)(bb.name, twin, bb.default_layer, bb.transform, "none", presets=bb.presets),
                 ["dinov2_lin4"], x)["dinov2_lin4"]
    assert not torch.allclose(a, b)


def test_a_preset_feature_goes_through_prepare_with_its_dim() -> None:
    bb = create("timm:test_vit.r160_in1k")
    _, facts = prepare(bb, ["dinov2_lin4", "patch"], ["avg"], fold_bn=True)
    assert [(f.key, f.dim) for f in facts.features] == [("preset.dinov2_lin4/none", 320), ("preset.patch/none", 64)]


def test_openvino_computes_the_preset_heads_as_torch_does(tmp_path, monkeypatch) -> None:
    pytest.importorskip("openvino")
    import numpy as np

    import pipeline
    from featcache.store import read_features, read_index, read_info

    monkeypatch.setenv("FEATCACHE_HOME", str(tmp_path / "fc"))
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(timm.create_model("test_vit.r160_in1k").state_dict(), weights)
    sample = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "sample"
    stores = {}
    for runtime in ("openvino", "torch"):
        stores[runtime] = tmp_path / f"{runtime}.h5"
        assert pipeline.main(["extract", "-q", "--data", str(sample), "--backbone", "timm:test_vit.r160_in1k",
                              "--weights", str(weights), "--layers", "default,cls_patch,dinov2_lin4", "--runtime",
                              runtime, "--precision", "fp32", "--out", str(stores[runtime])]) == 0
    info = read_info(stores["openvino"])
    assert set(info.features) == {"head:in/none", "preset.cls_patch/none", "preset.dinov2_lin4/none"}
    rows = np.asarray(read_index(stores["openvino"])["rows"])
    for key in info.features:
        ov, pt = (read_features(stores[r], key, rows) for r in ("openvino", "torch"))
        assert np.abs(ov - pt).max() <= 1e-4 * np.abs(pt).max(), key


def test_open_clip_tower_embeddings_are_open_clips_own() -> None:
    open_clip = pytest.importorskip("open_clip")
    from extract.backbones import create_backbone

    bb = create_backbone("open_clip:ViT-B-32", "none")
    assert bb.default_layer == "post_proj" and bb.presets == {"post_proj": "post_proj", "pre_proj": "pre_proj"}
    assert (bb.transform.resize, bb.transform.crop, bb.transform.interpolation) == (224, 224, "bicubic")
    assert bb.transform.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    x = torch.randn(2, 3, 224, 224)
    got = features(bb, ["post_proj", "pre_proj"], x)
    visual = bb.model.visual
    with torch.inference_mode():
        own = visual(x)  # what CLIP.encode_image returns (before normalize=True)
    torch.testing.assert_close(got["post_proj"], own)
    torch.testing.assert_close(got["pre_proj"] @ visual.proj, own)
    assert got["pre_proj"].shape[1] == 768 and own.shape[1] == 512


def test_open_clip_names_need_a_known_model_and_tag() -> None:
    pytest.importorskip("open_clip")
    from extract.backbones import BackboneError, create_backbone

    with pytest.raises(BackboneError, match="closest"):
        create_backbone("open_clip:ViT-B-3")
    with pytest.raises(BackboneError, match="laion2b_s34b_b79k"):
        create_backbone("open_clip:ViT-B-32")  # DEFAULT weights need the pretrained tag
