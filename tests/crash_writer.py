"""Die like a SIGKILL in the middle of one ``StoreWriter.write`` (helper for test_reliability).

    python tests/crash_writer.py OUT K

writes rows 0-3 of a 10-row store, then starts the batch 4-7 (row 6 unreadable) and
calls ``os._exit`` just before the K-th HDF5 call of that write (a dataset write, a
resize or a flush): nothing is closed or flushed, exactly as after a kill. Prints the
number of calls when K is past the end (the write completed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from featcache.store import FeatureSpec, Manifest, open_for_write  # noqa: E402

N_ROWS = 10
FIRST, SECOND = np.arange(0, 4), np.arange(4, 8)
BAD = {6: "truncated image"}
FEATS = [FeatureSpec("fc", "input", "none", 4), FeatureSpec("layer4", "output", "avg", 6)]


def manifest() -> Manifest:
    return Manifest("/data", [f"img{i}.jpg" for i in range(N_ROWS)], np.zeros(N_ROWS, np.int64),
                    ["train"] * N_ROWS, ["a"], "fp")


def features(rows: np.ndarray, errors: dict[int, str] | None = None) -> dict[str, np.ndarray]:
    """Row r of feature j holds r + j everywhere; unreadable rows are NaN, as the runner writes them."""
    out = {}
    for j, f in enumerate(FEATS):
        v = np.tile(np.asarray(rows, "f4")[:, None] + j, (1, f.dim))
        v[np.isin(rows, list(errors or {}))] = np.nan
        out[f.key] = v
    return out


def open_store(out: str | os.PathLike):
    return open_for_write(out, manifest(), FEATS, cache_key="crash", spec={"backbone": "crash"}, provenance={},
                          default_feature=FEATS[0].key)


def _die_before(k: int) -> None:
    calls = [0]

    def wrap(method):
        def wrapped(*args, **kwargs):
            if calls[0] == k:
                os._exit(137)
            calls[0] += 1
            return method(*args, **kwargs)
        return wrapped

    h5py.Dataset.__setitem__ = wrap(h5py.Dataset.__setitem__)
    h5py.Dataset.resize = wrap(h5py.Dataset.resize)
    h5py.File.flush = wrap(h5py.File.flush)
    return calls


if __name__ == "__main__":
    out, k = sys.argv[1], int(sys.argv[2])
    w = open_store(out)
    w.write(FIRST, features(FIRST))
    calls = _die_before(k)
    w.write(SECOND, features(SECOND, BAD), errors=dict(BAD))
    print(calls[0])
