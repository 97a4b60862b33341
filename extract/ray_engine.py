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

from extract.runner import ExtractConfig, ExtractSummary, Plan, _provenance, _summary, plan
from extract.store import open_for_write, write_lock

log = logging.getLogger(__name__)
KILL_ENV = "FEATCACHE_TEST_KILL_WORKER"  # tests: "<marker file>:<batch number>" kills one actor once


class _Extractor:
    """A Ray Data actor: one frozen backbone per worker, reused for every batch it gets."""

    def __init__(self, cfg: dict, precision: str, keys: dict[str, int]):
        import torch

        from extract.backbones import create_backbone
        from extract.hooks import FeatureHooks
        from extract.preprocess import build_transform
        from extract.runner import _autocast, pick_device, resolve_taps

        self.cfg = ExtractConfig(**cfg)
        self.device = pick_device("cuda" if torch.cuda.is_available() and self.cfg.device in ("auto", "cuda")
                                  else "cpu")
        bb = create_backbone(self.cfg.backbone, self.cfg.weights, self.cfg.weights_file)
        taps = resolve_taps(bb, self.cfg.layers)
        if self.cfg.fold_bn:  # as plan() does, so a Ray store holds the same numbers as a local one
            from extract.fuse import fold_batchnorm

            bb.model, _ = fold_batchnorm(bb.model, taps, bb.transform.crop)
        self.model = bb.model.to(self.device)
        if self.cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.hooks = FeatureHooks(self.model, taps, self.cfg.pools).__enter__()
        self.transform = build_transform(bb.transform)
        self.draft = max(bb.transform.resize, bb.transform.crop) if self.cfg.draft else None
        self.autocast = lambda: _autocast(self.device, precision)
        self.keys = keys
        self.pool = ThreadPoolExecutor(max_workers=max(1, int(os.environ.get("FEATCACHE_DECODE_THREADS", "2"))))
        self.batches = 0

    def _load(self, path: str):
        from extract.images import ImageError, load_image

        try:
            img = load_image(path, max_pixels=self.cfg.max_pixels, draft_size=self.draft)
            return self.transform(img), ""
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
        import torch

        self.batches += 1
        self._maybe_die()
        loaded = list(self.pool.map(self._load, batch["path"]))
        good = [i for i, (x, _) in enumerate(loaded) if x is not None]
        out = {"row": np.asarray(batch["row"], dtype=np.int64), "error": np.array([e for _, e in loaded], dtype=object)}
        dims = self.keys
        feats = {k: np.full((len(loaded), d), np.nan, np.float32) for k, d in dims.items()}
        if good:
            x = torch.stack([loaded[i][0] for i in good]).to(self.device)
            if self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), self.autocast():
                res = self.hooks(x)
            for k in dims:
                feats[k][good] = res[k].float().cpu().numpy()
        for i, k in enumerate(dims):
            out[f"f{i}"] = feats[k]
        return out


def extract_ray(cfg: ExtractConfig, *, address: str | None = None, workers: int = 2, gpus_per_worker: float = 0,
                cpus_per_worker: float = 1) -> ExtractSummary:
    """Plan locally (validates everything before the cluster is touched), then run the rows on Ray."""
    if cfg.views:
        raise ValueError("--views with --engine ray is not supported; extract views with the local engine "
                         "(or --shard K/N on each machine)")
    p = plan(cfg)
    out = Path(cfg.out)
    t0 = time.perf_counter()
    with write_lock(out):
        writer = open_for_write(out, p.manifest, p.features, cache_key=p.cache_key, spec=p.spec,
                                provenance={**_provenance(cfg, p.backbone, p.device), "engine": "ray",
                                            "folded_batchnorms": p.folded},
                                default_feature=p.default_key, dtype=cfg.dtype, compression=cfg.compression,
                                overwrite=cfg.overwrite)
        if writer.status == "hit":
            return _summary(out, "hit", len(p.manifest), 0, 0.0, p.features)
        try:
            written = _run_on_ray(p, writer, address, workers, gpus_per_worker, cpus_per_worker)
            path = writer.finish()
        finally:
            writer.close()
    return _summary(path, writer.status, len(p.manifest), written, time.perf_counter() - t0, p.features)


def _run_on_ray(p: Plan, writer, address: str | None, workers: int, gpus: float, cpus: float) -> int:  # noqa: ANN001
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install -r requirements-ray.txt") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": max(workers * cpus, 1)}))
    ray.data.DataContext.get_current().enable_progress_bars = bool(p.cfg.progress)
    root = Path(p.manifest.root)
    items = [{"row": int(r), "path": str(root / p.manifest.paths[r])} for r in writer.pending]
    keys = {f.key: f.dim for f in p.features}
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), workers * 8)))
    ds = ds.map_batches(_Extractor, fn_constructor_kwargs={"cfg": asdict(p.cfg), "precision": p.precision,
                                                           "keys": keys},
                        batch_size=p.cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                        num_gpus=gpus or None, num_cpus=cpus, batch_format="numpy")
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
