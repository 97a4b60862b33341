"""Hooks and pooling: exact values on a toy net, and agreement with the models' own heads."""

import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from extract.backbones import create_backbone
from extract.hooks import POOLS, FeatureHooks, LayerError, Tap, pool

torch.manual_seed(0)


class Toy(nn.Module):
    """Hand-set weights so every activation is known exactly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        x = self.relu(self.conv(x))
        return self.head(x.mean((2, 3)))


def test_toy_exact_values():
    x = torch.tensor([[[[1.0, -1.0], [3.0, 0.0]]]])  # conv -> [x, -2x], relu
    with FeatureHooks(Toy().eval(), [Tap.parse("relu"), Tap.parse("head:in")], ["avg", "max", "avgmax"]) as h:
        out = h(x)
    assert torch.equal(out["relu/avg"], torch.tensor([[1.0, 0.5]]))  # ch0 relu: 1,0,3,0 ; ch1: 0,2,0,0
    assert torch.equal(out["relu/max"], torch.tensor([[3.0, 2.0]]))
    assert torch.equal(out["relu/avgmax"], torch.tensor([[1.0, 0.5, 3.0, 2.0]]))
    assert torch.equal(out["head:in/none"], out["relu/avg"])  # vectors are stored as they are


@pytest.mark.parametrize("mode", POOLS)
def test_every_pool_mode_shapes(mode):
    x4 = torch.rand(3, 8, 5, 7)
    x3 = torch.rand(3, 10, 8)
    expect4 = {"avg": 8, "max": 8, "avgmax": 16, "gem": 8, "flatten": 8 * 5 * 7}
    expect3 = {"avg": 8, "max": 8, "avgmax": 16, "cls": 8, "flatten": 80}
    if mode in expect4:
        assert pool(x4, mode).shape == (3, expect4[mode])
    else:
        with pytest.raises(LayerError):
            pool(x4, mode)
    if mode in expect3:
        assert pool(x3, mode).shape == (3, expect3[mode])
    assert pool(torch.rand(3, 4), mode).shape == (3, 4)


def test_pool_values():
    x = torch.rand(2, 4, 3, 3) + 0.1
    assert torch.allclose(pool(x, "gem"), x.pow(3).mean((2, 3)).pow(1 / 3), atol=1e-6)
    assert torch.equal(pool(x, "avgmax"), torch.cat([pool(x, "avg"), pool(x, "max")], 1))
    t = torch.rand(2, 5, 4)
    assert torch.equal(pool(t, "cls"), t[:, 0])


def test_unknown_layer_lists_closest():
    with pytest.raises(LayerError, match="closest: .*relu"):
        FeatureHooks(Toy(), [Tap.parse("rleu")], ["avg"])
    with pytest.raises(LayerError, match="unknown"):
        FeatureHooks(Toy(), [Tap.parse("relu")], ["median"])
    with pytest.raises(LayerError):
        Tap.parse("fc:sideways")


def test_hooks_removed_even_on_error():
    model = Toy().eval()
    with pytest.raises(RuntimeError):
        with FeatureHooks(model, [Tap.parse("relu")], ["avg"]) as h:
            h(torch.rand(1, 3, 2, 2))  # wrong channel count: the forward raises
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_no_leak_across_calls():
    model = Toy().eval()
    for _ in range(3):
        with FeatureHooks(model, [Tap.parse("conv"), Tap.parse("head:in")], ["avg"]) as h:
            h(torch.rand(2, 1, 4, 4))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_stop_early_skips_the_rest():
    model = Toy().eval()
    calls = []
    model.head.register_forward_hook(lambda *a: calls.append(1))
    with FeatureHooks(model, [Tap.parse("relu")], ["avg"]) as h:
        h(torch.rand(1, 1, 2, 2))
    assert calls == []  # the head never ran


@pytest.mark.parametrize("name,layers", [
    ("resnet18", ["layer3", "layer4", "avgpool", "fc:in"]),
    ("vgg16", ["features.29", "classifier.4", "classifier.6:in"]),
    ("vit_b_16", ["encoder.layers.encoder_layer_11", "encoder.ln", "heads.head:in"]),
])
def test_hooks_match_torchvision_feature_extractor(name, layers):
    model = create_backbone(name, "none").model
    x = torch.rand(2, 3, 224, 224)
    taps = [Tap.parse(n) for n in layers]
    with FeatureHooks(model, taps, ["avg", "cls"] if name.startswith("vit") else ["avg"]) as h, torch.inference_mode():
        ours = h(x)
    outputs = [t.layer for t in taps if t.side == "output"]
    with torch.inference_mode():
        ref = create_feature_extractor(model, return_nodes=outputs)(x)
    for t in taps:
        if t.side == "output":
            r = ref[t.layer]
            expected = r if r.dim() == 2 else (r[:, 0] if r.dim() == 3 else r.mean((2, 3)))
            key = f"{t.layer}/{'none' if r.dim() == 2 else 'cls' if r.dim() == 3 else 'avg'}"
            torch.testing.assert_close(ours[key], expected, atol=1e-5, rtol=0)


def _own_classifier_input(name, model, x):
    """Compute what the classifier receives by the model's own code path, independently of hooks."""
    if name == "resnet50":
        f = model
        h = f.layer4(f.layer3(f.layer2(f.layer1(f.maxpool(f.relu(f.bn1(f.conv1(x))))))))
        return torch.flatten(f.avgpool(h), 1), model.fc
    if name == "vgg16":
        h = torch.flatten(model.avgpool(model.features(x)), 1)
        return model.classifier[:6](h), model.classifier[6]
    h = model.extract_features(x)  # efficientnet_lite0
    return model._avg_pooling(h).flatten(1), model._fc


@pytest.mark.parametrize("name,weights", [("resnet50", "none"), ("vgg16", "none"), ("efficientnet_lite0", "DEFAULT")])
def test_default_layer_is_what_the_classifier_receives(name, weights):
    bb = create_backbone(name, weights)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected, head = _own_classifier_input(name, bb.model, x)
        logits = bb.model(x)
        with FeatureHooks(bb.model, [Tap.parse(bb.default_layer)], ["avgmax"]) as h:
            got = h(x)[f"{bb.default_layer}/none"]
    assert (got - expected).abs().max().item() < 1e-5
    assert (head(got) - logits).abs().max().item() < 1e-4  # the features reproduce the model's own logits


def test_avgmax_is_concat_of_pools_on_real_backbone():
    bb = create_backbone("efficientnet_lite0")
    x = torch.randn(2, 3, 224, 224)
    with FeatureHooks(bb.model, [Tap.parse("_bn1")], ["avg", "max", "avgmax"]) as h, torch.inference_mode():
        out = h(x)
    assert out["_bn1/avgmax"].shape == (2, 2560)
    assert torch.equal(out["_bn1/avgmax"], torch.cat([out["_bn1/avg"], out["_bn1/max"]], 1))
