"""The OpenVINO runtime against the torch reference: every backbone family, precisions, int8, the model cache."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is in requirements.txt; these tests need it")

from extract.runner import ExtractConfig, extract, plan  # noqa: E402
from featcache.store import StoreError, read_blob, read_info, read_rows  # noqa: E402
from tests.samples import copy_sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cfg(data, out, **kw) -> ExtractConfig:
    base = dict(data=str(data), backbone="efficientnet_lite0", out=str(out), batch_size=4, workers=0, progress=False,
                precision="fp32")  # compared with float32 references (the default is auto: bf16 where native)
    return ExtractConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return copy_sample(tmp_path_factory.mktemp("ov") / "imgs", 3, broken="train/bees/zz_broken.jpg")


def relative_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1).clip(1e-12)


# --------------------------------------------------------------------------- one small model per family


def _tiny(family: str):
    """(Backbone with random weights at a small input, layers, pools): the real torchvision classes."""
    import torch
    from torch import nn
    from torchvision import models as tvm
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    from torchvision.models.vision_transformer import VisionTransformer

    from extract.backbones import Backbone, create_backbone, freeze
    from extract.transforms import TransformSpec

    torch.manual_seed(0)
    small = TransformSpec(72, 64)
    if family == "lite":
        bb = create_backbone("efficientnet_lite0", "none")
        return dataclasses.replace(bb, transform=TransformSpec(72, 64, bb.transform.mean, bb.transform.std,
                                                               "bicubic")), ("default", "_blocks.10"), ("avg", "gem")
    if family == "resnet":
        model, layers, pools = tvm.resnet18(num_classes=10), ("default", "layer3", "layer1.0.bn2"), ("avg", "flatten")
    elif family == "vgg":
        model = tvm.vgg11_bn(num_classes=10)
        model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
        layers, pools = ("default", "features", "classifier.0"), ("avg", "max")  # classifier.0: an in-place ReLU next
    elif family == "vit":
        model = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                                  num_classes=10)
        layers, pools = ("default", "encoder.layers.encoder_layer_0"), ("avg", "cls")
    elif family == "convnext":
        model = ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], num_classes=10)
        layers, pools = ("default", "features.1"), ("avg", "avgmax")
    else:
        raise ValueError(family)
    from extract.backbones import _default_layer

    return Backbone(f"tiny-{family}", freeze(model), _default_layer(model), small, "none"), layers, pools


@pytest.mark.parametrize("family", ["lite", "resnet", "vgg", "vit", "convnext"])
def test_openvino_fp32_equals_torch_on_every_family(family, images, tmp_path):
    """The evidence for leaving the runtime out of an fp32 cache key: rows within 1e-5 (relative)."""
    bb, layers, pools = _tiny(family)
    stores = {}
    for runtime in ("torch", "openvino"):
        c = cfg(images, tmp_path / f"{runtime}.h5", runtime=runtime, layers=layers, pools=pools)
        s = extract(c, backbone=bb)
        assert s.status == "new" and s.runtime == runtime and s.skipped == 1
        stores[runtime] = tmp_path / f"{runtime}.h5"
    ref, got = read_info(stores["torch"]), read_info(stores["openvino"])
    assert ref.cache_key == got.cache_key and ref.features == got.features and len(ref.features) >= 3
    assert (ref.provenance["runtime"], got.provenance["runtime"]) == ("torch", "openvino")
    for key in ref.features:
        a, b = read_rows(stores["openvino"], key)["X"], read_rows(stores["torch"], key)["X"]
        assert a.shape == b.shape and np.isfinite(a).all()
        assert relative_errors(a, b).max() < 1e-5, key


def test_inplace_ops_after_a_tap_do_not_change_it(images, tmp_path):
    """vgg's classifier.0 is followed by ReLU(inplace=True): the kept output must be the Linear's, negatives and
    all; such stores (changed in earlier versions) get their own cache key, others keep theirs."""
    import torch

    from extract.hooks import FeatureHooks, Tap

    bb, _, _ = _tiny("vgg")
    spec = plan(cfg(images, tmp_path / "v.h5", layers=("classifier.0", "classifier.3")), backbone=bb).spec
    assert spec["copied_before_inplace"] == ["classifier.0/none"]
    assert "copied_before_inplace" not in plan(cfg(images, tmp_path / "d.h5"), backbone=_tiny("resnet")[0]).spec
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = bb.model.classifier[0](torch.flatten(bb.model.avgpool(bb.model.features(x)), 1))
        with FeatureHooks(bb.model, [Tap.parse("classifier.0"), Tap.parse("classifier.3")], ["avg"]) as hooks:
            got = hooks(x)["classifier.0/none"]
    assert (ref < 0).any() and torch.allclose(got, ref, atol=1e-6)


# --------------------------------------------------------------------------- precisions and keys


def _capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def test_lite0_real_weights_fp32_shares_the_torch_key_and_bf16_does_not(images, tmp_path):
    t = extract(cfg(images, tmp_path / "t.h5", runtime="torch"))
    o = extract(cfg(images, tmp_path / "o.h5", runtime="openvino"))
    ti, oi = read_info(t.store), read_info(o.store)
    assert ti.cache_key == oi.cache_key and "runtime" not in oi.spec
    assert relative_errors(read_rows(o.store)["X"], read_rows(t.store)["X"]).max() < 1e-5
    # the same command on the other runtime is a cache hit: same numbers, same key
    assert extract(cfg(images, tmp_path / "t.h5", runtime="openvino")).status == "hit"
    if "BF16" not in _capabilities():
        pytest.skip("this CPU has no native bf16 for OpenVINO")
    b = extract(cfg(images, tmp_path / "b.h5", runtime="openvino", precision="bf16"))
    bi = read_info(b.store)
    assert bi.spec["runtime"] == "openvino" and bi.spec["precision"] == "bf16" and bi.cache_key != oi.cache_key
    with pytest.raises(StoreError, match="runtime"):  # a torch bf16 store is another spec
        extract(cfg(images, tmp_path / "b.h5", runtime="torch", precision="bf16"))
    cos = (read_rows(b.store)["X"] * read_rows(o.store)["X"]).sum(1) / (
        np.linalg.norm(read_rows(b.store)["X"], axis=1) * np.linalg.norm(read_rows(o.store)["X"], axis=1))
    assert cos.min() > 0.99


def test_int8_is_calibrated_embedded_checked_and_cached(images, tmp_path, caplog):
    if "INT8" not in _capabilities():
        pytest.skip("this CPU has no int8 for OpenVINO")
    from extract import costs

    costs.reset()
    with caplog.at_level(logging.INFO, logger="extract.quantize"):
        s = extract(cfg(images, tmp_path / "q.h5", precision="int8"))
    assert "int8 quantization" in costs.snapshot() and "cosine to fp32" in caplog.text
    info = read_info(s.store)
    cal = info.spec["calibration"]
    assert info.spec["runtime"] == "openvino" and cal["rows"] == 7 and cal["method"] == "nncf.quantize"
    check = info.provenance["quantization"]["check"]["_fc:in/none"]
    assert 0.9 < check["cosine_mean"] <= 1.0 and check["cosine_min"] <= check["cosine_mean"]
    xml, weights = read_blob(s.store, "openvino_int8.xml"), read_blob(s.store, "openvino_int8.bin")
    assert xml.startswith(b"<?xml") and len(weights) > 1_000_000  # int8 weights: about a quarter of fp32's 13 MB
    fp32 = read_rows(extract(cfg(images, tmp_path / "f.h5")).store)["X"]
    q = read_rows(s.store)["X"]
    cos = (q * fp32).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(fp32, axis=1))
    assert cos.mean() > 0.95
    costs.reset()
    again = extract(cfg(images, tmp_path / "q2.h5", precision="int8"))  # another store, the cached network
    assert "int8 quantization" not in costs.snapshot()
    assert np.array_equal(read_rows(again.store)["X"], q)
    with pytest.raises(ValueError, match="int8"):
        extract(cfg(images, tmp_path / "t8.h5", precision="int8", runtime="torch"))


def test_unsupported_precision_is_refused_in_one_line(images, tmp_path, monkeypatch):
    from extract import openvino_runtime as ovr

    class Core:
        def get_property(self, device, name):
            return ["FP32", "INT8"]

    monkeypatch.setattr(ovr, "_core", lambda: Core())
    with pytest.raises(ValueError, match=r"--precision bf16: this CPU has no native BF16"):
        extract(cfg(images, tmp_path / "x.h5", runtime="openvino", precision="bf16"))
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.partial").exists()


# --------------------------------------------------------------------------- fallbacks and errors


def test_auto_falls_back_to_torch_when_conversion_fails(images, tmp_path, monkeypatch, caplog):
    from extract import openvino_runtime as ovr

    def broken(*a, **k):
        raise ovr.ConversionError("OpenVINO could not convert the hooked model (an unsupported op)")

    monkeypatch.setattr(ovr, "convert", broken)
    with caplog.at_level(logging.WARNING):
        s = extract(cfg(images, tmp_path / "a.h5", backbone="resnet18", weights="none"))
    assert s.runtime == "torch" and "extracting with --runtime torch instead" in caplog.text
    assert read_info(s.store).provenance["runtime"] == "torch"
    with pytest.raises(ValueError, match="--runtime openvino: resnet18: .*use --runtime torch"):
        extract(cfg(images, tmp_path / "b.h5", backbone="resnet18", weights="none", runtime="openvino"))


def test_openvino_needs_the_cpu(images, tmp_path):
    from extract.devices import resolve_runtime

    with pytest.raises(ValueError, match="--runtime openvino runs on the CPU"):
        resolve_runtime("openvino", "cuda")
    assert resolve_runtime("auto", "cuda") == "torch" and resolve_runtime("auto", "cpu") == "openvino"
    with pytest.raises(ValueError, match="--runtime 'tensorrt'"):
        resolve_runtime("tensorrt", "cpu")


def test_resume_on_openvino_gives_the_uninterrupted_store(images, tmp_path, monkeypatch):
    import extract.runner as runner

    full = extract(cfg(images, tmp_path / "full.h5"))
    real, calls = runner.batch_features, {"n": 0}

    def dies_after_two(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "batch_features", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        extract(cfg(images, tmp_path / "r.h5"))
    monkeypatch.setattr(runner, "batch_features", real)
    s = extract(cfg(images, tmp_path / "r.h5"))
    assert s.status == "resume" and s.written == 13 - 8
    assert np.array_equal(read_rows(s.store)["X"], read_rows(full.store)["X"])


# --------------------------------------------------------------------------- the model cache and start-up


def _run(code: str, env: dict) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_cached_network_and_cache_hits_never_import_torch(images, tmp_path):
    env = {**os.environ, "FEATCACHE_HOME": str(tmp_path / "home")}
    run = ("import sys, json; from extract.runner import ExtractConfig, extract; "
           "s = extract(ExtractConfig(data=%r, backbone='efficientnet_lite0', out=%r, progress=False)); "
           "print(json.dumps([s.status, 'torch' in sys.modules]))")
    first = json.loads(_run(run % (str(images), str(tmp_path / "a.h5")), env).splitlines()[-1])
    assert first == ["new", True]  # converting needs the torch model once
    second = json.loads(_run(run % (str(images), str(tmp_path / "b.h5")), env).splitlines()[-1])
    assert second == ["new", False]  # another store from the cached network: no torch
    hit = subprocess.run([sys.executable, "pipeline.py", "-v", "extract", "--data", str(images), "--backbone",
                          "efficientnet_lite0", "--out", str(tmp_path / "b.h5")], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert hit.returncode == 0 and "cache hit" in hit.stdout and "fixed costs: start-up" in hit.stderr
    assert "model build" not in hit.stderr and "network load" not in hit.stderr
    entries = list((tmp_path / "home" / "openvino").glob("efficientnet_lite0-*/model.xml"))
    assert len(entries) == 1


def test_a_changed_weights_file_is_noticed_through_the_cache(images, tmp_path):
    import torch
    from torchvision.models import resnet18

    weights = tmp_path / "w.pth"
    torch.manual_seed(1)
    torch.save(resnet18().state_dict(), weights)
    a = extract(cfg(images, tmp_path / "a.h5", backbone="resnet18", weights_file=str(weights)))
    assert extract(cfg(images, tmp_path / "a.h5", backbone="resnet18", weights_file=str(weights))).status == "hit"
    torch.manual_seed(2)
    torch.save(resnet18().state_dict(), weights)  # same path, other weights
    with pytest.raises(StoreError, match="weights_sha256"):
        extract(cfg(images, tmp_path / "a.h5", backbone="resnet18", weights_file=str(weights)))
    b = extract(cfg(images, tmp_path / "b.h5", backbone="resnet18", weights_file=str(weights)))
    assert read_info(b.store).cache_key != read_info(a.store).cache_key
    assert not np.allclose(read_rows(a.store)["X"], read_rows(b.store)["X"])


def test_plan_knows_the_facts_without_building_the_model(images, tmp_path):
    extract(cfg(images, tmp_path / "a.h5"))
    p = plan(cfg(images, tmp_path / "b.h5", layers=("default",)))
    assert p.backbone is None and p.facts.features[0].dim == 1280 and p.facts.folded == 49


def test_predict_shards_and_merge_use_the_stores_int8_network(images, tmp_path, monkeypatch):
    if "INT8" not in _capabilities():
        pytest.skip("this CPU has no int8 for OpenVINO")
    from classify.job import run_classify
    from classify.persist import load_model
    from extract.shards import merge
    from featcache.driver.predict import predict

    whole = extract(cfg(images, tmp_path / "q.h5", precision="int8"))
    parts = [extract(cfg(images, tmp_path / f"s{k}.h5", precision="int8", shard=f"{k}/2")).store for k in (0, 1)]
    merged = merge(parts, tmp_path / "m.h5")
    assert read_blob(merged, "openvino_int8.bin") == read_blob(whole.store, "openvino_int8.bin")
    assert np.array_equal(read_rows(merged)["X"], read_rows(whole.store)["X"])
    assert read_info(merged).cache_key == read_info(whole.store).cache_key

    run_classify(whole.store, models=["logreg"], out_dir=tmp_path / "cls")
    model_path = next((tmp_path / "cls" / "models").glob("*logreg.skops"))
    monkeypatch.setenv("FEATCACHE_HOME", str(tmp_path / "empty-cache"))  # the network must come from the store
    res = predict(str(model_path), [str(images / "val")], str(tmp_path / "p.csv"))
    saved, data = load_model(model_path), read_rows(whole.store, splits=["val"])
    expected = [saved.class_names[int(c)] for c in saved.model.predict(data["X"])]
    assert res["predicted"] == expected and len(expected) == 6
    assert not (tmp_path / "empty-cache" / "openvino").exists() or not any(
        (tmp_path / "empty-cache" / "openvino").glob("*int8*"))


REOPEN = """
import sys
import numpy as np
from extract.runner import ExtractConfig, plan
from extract.runtime import open_runtime
p = plan(ExtractConfig(data=sys.argv[1], backbone="efficientnet_lite0", out="unused.h5", runtime="openvino"))
u = np.zeros((2, 224, 224, 3), dtype=np.uint8)
for i in range(40):
    with open_runtime(p) as opened:
        opened.runtime(u)
print("closed", i + 1)
"""


def test_opening_and_closing_the_runtime_never_hangs(images):
    """Freeing an AsyncInferQueue whose Python callbacks take the GIL deadlocked about once in 15
    opens here (it hung an extraction's exit in the suite); 40 opens and closes must all finish."""
    r = subprocess.run([sys.executable, "-c", REOPEN, str(images)], capture_output=True, text=True, timeout=150,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "closed 40" in r.stdout, r.stderr[-2000:]
