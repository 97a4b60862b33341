"""End-to-end extraction on real images: rows, errors, cache hit, resume, refusal, CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from extract.runner import ExtractConfig, extract
from featcache.store import StoreError, partial_path, read_info, read_rows
from tests.samples import copy_sample

ROOT = Path(__file__).resolve().parents[1]


def small_set(tmp_path, per_class=3):
    """A few real sample photos in split folders, plus one broken file."""
    return copy_sample(tmp_path / "imgs", per_class, broken="train/bees/zz_broken.jpg")


def cfg(data, out, **kw):
    base = dict(data=str(data), backbone="efficientnet_lite0", out=str(out), batch_size=4, workers=0, progress=False,
                precision="fp32")  # compared with float32 references (the default is auto: bf16 where native)
    base.update(kw)
    return ExtractConfig(**base)


def test_extract_rows_errors_and_cache_hit(tmp_path):
    data = small_set(tmp_path)
    out = tmp_path / "f.h5"
    s = extract(cfg(data, out))
    assert s.status == "new" and s.rows == 13 and s.skipped == 1
    info = read_info(out)
    assert info.complete and info.n_ok == 12 and info.features == {"_fc:in/none": 1280}
    assert info.errors[0][0] == "train/bees/zz_broken.jpg"
    assert info.spec["weights"] == "IMAGENET1K" and info.provenance["torch"]
    d = read_rows(out)
    assert d["X"].shape == (12, 1280) and np.isfinite(d["X"]).all()
    assert list(d["split"]).count("val") == 6
    again = extract(cfg(data, out))
    assert again.status == "hit" and again.written == 0


def test_several_layers_and_pools_in_one_pass(tmp_path):
    data = small_set(tmp_path, per_class=1)
    out = tmp_path / "multi.h5"
    extract(cfg(data, out, layers=("default", "_blocks.15", "_bn1"), pools=("avg", "avgmax", "gem")))
    info = read_info(out)
    assert info.default_feature == "_fc:in/none"
    assert info.features["_blocks.15/avgmax"] == 2 * info.features["_blocks.15/avg"]
    assert info.features["_bn1/gem"] == 1280
    a, b = read_rows(out, "_bn1/avg")["X"], read_rows(out, "_bn1/avgmax")["X"]
    assert np.array_equal(b[:, :1280], a)


def test_key_mismatch_refused_then_overwrite(tmp_path):
    data = small_set(tmp_path, per_class=1)
    out = tmp_path / "f.h5"
    extract(cfg(data, out))
    before = out.read_bytes()
    with pytest.raises(StoreError, match="differs in: .*features"):
        extract(cfg(data, out, pools=("max",), layers=("_bn1",)))
    assert out.read_bytes() == before
    with pytest.raises(StoreError, match="differs in: .*precision"):
        extract(cfg(data, out, precision="bf16", runtime="torch"))  # torch emulates bf16 on any CPU
    s = extract(cfg(data, out, precision="bf16", runtime="torch", overwrite=True))
    assert s.status == "new" and read_info(out).spec["precision"] == "bf16"


def test_resume_after_interruption_is_identical(tmp_path, monkeypatch):
    data = small_set(tmp_path, per_class=3)
    ref = tmp_path / "ref.h5"
    extract(cfg(data, ref, batch_size=2))

    from featcache import store

    out = tmp_path / "f.h5"
    real_write, calls = store.StoreWriter.write, []

    def flaky_write(self, *a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C after three flushed batches
        calls.append(1)
        return real_write(self, *a, **k)

    monkeypatch.setattr(store.StoreWriter, "write", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        extract(cfg(data, out, batch_size=2))
    assert not out.exists() and partial_path(out).exists()
    assert read_info(out).n_done == 6
    monkeypatch.setattr(store.StoreWriter, "write", real_write)
    s = extract(cfg(data, out, batch_size=2))
    assert s.status == "resume" and s.written == 7
    a, b = read_rows(ref), read_rows(out)
    assert list(a["paths"]) == list(b["paths"])
    assert np.abs(a["X"] - b["X"]).max() < 1e-5
    assert read_info(out).errors == read_info(ref).errors


def test_cli_extract_and_info(tmp_path):
    data = small_set(tmp_path, per_class=1)
    out = tmp_path / "c.h5"
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "pipeline.py"), *a], capture_output=True, text=True)
    r = run("extract", "--data", str(data), "--backbone", "efficientnet_lite0", "--out", str(out), "--workers", "0")
    assert r.returncode == 0, r.stderr
    assert "wrote 5 rows" in r.stdout and "skipped 1" in r.stdout
    r = run("info", str(out))
    assert r.returncode == 0 and "_fc:in/none  dim 1280 (default)" in r.stdout
    r = run("extract", "--data", str(data), "--backbone", "resnet5O", "--out", str(out))
    assert r.returncode == 2 and "closest: resnet50" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("extract", "--data", str(tmp_path / "missing"), "--backbone", "efficientnet_lite0", "--out", str(out))
    assert r.returncode == 2 and "missing" in r.stderr
    r = run("extract", "--data", str(data), "--backbone", "efficientnet_lite0", "--out", str(out),
            "--layers", "_blocks.99")
    assert r.returncode == 2 and "closest" in r.stderr


def test_uint8_crops_normalized_in_batch_equal_totensor_normalize():
    """Extraction's decode path (uint8 crop, batched normalize) gives bit-identical inputs."""
    import torch

    from extract.backbones import create_backbone
    from extract.images import load_image
    from extract.preprocess import build_transform, normalize_batch
    from extract.transforms import CenterCrop
    from extract.views import view_transform
    from tests.samples import SAMPLE

    spec = create_backbone("efficientnet_lite0", "none").transform
    imgs = [load_image(f) for f in sorted(SAMPLE.glob("train/*/*.jpg"))[:6]]
    ref = torch.stack([build_transform(spec)(i) for i in imgs])
    got = normalize_batch(torch.from_numpy(np.stack([CenterCrop(spec)(i) for i in imgs])), spec)
    assert torch.equal(got, ref) and got.is_contiguous(memory_format=torch.channels_last)
    views = [view_transform(spec, 1, 2), view_transform(spec, 1, 2, uint8=True)]
    assert torch.equal(normalize_batch(torch.from_numpy(np.stack([views[1](i, 5) for i in imgs])), spec),
                       torch.stack([views[0](i, 5) for i in imgs]))


@pytest.mark.parametrize("native", [True, False])
def test_default_precision_is_bf16_where_the_cpu_computes_it_natively(tmp_path, monkeypatch, native):
    import extract.devices as devices
    from extract.runner import plan
    from featcache.driver.config import resolve

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    data = small_set(tmp_path, per_class=1)
    assert ExtractConfig.precision == resolve({}, {"data": "d", "out": "o"}).extract.precision == "auto"  # one default
    p = plan(ExtractConfig(data=str(data), backbone="efficientnet_lite0", out=str(tmp_path / "f.h5"), workers=0,
                           progress=False, runtime="torch"))
    assert p.precision == p.spec["precision"] == ("bf16" if native else "fp32")  # the resolved one keys the store
