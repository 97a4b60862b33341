"""``--engine ray`` on a local 2-CPU Ray instance: equal to the local run, survives a killed worker."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")

from extract.ray_engine import KILL_ENV, extract_ray  # noqa: E402
from extract.runner import ExtractConfig, extract  # noqa: E402
from featcache.store import read_info, read_rows  # noqa: E402
from tests.samples import copy_sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    marker = tmp_path_factory.mktemp("ray") / "killed.marker"
    marker.write_text("disarmed")
    os.environ[KILL_ENV] = f"{marker}:2"  # workers inherit it; a test arms it by deleting the marker
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield marker
    ray.shutdown()
    os.environ.pop(KILL_ENV, None)


@pytest.fixture(scope="module")
def data_and_ref(tmp_path_factory):
    d = copy_sample(tmp_path_factory.mktemp("rayimgs"), 6)
    (d / "val" / "bees" / "zz_empty.jpg").write_bytes(b"")
    ref = d.parent / "ref.h5"
    extract(cfg(d, ref))
    return d, ref


def cfg(data, out):
    return ExtractConfig(data=str(data), backbone="efficientnet_lite0", out=str(out), batch_size=4, workers=0,
                         progress=False)


def assert_same(a_path, b_path):
    a, b = read_rows(a_path), read_rows(b_path)
    assert list(a["paths"]) == list(b["paths"]) and np.array_equal(a["y"], b["y"])
    assert np.abs(a["X"] - b["X"]).max() < 1e-5
    ia, ib = read_info(a_path), read_info(b_path)
    assert ia.errors == ib.errors and ia.cache_key == ib.cache_key and ib.complete


def test_ray_equals_local_run(cluster, data_and_ref, tmp_path):
    data, ref = data_and_ref
    out = tmp_path / "ray.h5"
    s = extract_ray(cfg(data, out), workers=2)
    assert s.status == "new" and s.rows == 25 and s.skipped == 1
    assert_same(ref, out)
    assert extract_ray(cfg(data, out), workers=2).status == "hit"


def test_killed_worker_is_retried_and_result_exact(cluster, data_and_ref, tmp_path):
    data, ref = data_and_ref
    cluster.unlink()  # arm: the first actor to reach its 2nd batch exits hard, once
    out = tmp_path / "killed.h5"
    extract_ray(cfg(data, out), workers=2)
    assert cluster.exists(), "no worker was killed: the test proved nothing"
    assert_same(ref, out)


def test_classify_on_ray_matches_local(cluster, data_and_ref, tmp_path):
    from classify.engine import parallel_engine
    from classify.job import run_classify

    _, ref = data_and_ref
    local = run_classify(ref, models=["logreg", "knn"], jobs=1, out_dir=tmp_path / "local")
    with parallel_engine("ray"):
        remote = run_classify(ref, models=["logreg", "knn"], jobs=2, out_dir=tmp_path / "ray")
    for a, b in zip(local, remote):
        assert a.params == b.params and a.val["accuracy"] == b.val["accuracy"]


def test_cli_engine_ray_and_bad_engine(data_and_ref, tmp_path):
    data, ref = data_and_ref
    out = tmp_path / "cli.h5"
    r = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "-q", "extract", "--data", str(data), "--backbone",
                        "efficientnet_lite0", "--out", str(out), "--engine", "ray", "--workers", "1",
                        "--batch-size", "8"], capture_output=True, text=True, env={**os.environ, KILL_ENV: ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same(ref, out)
