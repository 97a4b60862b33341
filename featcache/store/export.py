"""A store's feature sets as files other tools read: ``.npy`` (NumPy, FAISS) or Parquet (pandas, polars).

Only the readable rows are written (done and decoded), in row order, by chunks of rows, so
memory stays flat however large the store. Each format is one file per feature set plus
the rows' labels, paths and splits:

- ``npy``: ``<feature>.npy`` (N, D) in the store's dtype, ``labels.npy`` (int64, -1 for
  unlabeled), ``paths.npy`` and ``splits.npy`` (unicode), and ``index.json`` saying which
  file holds which feature set, the class names and the store it came from.
  ``np.load(f, mmap_mode="r")`` reads a feature file without loading it.
- ``parquet``: ``<feature>.parquet`` with columns ``path``, ``split``, ``label`` (int64),
  ``class`` (string) and ``features`` (a fixed-size list of D floats), one row group per
  chunk; ``index.json`` as for npy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from featcache.common.errors import BadInput
from featcache.common.files import atomic_write, safe_name
from featcache.store.read import read_features, read_index, read_info

FORMATS = ("npy", "parquet")
CHUNK_ROWS = 8192


def export(store: str | os.PathLike, out: str | os.PathLike, fmt: str = "npy", features: list[str] | None = None,
           chunk_rows: int = CHUNK_ROWS) -> dict:
    """Write ``features`` (default: every feature set) of ``store`` to the folder ``out``; returns the index."""
    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r} is unknown; valid: {', '.join(FORMATS)}")
    info = read_info(store)
    keys = list(info.features) if not features else features
    unknown = [k for k in keys if k not in info.features]
    if unknown:
        raise BadInput(f"{store}: no feature set {unknown[0]!r}; it has {', '.join(info.features)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = read_index(store)
    rows = np.asarray(index["rows"], dtype=np.int64)
    labels = np.asarray(index["y"], dtype=np.int64)
    files = {}
    for key in keys:
        name = f"{safe_name(key)}.{fmt}"  # fc:in/none -> fc-in_none.npy
        write = _write_npy if fmt == "npy" else _write_parquet
        write(store, key, rows, out / name, index, list(info.class_names), chunk_rows)
        files[key] = {"file": name, "dim": int(info.features[key])}
    if fmt == "npy":
        for name, values in (("labels.npy", labels), ("paths.npy", np.asarray(index["paths"], dtype=str)),
                             ("splits.npy", np.asarray(index["split"], dtype=str))):
            _save_atomic(out / name, values)
    meta = {"format": fmt, "store": str(Path(store).resolve()), "cache_key": info.cache_key, "rows": int(len(rows)),
            "class_names": list(info.class_names), "default_feature": info.default_feature, "features": files,
            **({"labels": "labels.npy", "paths": "paths.npy", "splits": "splits.npy"} if fmt == "npy" else {})}
    atomic_write(out / "index.json", json.dumps(meta, indent=2))
    return meta


def _save_atomic(path: Path, values: np.ndarray) -> None:
    part = path.with_name(path.name + ".partial")
    with open(part, "wb") as f:
        np.save(f, values)
    os.replace(part, path)


def _write_npy(store, key: str, rows: np.ndarray, path: Path, index: dict, classes: list[str],  # noqa: ANN001
               chunk_rows: int) -> None:
    first = read_features(store, key, rows[:1])
    part = path.with_name(path.name + ".partial")
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
              "shape": (len(rows),) + first.shape[1:]}
    with open(part, "wb") as f:  # plain writes, not a memmap: its dirty pages would count as memory
        np.lib.format.write_array_header_2_0(f, header)
        for start in range(0, len(rows), chunk_rows):
            f.write(np.ascontiguousarray(read_features(store, key, rows[start:start + chunk_rows])).tobytes())
    os.replace(part, path)


def _write_parquet(store, key: str, rows: np.ndarray, path: Path, index: dict, classes: list[str],  # noqa: ANN001
                   chunk_rows: int) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BadInput("--format parquet needs pyarrow: pip install pyarrow") from None
    part = path.with_name(path.name + ".partial")
    writer = None
    try:
        for start in range(0, len(rows), chunk_rows):
            stop = min(start + chunk_rows, len(rows))
            X = np.ascontiguousarray(read_features(store, key, rows[start:stop]))
            y = np.asarray(index["y"][start:stop], dtype=np.int64)
            names = [classes[i] if 0 <= i < len(classes) else None for i in y]
            feats = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])
            table = pa.table({"path": pa.array(index["paths"][start:stop].astype(str)),
                              "split": pa.array(index["split"][start:stop].astype(str)),
                              "label": pa.array(y), "class": pa.array(names, pa.string()), "features": feats})
            if writer is None:
                writer = pq.ParquetWriter(part, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    os.replace(part, path)
