"""``extract --engine ray``: the same extraction fanned out over a Ray cluster with Ray Data.

Actors load the backbone once and turn batches of (row, path) into pooled features;
the driver streams their output into the one store by row index, exactly as the local
runner does, so resume, cache hits, the error table and the cache key are unchanged.
Without ``--address`` a local Ray instance is started, so the command works on a laptop.

Why not per-worker shard files merged afterwards: on a cluster the workers' disks are
not the driver's, so shard files would need a shared filesystem; features are small
(~5 KB per image at 1280-d float32), so sending them back to one writer is cheap and
keeps the single-writer store. Shards (``--shard K/N`` + ``pipeline.py merge``) remain
for schedulers other than Ray.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from extract import openvino_runtime as ovr
from extract.images import ImageError, load_image
from extract.plan import ExtractPlan
from extract.runner import ExtractConfig, ExtractSummary, make_summary, plan, provenance_of
from extract.runtime import network_bytes
from extract.transforms import CenterCrop, TransformSpec
from featcache.common.errors import BadInput
from featcache.store import open_for_write, store_status, write_lock

log = logging.getLogger(__name__)
KILL_ENV = "FEATCACHE_TEST_KILL_WORKER"  # tests: "<marker file>:<batch number>" kills one actor once


class _Extractor:
    """A Ray Data actor: one network per worker, reused for every batch it gets.

    On OpenVINO the driver sends the network itself (IR bytes), so every worker runs the very
    network the store records, int8 included; on torch each worker builds and folds the backbone.
    """

    def __init__(self, cfg: dict, runtime: str, precision: str, keys: dict[str, int], transform: dict,
                 network: tuple[bytes, bytes] | None = None, threads: int = 1):
        self.cfg = ExtractConfig(**cfg)
        spec = TransformSpec.from_dict(transform)
        if runtime == "openvino":
            # as many threads as the actor's CPUs: several actors on one node must not oversubscribe it
            compiled = ovr.compile_network(ovr.from_bytes(*network), precision, threads=threads)
            self.runtime = ovr.OpenVINORuntime(compiled, list(keys), self.cfg.batch_size)
        else:
            import torch

            from extract.build import build, prepare, taps_of
            from extract.torch_runtime import TorchRuntime

            device = "cuda" if torch.cuda.is_available() and self.cfg.device in ("auto", "cuda") else "cpu"
            torch.set_num_threads(threads)
            bb, facts = prepare(build(self.cfg.backbone, self.cfg.weights, self.cfg.weights_file), self.cfg.layers,
                                self.cfg.pools, self.cfg.fold_bn)  # as plan() does: the same numbers as a local run
            self.runtime = TorchRuntime(bb.model, taps_of(facts), self.cfg.pools, spec, device, precision,
                                        self.cfg.batch_size, self.cfg.channels_last)
        self.crop = CenterCrop(spec)
        self.draft = max(spec.resize, spec.crop) if self.cfg.draft else None
        self.keys = keys
        self.pool = ThreadPoolExecutor(max_workers=max(1, int(os.environ.get("FEATCACHE_DECODE_THREADS", "2"))))
        self.batches = 0

    def _load(self, path: str):
        try:
            img = load_image(path, max_pixels=self.cfg.max_pixels, draft_size=self.draft)
            return self.crop(img), ""
        except ImageError as e:
            return None, str(e)
        except Exception as e:  # noqa: BLE001 - one odd image must not end the job
            return None, f"{type(e).__name__}: {e}"

    def _maybe_die(self) -> None:
        spec = os.environ.get(KILL_ENV)
        if spec:
            marker, after = spec.rsplit(":", 1)
            if self.batches >= int(after) and not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)  # a crashed worker, as a lost node or OOM kill would look

    def __call__(self, batch: dict) -> dict:
        self.batches += 1
        self._maybe_die()
        loaded = list(self.pool.map(self._load, batch["path"]))
        good = [i for i, (x, _) in enumerate(loaded) if x is not None]
        out = {"row": np.asarray(batch["row"], dtype=np.int64), "error": np.array([e for _, e in loaded], dtype=object)}
        feats = {k: np.full((len(loaded), d), np.nan, np.float32) for k, d in self.keys.items()}
        if good:
            res = self.runtime(np.stack([loaded[i][0] for i in good]))
            for k in self.keys:
                feats[k][good] = res[k]
        for i, k in enumerate(self.keys):
            out[f"f{i}"] = feats[k]
        return out
def extract_ray(cfg: ExtractConfig, *, address: str | None = None, workers: int = 2, gpus_per_worker: float = 0,
                cpus_per_worker: float = 1) -> ExtractSummary:
    """ExtractPlan locally (validates everything before the cluster is touched), then run the rows on Ray."""
    if cfg.views:
        raise BadInput("--views with --engine ray is not supported; extract views with the local engine "
                         "(or --shard K/N on each machine)")
    p = plan(cfg)
    out = Path(cfg.out)
    t0 = time.perf_counter()
    with write_lock(out):
        status = store_status(out, p.cache_key, p.spec, cfg.overwrite)
        if status == "hit":
            return make_summary(out, "hit", len(p.manifest), 0, 0.0, p)
        network, provenance, blobs = network_bytes(p, out, status) if p.runtime == "openvino" else (None, {}, {})
        writer = open_for_write(out, p.manifest, p.features, cache_key=p.cache_key, spec=p.spec,
                                provenance={**provenance_of(p), **provenance, "engine": "ray"},
                                default_feature=p.default_key, dtype=cfg.dtype, compression=cfg.compression,
                                overwrite=cfg.overwrite, blobs=blobs)
        try:
            written = _run_on_ray(p, writer, network, address, workers, gpus_per_worker, cpus_per_worker)
            path = writer.finish()
        finally:
            writer.close()
    return make_summary(path, writer.status, len(p.manifest), written, time.perf_counter() - t0, p)


def _run_on_ray(p: ExtractPlan, writer, network, address: str | None, workers: int, gpus: float,  # noqa: ANN001
                cpus: float) -> int:
    try:
        import ray
    except ImportError:
        raise BadInput("--engine ray needs Ray: pip install 'ray[data]' (or 'featcache[ray]')") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": max(workers * cpus, 1)}))
    ray.data.DataContext.get_current().enable_progress_bars = bool(p.cfg.progress)
    root = Path(p.manifest.root)
    items = [{"row": int(r), "path": str(root / p.manifest.paths[r])} for r in writer.pending]
    keys = {f.key: f.dim for f in p.features}
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), workers * 8)))
    kwargs = {"cfg": asdict(p.cfg), "runtime": p.runtime, "precision": p.precision, "keys": keys,
              "transform": p.facts.transform.to_dict(), "network": network, "threads": max(1, int(cpus))}
    ds = ds.map_batches(_Extractor, fn_constructor_kwargs=kwargs, batch_size=p.cfg.batch_size,
                        compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus or None, num_cpus=cpus,
                        batch_format="numpy")
    written = 0
    names = list(keys)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows = batch["row"]
        errors = {int(r): str(e) for r, e in zip(rows, batch["error"]) if e}
        writer.write(rows, {k: batch[f"f{i}"] for i, k in enumerate(names)}, errors)
        for r, e in errors.items():
            log.warning("skipped %s: %s", p.manifest.paths[r], e)
        written += len(rows)
    return written
