"""Weights fetched on first use, through a loopback server these tests start: the Hugging Face hub path
(timm), the torchvision mirror path (hash-checked), offline mode, and downloads that go wrong."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hubserver import serve

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
TIMM_NAME = "test_vit.r160_in1k"


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "pipeline.py"), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


def isolated_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FEATCACHE_", "TORCH_HOME"))}
    env |= {"HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
            "FEATCACHE_HOME": str(tmp_path / "featcache"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_ETAG_TIMEOUT": "10"}
    return env | extra


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict]:
    timm = pytest.importorskip("timm")
    from safetensors.torch import save

    torch.manual_seed(1234)
    model = timm.create_model(TIMM_NAME, pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save(state), state


def timm_reference(state: dict, paths: list[str]) -> np.ndarray:
    """timm's own forward, with timm's own eval transform, on the same images."""
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(TIMM_NAME, pretrained=False).eval()
    model.load_state_dict(state)
    tf = create_transform(**resolve_data_config({}, model=model))
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()


def read_store(path: Path) -> tuple[np.ndarray, list[str]]:
    from featcache.store import read_features, read_index, read_info

    info = read_info(path)
    index = read_index(path)
    rows = np.asarray(index["rows"])
    X = read_features(path, info.default_feature, rows)
    root = Path(info.provenance.get("data_root") or SAMPLE)
    paths = [str(p if Path(p).is_absolute() else root / p) for p in np.asarray(index["paths"]).astype(str)]
    return X, paths


def test_timm_weights_come_from_the_hub_on_first_use_then_from_the_cache_offline(tmp_path: Path, timm_weights) -> None:
    data, state = timm_weights
    with serve(tmp_path / "srv") as hub:
        hub.add_hub_file(f"timm/{TIMM_NAME}", "model.safetensors", data)
        env = isolated_env(tmp_path, HF_ENDPOINT=hub.url)
        first = tmp_path / "first.h5"
        r = cli("extract", "--data", str(SAMPLE), "--backbone", f"timm:{TIMM_NAME}", "--out", str(first), env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert any(m == "GET" and p.endswith("/model.safetensors") for m, p in hub.requests)
        X, paths = read_store(first)
        ref = timm_reference(state, paths)
        cos = (X * ref).sum(1) / np.linalg.norm(X, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= 0.999, cos.min()

        from featcache.store import read_info

        spec = read_info(first).spec
        assert spec["weights_sha256"] == hashlib.sha256(data).hexdigest()  # the fetched file is the identity

        asked = len(hub.requests)
        again = tmp_path / "offline.h5"
        r = cli("extract", "--data", str(SAMPLE), "--backbone", f"timm:{TIMM_NAME}", "--out", str(again),
                "--force", env=env | {"HF_HUB_OFFLINE": "1"})
        assert r.returncode == 0, r.stderr[-2000:]
        assert len(hub.requests) == asked  # offline: nothing asked of the hub
        np.testing.assert_allclose(read_store(again)[0], X, rtol=0, atol=1e-6)

        empty = isolated_env(tmp_path / "empty", HF_ENDPOINT=hub.url)
        r = cli("extract", "--data", str(SAMPLE), "--backbone", f"timm:{TIMM_NAME}", "--out",
                str(tmp_path / "never.h5"), "--offline", env=empty)
        assert r.returncode == 2
        assert len(error_lines(r)) == 1 and "Traceback" not in r.stderr
        assert "offline" in r.stderr and str(tmp_path / "empty" / "hf") in r.stderr and "--fetch" in r.stderr
        assert len(hub.requests) == asked and not (tmp_path / "never.h5").exists()


def tv_file(seed: int = 0) -> bytes:
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(resnet18(weights=None).state_dict(), buf)
    return buf.getvalue()


def test_a_torchvision_file_with_a_wrong_hash_behind_the_mirror_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    with serve(tmp_path / "srv") as hub:
        hub.add_file("models/resnet18-f37072fd.pth", tv_file())  # a state dict, but not the one the name's hash says
        env = isolated_env(tmp_path)
        r = cli("extract", "--data", str(SAMPLE), "--backbone", "resnet18", "--out", str(tmp_path / "f.h5"),
                "--weights-mirror", hub.url, env=env)
        assert r.returncode == 2, r.stderr[-2000:]
        lines = error_lines(r)
        assert len(lines) == 1 and "f37072fd" in lines[0] and "nothing was cached" in lines[0], r.stderr
        assert ("GET", "/models/resnet18-f37072fd.pth") in hub.requests  # the mirror, not download.pytorch.org
        checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
        assert not checkpoints.exists() or list(checkpoints.iterdir()) == []
        assert not (tmp_path / "f.h5").exists()

        r = cli("extract", "--data", str(SAMPLE), "--backbone", "resnet18", "--out", str(tmp_path / "f.h5"),
                "--offline", env=env)
        assert r.returncode == 2 and len(error_lines(r)) == 1 and str(checkpoints) in r.stderr
        assert "--fetch resnet18" in r.stderr


def test_download_checks_the_hash_in_the_name_and_is_atomic(tmp_path: Path) -> None:
    from extract.fetch import WeightsError, download

    data = tv_file()
    good = hashlib.sha256(data).hexdigest()[:8]
    with serve(tmp_path / "srv") as hub:
        url = hub.add_file(f"models/tiny-{good}.pth", data)
        dest = tmp_path / "cache" / f"tiny-{good}.pth"
        assert download(url, dest, good, progress=False).read_bytes() == data
        assert [p.name for p in dest.parent.iterdir()] == [dest.name]

        bad = tmp_path / "cache" / "tiny-00000000.pth"
        with pytest.raises(WeightsError, match="does not match"):
            download(url, bad, "00000000", progress=False)
        assert not bad.exists() and [p.name for p in dest.parent.iterdir()] == [dest.name]

        hub.cut_after = 1000  # the connection drops mid-file: refused, not kept
        cut = tmp_path / "cache2" / f"tiny-{good}.pth"
        with pytest.raises(WeightsError, match="stopped at 1000"):
            download(url, cut, good, progress=False)
        assert list(cut.parent.iterdir()) == []

        missing = tmp_path / "cache3" / "absent-12345678.pth"
        with pytest.raises(WeightsError, match="HTTP 404"):
            download(f"{hub.url}/models/absent-12345678.pth", missing, "12345678", progress=False)


def test_a_killed_downloads_partial_file_is_removed_before_the_next_try(tmp_path: Path) -> None:
    from extract.fetch import download

    data = b"weights" * 1000
    prefix = hashlib.sha256(data).hexdigest()[:8]
    dest = tmp_path / f"w-{prefix}.pth"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{dest.name}.{dead.stdout.strip()}.partial"  # a process that is gone
    stale.write_bytes(b"half")
    with serve(tmp_path / "srv") as hub:
        download(hub.add_file(dest.name, data), dest, prefix, progress=False)
    assert not stale.exists() and dest.read_bytes() == data


def test_offline_torchvision_miss_and_mirror_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from extract import fetch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(fetch.MIRROR_ENV, "http://127.0.0.1:9/m/")
    assert fetch.mirrored("https://download.pytorch.org/models/a-1234abcd.pth") == "http://127.0.0.1:9/m/models/a-1234abcd.pth"
    assert fetch.mirrored("https://example.invalid/x.pth") == "https://example.invalid/x.pth"  # other hosts unchanged
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(fetch.WeightsError, match="offline mode is on") as e:
        fetch.fetch_torchvision("https://download.pytorch.org/models/a-1234abcd.pth", "a weights X")
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "a-1234abcd.pth") in str(e.value)
    with pytest.raises(fetch.WeightsError, match="--weights-mirror"):
        fetch.set_options(mirror="ftp://mirror")


def test_backbones_lists_what_is_cached_and_what_would_be_fetched(tmp_path: Path, monkeypatch, capsys) -> None:
    import pipeline

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x" * 2_000_000)
    assert pipeline.main(["backbones", "resnet"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "cached" in rows["resnet18"] and "2.0 MB" in rows["resnet18"] and str(ckpt) in rows["resnet18"]
    assert "to fetch" in rows["resnet50"] and "98 MB" in rows["resnet50"]
    assert "download.pytorch.org/models/resnet50" in rows["resnet50"]


def test_a_hub_without_the_weights_is_one_line_naming_the_model(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    with serve(tmp_path / "srv") as hub:  # serves nothing: 404 EntryNotFound for every file
        r = cli("extract", "--data", str(SAMPLE), "--backbone", "timm:test_vit2.r160_in1k", "--out",
                str(tmp_path / "f.h5"), env=isolated_env(tmp_path, HF_ENDPOINT=hub.url))
        assert r.returncode == 2, r.stderr[-2000:]
        assert len(error_lines(r)) == 1 and "timm:test_vit2.r160_in1k" in r.stderr and "Traceback" not in r.stderr
        assert any(p.endswith("/model.safetensors") for _, p in hub.requests)
