"""Two jobs at once on one cache: both finish, one computes, the other reuses, and the store is the one a
job alone would have written.

Users launch a sweep of ``run`` commands over one ``--cache-dir`` (and one ``$FEATCACHE_HOME``, where the
converted networks live); the second job must wait for the first's store, never fail, and never see or
leave half of it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from featcache.store import write_lock

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


def _pipeline(*args: str, home: Path, stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "FEATCACHE_HOME": str(home)}
    return subprocess.Popen([sys.executable, "pipeline.py", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=stderr)


def _features(store: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(store, "r") as f:
        f["features"].visititems(lambda name, obj: found.update({name: obj[...]})
                                 if isinstance(obj, h5py.Dataset) else None)
    assert found
    return found


def _finish(p: subprocess.Popen, timeout: float = 400) -> tuple[str, str]:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, (err or "")[-3000:]
    return out, err or ""


def test_two_runs_sharing_a_cache_dir_both_finish_on_one_store(tmp_path: Path) -> None:
    cache, home = tmp_path / "features", tmp_path / "home"  # home starts empty: both also race to convert
    common = ["run", "-q", "--data", str(SAMPLE), "--backbones", "efficientnet_lite0", "--models", "logreg",
              "--no-few-shot", "--no-ensembles", "--no-audit", "--cache-dir", str(cache)]
    jobs = [_pipeline(*common, "--out", str(tmp_path / f"run{i}"), home=home) for i in (1, 2)]
    for p in jobs:
        _finish(p)
    stores = sorted(cache.rglob("*.h5"))
    assert len(stores) == 1, stores  # one store, computed once
    leftovers = [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".h5"]
    assert not [p for p in leftovers if p.name.endswith((".partial", ".lock"))], leftovers
    results = [json.loads((tmp_path / f"run{i}" / "results.json").read_text()) for i in (1, 2)]
    assert [r["extraction"][0]["store"] for r in results] == [str(stores[0])] * 2
    scores = [[(row["model"], row["feature"], row["val"]["accuracy"], row["params"]) for row in r["results"]]
              for r in results]
    assert scores[0] == scores[1] and scores[0]

    solo = _pipeline("extract", "-q", "--data", str(SAMPLE), "--backbone", "efficientnet_lite0",
                     "--out", str(tmp_path / "solo.h5"), home=tmp_path / "solo-home")
    _finish(solo)
    shared, alone = _features(stores[0]), _features(tmp_path / "solo.h5")
    assert shared.keys() == alone.keys()
    for k in shared:
        assert np.array_equal(shared[k], alone[k]), k


def test_a_second_extract_on_one_store_waits_then_reuses_it(tmp_path: Path) -> None:
    """The lock is held here while two extracts start, so both are seen waiting; once it is released,
    one writes the store and the other finds it a hit."""
    out, home = tmp_path / "s.h5", tmp_path / "home"
    logs = [tmp_path / f"err{i}" for i in (1, 2)]
    with write_lock(out):
        files = [open(log, "w") for log in logs]
        jobs = [_pipeline("-v", "extract", "--data", str(SAMPLE), "--backbone", "efficientnet_lite0",
                          "--out", str(out), home=home, stderr=f) for f in files]
        deadline = time.monotonic() + 120
        while not all("waiting for it" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            assert all(p.poll() is None for p in jobs), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
        assert not out.exists()
    outs = [_finish(p)[0] for p in jobs]
    for f in files:
        f.close()
    assert sorted("cache hit" in o for o in outs) == [False, True], outs
    assert any(o.startswith("wrote 131 rows of 131") for o in outs), outs
    assert not Path(str(out) + ".lock").exists() and out.is_file()
