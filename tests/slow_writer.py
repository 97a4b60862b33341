"""Write a synthetic store slowly, batch by batch (helper for test_faults: a store read while written).

    python tests/slow_writer.py OUT ROWS DIM BATCH PAUSE_S

Row r holds the value r in every column, so a reader can tell a right row from a torn one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from featcache.store import FeatureSpec, Manifest, open_for_write, write_lock  # noqa: E402
from tests.conftest import STORE_SPEC  # noqa: E402


def manifest(n: int) -> Manifest:
    return Manifest("/data", [f"img{i}.jpg" for i in range(n)], np.arange(n) // 2 % 2, ["train", "val"] * (n // 2),
                    ["a", "b"], "fp")


def feature(dim: int) -> FeatureSpec:
    return FeatureSpec("fc", "input", "none", dim)


def values(rows: np.ndarray, dim: int) -> np.ndarray:
    return np.repeat(np.asarray(rows, "f4")[:, None], dim, axis=1)


if __name__ == "__main__":
    out, pause = sys.argv[1], float(sys.argv[5])
    n, dim, batch = (int(a) for a in sys.argv[2:5])
    feat = feature(dim)
    with write_lock(Path(out)):
        w = open_for_write(out, manifest(n), [feat], cache_key="slow", spec={**STORE_SPEC, "backbone": "slow"}, provenance={},
                           default_feature=feat.key)
        for a in range(0, n, batch):
            rows = np.arange(a, min(a + batch, n))
            w.write(rows, {feat.key: values(rows, dim)})
            time.sleep(pause)
        w.finish()
