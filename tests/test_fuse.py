"""BatchNorm folding: same features within float rounding, hooked modules untouched, unsafe folds refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from extract.backbones import create_backbone
from extract.fuse import conv_bn_pairs, fold_batchnorm
from extract.hooks import FeatureHooks, Tap
from extract.runner import ExtractConfig, extract, plan
from featcache.store import read_info, read_rows
from tests.samples import copy_sample


def features(model: nn.Module, taps: list[Tap], x: torch.Tensor) -> dict[str, torch.Tensor]:
    with FeatureHooks(model, taps, ("avg",)) as hooks, torch.inference_mode():
        return hooks(x)


def randomized_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so a wrong fold cannot pass by accident."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def test_resnet18_folds_every_bn_and_keeps_features():
    model = randomized_bn(resnet18(weights=None))
    taps = [Tap.parse("fc:in"), Tap.parse("layer3")]
    folded, n = fold_batchnorm(model, taps, 64)
    assert n == 20 and folded is not model
    assert isinstance(folded.layer1[0].bn1, nn.Identity) and isinstance(model.layer1[0].bn1, nn.BatchNorm2d)
    x = torch.randn(3, 3, 64, 64)
    ref, got = features(model, taps, x), features(folded, taps, x)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4)


def test_hooked_conv_or_bn_is_not_folded():
    model = randomized_bn(resnet18(weights=None))
    taps = [Tap.parse("layer4.1.bn2:in"), Tap.parse("layer4.1.conv1")]
    folded, n = fold_batchnorm(model, taps, 64)
    assert n == 18  # layer4.1's (conv2, bn2) and (conv1, bn1) stay as they are
    assert isinstance(folded.layer4[1].bn2, nn.BatchNorm2d) and isinstance(folded.layer4[1].bn1, nn.BatchNorm2d)
    x = torch.randn(2, 3, 64, 64)
    ref, got = features(model, taps, x), features(folded, taps, x)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4)


class ConvUsedTwice(nn.Module):
    """The conv's output feeds the BatchNorm and a skip connection: folding would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y
        return self.head(z.mean((2, 3)))


def test_unsafe_fold_is_detected_and_refused(caplog):
    model = randomized_bn(ConvUsedTwice())
    assert conv_bn_pairs(model, torch.zeros(1, 3, 8, 8)) == [("conv", "bn")]  # looks foldable...
    same, n = fold_batchnorm(model, [Tap.parse("head:in")], 8)
    assert same is model and n == 0  # ...but the probe batch shows the features would change
    assert "extracting without it" in caplog.text


def test_training_mode_and_no_bn_are_left_alone():
    assert fold_batchnorm(resnet18(weights=None).train(), [Tap.parse("fc:in")], 32)[1] == 0
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()
    plain(torch.zeros(1, 3, 8, 8))
    assert fold_batchnorm(plain, [Tap.parse("3:in")], 8) == (plain, 0)


def test_extraction_folds_by_default_and_records_it(tmp_path):
    data = copy_sample(tmp_path / "imgs", 1)
    base = dict(data=str(data), backbone="efficientnet_lite0", batch_size=4, workers=0, progress=False,
                precision="fp32")  # compared with float32 references (the default is auto: bf16 where native)
    p = plan(ExtractConfig(out=str(tmp_path / "a.h5"), **base))
    assert p.folded == 49 and p.spec["fold_bn"] is True
    extract(ExtractConfig(out=str(tmp_path / "a.h5"), **base))
    extract(ExtractConfig(out=str(tmp_path / "b.h5"), fold_bn=False, **base))
    a, b = read_info(tmp_path / "a.h5"), read_info(tmp_path / "b.h5")
    assert a.cache_key != b.cache_key and a.provenance["folded_batchnorms"] == 49
    assert b.provenance["folded_batchnorms"] == 0
    xa, xb = read_rows(tmp_path / "a.h5")["X"], read_rows(tmp_path / "b.h5")["X"]
    assert np.linalg.norm(xa - xb) / np.linalg.norm(xb) < 1e-4


def test_lite0_folded_matches_on_real_weights():
    bb = create_backbone("efficientnet_lite0")
    taps = [Tap.parse(bb.default_layer)]
    folded, n = fold_batchnorm(bb.model, taps, 224)
    assert n == 49
    x = torch.randn(2, 3, 224, 224)
    ref, got = features(bb.model, taps, x), features(folded, taps, x)
    (key,) = ref
    assert float((got[key] - ref[key]).norm() / ref[key].norm()) < 1e-5
    with pytest.raises(AttributeError):
        _ = folded._bn1.running_mean  # the head's BatchNorm became an Identity under the same name
