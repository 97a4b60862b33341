"""Shards: a deterministic 1/N slice of a manifest per job, and a checked merge into one store.

Shard K of N (0-based, as Slurm array and torchrun ranks count) holds the contiguous rows
``[K*total//N, (K+1)*total//N)``, so a merge is a concatenation in shard order and the
merged store has the same rows, order and cache key as a single-process run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from extract.spec import cache_key
from featcache.common.errors import BadInput
from featcache.store import ERROR_DTYPE, Manifest, StoreError, partial_path, read_blob, read_info, write_lock

_STR = h5py.string_dtype("utf-8")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise BadInput(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise BadInput(f"--shard {text!r}: expected K/N with 0 <= K < N (shards count from 0)")
    return k, n


def shard_bounds(total: int, k: int, n: int) -> tuple[int, int]:
    return k * total // n, (k + 1) * total // n


def shard_manifest(m: Manifest, k: int, n: int) -> tuple[Manifest, dict]:
    """The slice for shard k/n; its fingerprint stays the whole manifest's, so keys stay comparable."""
    start, stop = shard_bounds(len(m), k, n)
    if start == stop:
        raise BadInput(f"--shard {k}/{n}: shard is empty ({len(m)} images for {n} shards)")
    sub = replace(m, paths=m.paths[start:stop], labels=m.labels[start:stop], splits=m.splits[start:stop])
    return sub, {"index": k, "count": n, "start": start, "stop": stop, "total": len(m)}


def base_spec(spec: dict) -> dict:
    """The spec without its shard: what every shard of one job shares, and the merged store's spec."""
    return {k: v for k, v in spec.items() if k != "shard"}


def _check_shards(paths: list[Path]) -> list:
    infos = [read_info(p, allow_partial=False) for p in paths]
    for info in infos:
        if not info.complete:
            raise StoreError(f"{info.path}: shard is incomplete; rerun its extraction first")
        if "shard" not in info.spec:
            raise StoreError(f"{info.path}: not a shard (extracted without --shard)")
        if info.views or info.flip:
            raise StoreError(f"{info.path}: holds augmented views; merging view stores is not supported "
                             "(extract --views in one job)")
    ref = base_spec(infos[0].spec)
    for info in infos[1:]:
        other = base_spec(info.spec)
        diff = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
        if diff:
            raise StoreError(f"{info.path}: made with another spec than {infos[0].path} (differs in: {', '.join(diff)})")
    if "calibration" in ref:  # int8: every shard must have run the very same quantized network
        nets = {i.path: read_blob(i.path, "openvino_int8.bin", allow_partial=False) for i in infos}
        if len(set(nets.values())) > 1:
            raise StoreError(f"{infos[0].path} and the other shards were made by different int8 networks "
                             "(quantized separately); extract the shards with one shared $FEATCACHE_HOME so they "
                             "quantize once")
    counts = {i.spec["shard"]["count"] for i in infos}
    if len(counts) > 1:
        raise StoreError(f"shards come from different splits into N: {sorted(counts)}")
    (n,) = counts
    seen: dict[int, Path] = {}
    for info in infos:
        k = info.spec["shard"]["index"]
        if k in seen:
            raise StoreError(f"shard {k}/{n} given twice: {seen[k]} and {info.path} (rows overlap)")
        seen[k] = info.path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise StoreError(f"missing shard(s) {', '.join(f'{k}/{n}' for k in missing)}: rows would not cover the manifest")
    return sorted(infos, key=lambda i: i.spec["shard"]["index"])


def merge(shards: list[str | os.PathLike], out: str | os.PathLike, *, copy: bool = False,
          overwrite: bool = False) -> Path:
    """Join complete shards into one store: virtual datasets over the shards (no copy) or a copy."""
    if not shards:
        raise BadInput("merge: no shard stores given")
    out = Path(out)
    infos = _check_shards([Path(s) for s in shards])
    spec = base_spec(infos[0].spec)
    if out.exists() and not overwrite:
        raise StoreError(f"{out}: exists; pass --overwrite to replace it")
    total = infos[0].spec["shard"]["total"]
    with write_lock(out):
        tmp = partial_path(out)
        with h5py.File(tmp, "w") as f:
            files = [h5py.File(i.path, "r") for i in infos]
            try:
                _write_merged(f, files, infos, spec, cache_key(spec), total, out.parent, copy)
            finally:
                for g in files:
                    g.close()
        os.replace(tmp, out)
    return out


def _write_merged(f: h5py.File, files: list[h5py.File], infos: list, spec: dict, key: str, total: int,
                  out_dir: Path, copy: bool) -> None:
    first = files[0]
    for name, value in first.attrs.items():
        f.attrs[name] = value
    f.attrs.update(cache_key=key, spec=json.dumps(spec, sort_keys=True), complete=True,
                   merged_from=json.dumps([str(i.path) for i in infos]),
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    f.create_dataset("paths", data=np.concatenate([g["paths"][:] for g in files]).astype(object), dtype=_STR)
    f.create_dataset("split", data=np.concatenate([g["split"][:] for g in files]).astype(object), dtype=_STR)
    for name in ("labels", "done", "ok"):
        f.create_dataset(name, data=np.concatenate([g[name][:] for g in files]))
    errors = [np.array([(r + i.spec["shard"]["start"], m) for r, m in g["errors"][:]], dtype=ERROR_DTYPE)
              for g, i in zip(files, infos)]
    err = np.concatenate(errors) if errors else np.empty(0, ERROR_DTYPE)
    f.create_dataset("errors", data=err, maxshape=(None,), chunks=(256,))
    if "blobs" in first:  # the int8 network, the same in every shard (checked)
        first.copy(first["blobs"], f, name="blobs")
    if len(f["paths"]) != total:
        raise StoreError(f"merged rows {len(f['paths'])} != manifest rows {total}")
    for key_ in infos[0].features:
        src = [g[f"features/{key_}"] for g in files]
        dim, dtype = src[0].shape[1], src[0].dtype
        name = f"features/{key_}"
        if copy:
            ds = f.create_dataset(name, shape=(total, dim), dtype=dtype, chunks=src[0].chunks,
                                  compression=src[0].compression, fletcher32=True)
            row = 0
            for s in src:
                for a in range(0, s.shape[0], 8192):
                    block = s[a:a + 8192]
                    ds[row + a: row + a + len(block)] = block
                row += s.shape[0]
        else:
            layout = h5py.VirtualLayout(shape=(total, dim), dtype=dtype)
            row = 0
            for s, info in zip(src, infos):
                rel = os.path.relpath(info.path.resolve(), out_dir.resolve())
                layout[row: row + s.shape[0]] = h5py.VirtualSource(rel, name, shape=s.shape)
                row += s.shape[0]
            ds = f.create_virtual_dataset(name, layout, fillvalue=np.nan)
        for a, v in src[0].attrs.items():
            ds.attrs[a] = v
