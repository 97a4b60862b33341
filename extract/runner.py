"""The extraction loop: manifest -> frozen backbone + hooks -> pooled features -> store.

Python API for notebooks::

    from extract.runner import ExtractConfig, extract
    summary = extract(ExtractConfig(data="hymenoptera", backbone="efficientnet_lite0", out="h.h5"))

A job is planned first (options checked, images listed, the backbone's facts known), then
executed: a cache hit returns before any network is prepared, and the facts come from the
model cache when they can, so a hit, or an OpenVINO run of a cached network, neither builds
the torch model nor imports torch.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from classify.table import shown_path
from extract import costs
from extract.config import ExtractConfig, ExtractOptions  # noqa: F401 - the API names them here too
from extract.devices import device_type, resolve_device, resolve_precision, resolve_runtime
from extract.loaders import default_workers, make_loader, resolve_loader
from extract.modelcache import ModelFacts, load_facts, request_key, save_facts, versions
from extract.plan import ExtractPlan, build_module, image_rows, with_runtime  # noqa: F401 - the API names them here too
from extract.quantize import calibration_rows, calibration_spec
from extract.rows import collate, collate_views
from extract.runtime import open_runtime
from extract.shards import parse_shard, shard_manifest
from extract.sources import build_manifest
from extract.spec import cache_key, cache_spec, view_layout, view_spec  # noqa: F401 - the API names them here too
from extract.version import __version__
from featcache.common.interrupt import StopAfterCurrent
from featcache.store import Manifest, open_for_write, partial_path, read_info, store_status, write_lock
from featcache.store.write import check_fits, store_bytes

log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    store: str
    status: str  # hit | new | resume
    rows: int
    written: int
    skipped: int
    seconds: float
    images_per_s: float
    file_mb: float
    features: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    views: int = 0
    runtime: str = ""
    precision: str = ""

    def line(self) -> str:
        if self.status == "hit":
            return f"cache hit: {shown_path(self.store)} already holds these {self.rows} rows ({self.file_mb:.1f} MB)"
        what = "resumed" if self.status == "resume" else "wrote"
        views = f" with {self.views} augmented views each of the train rows and every row's mirror" if self.views else ""
        how = f" [{self.runtime} {self.precision}]" if self.runtime else ""
        return (f"{what} {self.written} rows of {self.rows}{views} to {shown_path(self.store)} in {self.seconds:.1f} s "
                f"({self.images_per_s:.1f} img/s, {self.file_mb:.1f} MB){how}; skipped {self.skipped} unreadable")


def provenance_of(p: ExtractPlan) -> dict:
    v = versions()
    return {
        **p.facts.provenance(),
        "tool_version": __version__,
        "torch": v.get("torch"),
        "torchvision": v.get("torchvision"),
        "runtime": p.runtime,
        **({"openvino": v.get("openvino")} if p.runtime == "openvino" else {}),
        **({"nncf": v.get("nncf")} if p.precision == "int8" else {}),
        "python": platform.python_version(),
        "host": platform.node(),
        "device": p.device,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "config": {k: v for k, v in asdict(p.cfg).items() if k != "progress"},
        "folded_batchnorms": p.facts.folded,
    }


def _facts(cfg: ExtractConfig, backbone) -> tuple[ModelFacts, object | None]:  # noqa: ANN001
    """The backbone's facts from the model cache, or by building it (then cached for next time)."""
    if backbone is not None:
        bb, facts = build_module().prepare(backbone, cfg.layers, cfg.pools, cfg.fold_bn)
        return facts, bb
    key = request_key(cfg.backbone, cfg.weights, cfg.weights_file, cfg.layers, cfg.pools, cfg.fold_bn)
    with costs.timed("model cache lookup"):
        facts = load_facts(key)
    if facts is not None:
        return facts, None
    b = build_module()
    bb, facts = b.prepare(b.build(cfg.backbone, cfg.weights, cfg.weights_file), cfg.layers, cfg.pools, cfg.fold_bn)
    save_facts(key, facts)
    return facts, bb


def plan(cfg: ExtractConfig, manifest: Manifest | None = None, backbone=None) -> ExtractPlan:  # noqa: ANN001
    """Validate options, list the images, learn the backbone's facts; read no image yet.

    ``backbone``: an ``extract.backbones.Backbone`` to use instead of building ``cfg.backbone``
    (never taken from or put in the model cache).
    """
    device = resolve_device(cfg.device)
    runtime = resolve_runtime(cfg.runtime, device)
    precision = resolve_precision(cfg.precision, device, runtime)
    with costs.timed("manifest"):
        manifest = manifest or build_manifest(cfg.data, cfg.image_root, cfg.allow_outside_root)
    facts, bb = _facts(cfg, backbone)
    calibration = _calibration(cfg, manifest, facts) if precision == "int8" else None
    spec = cache_spec(cfg, facts, manifest, precision, runtime, calibration)
    full = manifest
    if cfg.shard:
        manifest, spec["shard"] = shard_manifest(manifest, *parse_shard(cfg.shard))
    return ExtractPlan(cfg, device, runtime, precision, manifest, facts, spec, bb, full, custom=backbone is not None)


def _calibration(cfg: ExtractConfig, manifest: Manifest, facts: ModelFacts) -> dict:
    if cfg.calibration is not None:
        return dict(cfg.calibration)
    return calibration_spec(manifest, calibration_rows(manifest), facts.transformer)


def extract(cfg: ExtractConfig, manifest: Manifest | None = None, backbone=None) -> ExtractSummary:  # noqa: ANN001
    """Run (or resume, or skip as a cache hit) one extraction job."""
    return execute(plan(cfg, manifest, backbone))


def execute(p: ExtractPlan, out: str | os.PathLike | None = None) -> ExtractSummary:
    """Write a planned job to ``out`` (default: the config's ``out``)."""
    out = Path(out or p.cfg.out)
    t0 = time.perf_counter()
    with write_lock(out, wait=True):  # a second job on the same store waits, then reuses it
        status = store_status(out, p.cache_key, p.spec, p.cfg.overwrite)
        if status == "hit":
            return make_summary(out, "hit", len(p.manifest), 0, 0.0, p)
        preflight(p, out, status)
        with open_runtime(p, out, status) as opened:
            key, p = p.cache_key, opened.plan  # another plan after a fallback to torch
            if p.cache_key != key and store_status(out, p.cache_key, p.spec, p.cfg.overwrite) == "hit":
                return make_summary(out, "hit", len(p.manifest), 0, 0.0, p)
            writer = open_for_write(out, p.manifest, p.features, cache_key=p.cache_key, spec=p.spec,
                                    provenance={**provenance_of(p), **opened.provenance},
                                    default_feature=p.default_key, dtype=p.cfg.dtype,
                                    compression=p.cfg.compression, overwrite=p.cfg.overwrite,
                                    views=view_layout(p.cfg, p.manifest), blobs=opened.blobs)
            log.info("%s %s: %d of %d rows to extract (%s, %s)", "resuming" if writer.status == "resume" else "writing",
                     shown_path(out), len(writer.pending), len(p.manifest), p.runtime, p.precision)
            try:
                written = _run_loop(p, opened.runtime, writer)
                path = writer.finish()
            finally:
                writer.close()
    return make_summary(path, writer.status, len(p.manifest), written, time.perf_counter() - t0, p)


def preflight(p: ExtractPlan, out: Path, status: str) -> None:
    """Refuse a job whose features cannot fit on the store's disk, before any network is prepared."""
    n = len(p.manifest)
    layout = view_layout(p.cfg, p.manifest)
    if status == "resume":
        try:
            left = n - read_info(partial_path(out), allow_partial=True).n_done
        except Exception:  # noqa: BLE001 - a partial that cannot be read is started over: count every row
            left = n
    else:
        left = n
    m = len(layout.rows) * left // max(n, 1) if layout is not None else 0
    need = store_bytes(left, p.features, p.cfg.dtype, layout, m)
    if status == "new":
        need += sum(len(s) for s in p.manifest.paths) + 32 * n  # paths, labels, splits, flags
    what = (f"the store ({left} rows x {sum(f.dim for f in p.features)} features"
            f"{f' + {layout.k} views' if layout is not None and layout.k else ''}, {p.cfg.dtype}"
            f"{', before ' + p.cfg.compression + ' compression' if p.cfg.compression else ''})")
    check_fits(out, need, what, p.cfg.force)


def _with_nan_rows(feats: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Error rows keep the NaN fill value."""
    return {k: np.concatenate([v, np.full((n, v.shape[1]), np.nan, np.float32)]) for k, v in feats.items()}


def _mirror(x):  # noqa: ANN001, ANN202 - (B, H, W, 3) numpy array or (pinned) tensor
    return x.flip(2) if not isinstance(x, np.ndarray) else x[:, :, ::-1]


def _cat(parts: list):  # noqa: ANN202
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def batch_features(batch: tuple, runtime, k_views: int, with_views: bool) -> tuple[dict, dict | None, tuple | None]:  # noqa: ANN001
    """(features of the good rows, mirrored-crop features with NaN error rows, (view rows, view
    features)) of one loader batch; center crops, mirrors and views share the forward passes."""
    rows, images, errors = batch[:3]
    if images is None:
        return {}, None, None
    n, parts = len(images), [images]
    view_rows, views = batch[3:5] if with_views else (None, None)
    if with_views:
        parts.append(_mirror(images))  # the mirrored center crop, for flip TTA
        if views is not None:
            parts.append(views.reshape(-1, *views.shape[2:]))
    out = runtime(_cat(parts) if len(parts) > 1 else images)
    feats = {k: v[:n] for k, v in out.items()}
    if not with_views:
        return feats, None, None
    flips = _with_nan_rows({k: v[n:2 * n] for k, v in out.items()}, len(errors))
    if views is None:
        return feats, flips, None
    m = len(view_rows)
    return feats, flips, (np.asarray(view_rows), {k: v[2 * n:].reshape(m, k_views, -1) for k, v in out.items()})


def _run_loop(p: ExtractPlan, runtime, writer) -> int:  # noqa: ANN001
    cfg, manifest = p.cfg, p.manifest
    layout = view_layout(cfg, manifest)
    dataset = image_rows(p, writer.pending)
    kind = resolve_loader(cfg.loader, p.device, runtime.name)
    workers = default_workers(p.device, kind, runtime.name) if cfg.workers is None else cfg.workers
    loader = make_loader(dataset, cfg.batch_size, collate_views if layout else collate, kind, workers,
                         pin_memory=device_type(p.device) == "cuda")
    written = 0
    bar = tqdm(total=len(dataset), unit="img", disable=not cfg.progress, dynamic_ncols=True, smoothing=0.1)
    t_first = time.perf_counter()
    # Ctrl-C stops after the batch in hand (common/interrupt.py): an interrupt at an arbitrary point can cut a
    # DataLoader worker's shared-memory handover mid-handshake or fall between the writes of one batch.
    with bar, StopAfterCurrent("the batch in hand", log) as stop:
        for batch in loader:
            if stop.requested:
                break  # leaving the loop shuts the workers (or threads) down before the interrupt propagates
            rows, images, errors = batch[:3]
            feats, flips, view_feats = batch_features(batch, runtime, cfg.views, layout is not None)
            all_rows = np.concatenate([np.asarray(rows), np.array(sorted(errors), dtype=np.int64)])
            if len(all_rows):
                writer.write(all_rows, _with_nan_rows(feats, len(errors)), errors, flips=flips, views=view_feats)
            for row, msg in errors.items():
                log.warning("skipped %s: %s", manifest.paths[row], msg)
            if t_first is not None:
                costs.add("first batch", time.perf_counter() - t_first)
                t_first = None
            written += len(rows) + len(errors)
            bar.update(len(rows) + len(errors))
    if stop.requested and written < len(dataset):
        raise KeyboardInterrupt
    return written


def make_summary(path: Path, status: str, rows: int, written: int, seconds: float, p: ExtractPlan) -> ExtractSummary:
    info = read_info(path, allow_partial=False)
    return ExtractSummary(
        store=str(path), status=status, rows=rows, written=written, skipped=len(info.errors),
        seconds=seconds, images_per_s=written / seconds if seconds else 0.0,
        file_mb=path.stat().st_size / 1e6, features={f.key: f.dim for f in p.features}, errors=info.errors,
        views=info.views, runtime=p.runtime if status != "hit" else "", precision=p.precision,
    )
