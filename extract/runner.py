"""The extraction loop: manifest -> frozen backbone + hooks -> pooled features -> store.

Python API for notebooks::

    from extract.runner import ExtractConfig, extract
    summary = extract(ExtractConfig(data="hymenoptera", backbone="efficientnet_lite0", out="h.h5"))
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from extract import __version__
from extract.backbones import Backbone, TransformSpec, create_backbone
from extract.fuse import fold_batchnorm
from extract.hooks import FeatureHooks, Tap
from extract.loaders import check_loader, default_workers, make_loader, resolve_loader
from extract.preprocess import ImageRows, Uint8Crop, collate, collate_views, normalize_batch
from extract.sources import build_manifest
from extract.store import FeatureSpec, Manifest, ViewLayout, open_for_write, write_lock
from extract.views import DEFAULT_RATIO, DEFAULT_SCALE, view_transform

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class ExtractConfig:
    """Every option of an extraction; the ones that change numbers go into the cache key."""

    data: str
    backbone: str
    out: str
    layers: tuple[str, ...] = ("default",)
    pools: tuple[str, ...] = ("avg",)
    weights: str = "DEFAULT"
    weights_file: str | None = None
    batch_size: int = 32
    workers: int | None = None  # None: chosen for the device and core count
    loader: str = "auto"  # inline / thread / process decoding (auto: inline on a CPU); not in the cache key
    device: str = "auto"
    precision: str = "fp32"
    dtype: str = "float32"  # storage dtype of the features
    compression: str | None = None
    channels_last: bool = True
    fold_bn: bool = True  # fold eval BatchNorms into their convolutions (faster; features change ~1e-6)
    max_pixels: int | None = 178_956_970
    draft: bool = False  # JPEG draft decoding at reduced scale (faster, numbers change slightly)
    image_root: str | None = None
    allow_outside_root: bool = False
    overwrite: bool = False
    shard: str | None = None  # "K/N": this job's 1/N slice of the manifest (0-based K)
    views: int = 0  # augmented views (RandomResizedCrop + flip) stored per train row; >0 also stores flips
    view_seed: int = 0
    view_splits: tuple[str, ...] = ("train",)
    view_scale: tuple[float, float] = DEFAULT_SCALE  # RandomResizedCrop's area range
    flip: bool = False  # store every row's mirrored crop (flip TTA); implied by views > 0
    progress: bool = True


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

    def line(self) -> str:
        if self.status == "hit":
            return f"cache hit: {self.store} already holds these {self.rows} rows ({self.file_mb:.1f} MB)"
        what = "resumed" if self.status == "resume" else "wrote"
        views = f" with {self.views} augmented views each of the train rows and every row's mirror" if self.views else ""
        return (f"{what} {self.written} rows of {self.rows}{views} to {self.store} in {self.seconds:.1f} s "
                f"({self.images_per_s:.1f} img/s, {self.file_mb:.1f} MB); skipped {self.skipped} unreadable")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    return device


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_taps(backbone: Backbone, layers: tuple[str, ...]) -> list[Tap]:
    names = [backbone.default_layer if name in ("default", "") else name for name in layers]
    taps = [Tap.parse(n) for n in dict.fromkeys(names)]
    return taps


def probe_features(backbone: Backbone, taps: list[Tap], pools: tuple[str, ...]) -> list[FeatureSpec]:
    """One forward on a dummy image: validates layers and learns each feature's dim before any I/O."""
    crop = backbone.transform.crop
    with FeatureHooks(backbone.model, taps, pools) as hooks, torch.inference_mode():
        out = hooks(torch.zeros(1, 3, crop, crop))
        shapes = dict(hooks.raw_shapes)
    specs = []
    for key, value in out.items():
        name, pool = key.rsplit("/", 1)
        tap = next(t for t in taps if t.name == name)
        specs.append(FeatureSpec(tap.layer, tap.side, pool, int(value.shape[1]), shapes[tap]))
    return specs


def cache_spec(cfg: ExtractConfig, backbone: Backbone, features: list[FeatureSpec], manifest: Manifest,
               precision: str) -> dict:
    """Everything that decides the stored numbers. Missing one here is the stale-cache bug."""
    return {
        "backbone": backbone.name,
        "weights": backbone.weights,
        "weights_sha256": backbone.weights_sha256,
        "features": [f.key for f in features],
        "transform": backbone.transform.to_dict(),
        "draft": cfg.draft,
        "max_pixels": cfg.max_pixels,
        "precision": precision,
        "fold_bn": cfg.fold_bn,
        "dtype": cfg.dtype,
        "manifest": manifest.fingerprint,
        "rows": len(manifest),
        **({"views": view_spec(cfg)} if cfg.views or cfg.flip else {}),  # absent when off: plain stores keep keys
    }


def view_spec(cfg: ExtractConfig) -> dict:
    return {"k": cfg.views, "seed": cfg.view_seed, "scale": list(cfg.view_scale), "ratio": list(DEFAULT_RATIO),
            "splits": list(cfg.view_splits), "flip": True}


def view_layout(cfg: ExtractConfig, manifest: Manifest) -> ViewLayout | None:
    """The rows that get views: those of ``view_splits`` (a single-tree store's rows are all "train")."""
    if not (cfg.views or cfg.flip):
        return None
    rows = np.flatnonzero(np.isin(np.asarray(manifest.splits, dtype=object), list(cfg.view_splits)))
    attrs = {k: v for k, v in view_spec(cfg).items() if k != "k"}
    return ViewLayout(rows=rows.astype(np.int64), k=cfg.views, flip=True, attrs=attrs)


def cache_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _provenance(cfg: ExtractConfig, backbone: Backbone, device: torch.device) -> dict:
    import torchvision

    return {
        **backbone.provenance(),
        "tool_version": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "device": str(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
    }


@dataclass
class Plan:
    """A resolved job: everything known before the first image is read."""

    cfg: ExtractConfig
    device: torch.device
    precision: str
    manifest: Manifest
    backbone: Backbone
    taps: list[Tap]
    features: list[FeatureSpec]
    default_key: str
    spec: dict
    folded: int = 0  # BatchNorms folded into convolutions

    @property
    def cache_key(self) -> str:
        return cache_key(self.spec)


def plan(cfg: ExtractConfig, manifest: Manifest | None = None, backbone: Backbone | None = None) -> Plan:
    """Validate options, list the images, build the backbone and probe its layers; read no image yet."""
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size {cfg.batch_size}: must be >= 1")
    if cfg.workers is not None and cfg.workers < 0:
        raise ValueError(f"--workers {cfg.workers}: must be >= 0 (0 decodes in the main process)")
    check_loader(cfg.loader)
    if cfg.max_pixels is not None and cfg.max_pixels < 1:
        raise ValueError(f"--max-pixels {cfg.max_pixels}: must be a positive pixel count (0: no limit)")
    for name, value in (("--views", cfg.views), ("--view-seed", cfg.view_seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} {value!r}: must be an integer >= 0")
    lo, hi = cfg.view_scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"--view-scale {lo},{hi}: expected 0 < min <= max <= 1 (fractions of the image area)")
    if cfg.views and not cfg.view_splits:
        raise ValueError("--view-splits: name at least one split (e.g. train)")
    if cfg.dtype not in ("float32", "float16"):
        raise ValueError(f"--dtype {cfg.dtype!r}: expected float32 or float16")
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    manifest = manifest or build_manifest(cfg.data, cfg.image_root, cfg.allow_outside_root)
    backbone = backbone or create_backbone(cfg.backbone, cfg.weights, cfg.weights_file)
    taps = resolve_taps(backbone, cfg.layers)
    features = probe_features(backbone, taps, cfg.pools)
    default_key = next(f.key for f in features if f.key.rsplit("/", 1)[0] == taps[0].name)
    spec = cache_spec(cfg, backbone, features, manifest, precision)
    if cfg.shard:
        from extract.shards import parse_shard, shard_manifest

        manifest, spec["shard"] = shard_manifest(manifest, *parse_shard(cfg.shard))
    folded = 0
    if cfg.fold_bn:
        model, folded = fold_batchnorm(backbone.model, taps, backbone.transform.crop)
        backbone = dataclasses.replace(backbone, model=model)
    return Plan(cfg, device, precision, manifest, backbone, taps, features, default_key, spec, folded)


def extract(cfg: ExtractConfig, manifest: Manifest | None = None, backbone: Backbone | None = None) -> ExtractSummary:
    """Run (or resume, or skip as a cache hit) one extraction job."""
    return execute(plan(cfg, manifest, backbone))


def execute(p: Plan, out: str | os.PathLike | None = None) -> ExtractSummary:
    """Write a planned job to ``out`` (default: the config's ``out``)."""
    out = Path(out or p.cfg.out)
    t0 = time.perf_counter()
    with write_lock(out):
        writer = open_for_write(out, p.manifest, p.features, cache_key=p.cache_key, spec=p.spec,
                                provenance={**_provenance(p.cfg, p.backbone, p.device), "folded_batchnorms": p.folded},
                                default_feature=p.default_key,
                                dtype=p.cfg.dtype, compression=p.cfg.compression, overwrite=p.cfg.overwrite,
                                views=view_layout(p.cfg, p.manifest))
        if writer.status == "hit":
            return _summary(out, "hit", len(p.manifest), 0, 0.0, p.features)
        log.info("%s %s: %d of %d rows to extract", "resuming" if writer.status == "resume" else "writing",
                 out, len(writer.pending), len(p.manifest))
        try:
            written = _run_loop(p.cfg, p.backbone, p.taps, p.manifest, writer, p.device, p.precision)
            path = writer.finish()
        finally:
            writer.close()
    return _summary(path, writer.status, len(p.manifest), written, time.perf_counter() - t0, p.features)


class _StopAtBatchEnd:
    """Ctrl-C during the loop stops after the batch in hand (a second Ctrl-C stops at once).

    A KeyboardInterrupt raised at an arbitrary point can cut a DataLoader worker's
    shared-memory handover mid-handshake (the worker then prints a traceback) or fall
    between the writes of one batch. Only installed over Python's default handler, in
    the main thread; DataLoader workers ignore SIGINT and are shut down by the loader, and
    Python delivers signals to the main thread only, so decode threads never see one.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopAtBatchEnd":
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _forward(hooks: FeatureHooks, u: torch.Tensor, spec: TransformSpec, cfg: ExtractConfig, device: torch.device,
             precision: str) -> dict[str, np.ndarray]:
    """Pooled features of uint8 crops ``u`` (B, H, W, 3) as float32 numpy, ``batch_size`` per forward.

    Normalized on the device: a quarter of the bytes to copy, and channels_last for free.
    """
    parts: list[dict[str, torch.Tensor]] = []
    layout = torch.channels_last if cfg.channels_last and device.type != "mps" else torch.contiguous_format
    for chunk in u.split(cfg.batch_size):
        chunk = normalize_batch(chunk.to(device, non_blocking=True), spec).contiguous(memory_format=layout)
        with _autocast(device, precision):
            parts.append({k: v.float().cpu() for k, v in hooks(chunk).items()})
    return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}


def _with_nan_rows(feats: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Error rows keep the NaN fill value."""
    return {k: np.concatenate([v, np.full((n, v.shape[1]), np.nan, np.float32)]) for k, v in feats.items()}


def _batch_features(batch: tuple, hooks: FeatureHooks, spec: TransformSpec, cfg: ExtractConfig,
                    device: torch.device, precision: str, with_views: bool) -> tuple[dict, dict | None, tuple | None]:
    """(features of the good rows, mirrored-crop features with NaN error rows, (view rows, view
    features)) of one loader batch; center crops, mirrors and views share the forward passes."""
    rows, images, errors = batch[:3]
    if images is None:
        return {}, None, None
    n, parts = len(images), [images]
    view_rows, views = batch[3:5] if with_views else (None, None)
    if with_views:
        parts.append(images.flip(2))  # the mirrored center crop (B, H, W, 3), for flip TTA
        if views is not None:
            parts.append(views.flatten(0, 1))
    out = _forward(hooks, torch.cat(parts) if len(parts) > 1 else images, spec, cfg, device, precision)
    feats = {k: v[:n] for k, v in out.items()}
    if not with_views:
        return feats, None, None
    flips = _with_nan_rows({k: v[n:2 * n] for k, v in out.items()}, len(errors))
    if views is None:
        return feats, flips, None
    m = len(view_rows)
    return feats, flips, (view_rows.numpy(), {k: v[2 * n:].reshape(m, cfg.views, -1) for k, v in out.items()})


def _run_loop(cfg: ExtractConfig, backbone: Backbone, taps: list[Tap], manifest: Manifest, writer,
              device: torch.device, precision: str) -> int:
    model = backbone.model.to(device)
    if cfg.channels_last and device.type != "mps":
        model = model.to(memory_format=torch.channels_last)
    draft = max(backbone.transform.resize, backbone.transform.crop) if cfg.draft else None
    layout = view_layout(cfg, manifest)
    spec = backbone.transform
    views = [view_transform(spec, cfg.view_seed, v, scale=cfg.view_scale, uint8=True) for v in range(cfg.views)]
    dataset = ImageRows(manifest.root, manifest.paths, writer.pending, Uint8Crop(spec), cfg.max_pixels, draft,
                        views=views, view_rows=layout.rows if layout else ())
    kind = resolve_loader(cfg.loader, device)
    workers = default_workers(device, kind) if cfg.workers is None else cfg.workers
    loader = make_loader(dataset, cfg.batch_size, collate_views if layout else collate, kind, workers,
                         pin_memory=device.type == "cuda")
    written = 0
    bar = tqdm(total=len(dataset), unit="img", disable=not cfg.progress, dynamic_ncols=True, smoothing=0.1)
    with FeatureHooks(model, taps, cfg.pools) as hooks, torch.inference_mode(), bar, _StopAtBatchEnd() as stop:
        for batch in loader:
            if stop.requested:
                break  # leaving the loop shuts the workers (or threads) down before the interrupt propagates
            rows, images, errors = batch[:3]
            feats, flips, view_feats = _batch_features(batch, hooks, spec, cfg, device, precision, layout is not None)
            all_rows = np.concatenate([rows.numpy(), np.array(sorted(errors), dtype=np.int64)])
            if len(all_rows):
                writer.write(all_rows, _with_nan_rows(feats, len(errors)), errors, flips=flips, views=view_feats)
            for row, msg in errors.items():
                log.warning("skipped %s: %s", manifest.paths[row], msg)
            written += len(rows) + len(errors)
            bar.update(len(rows) + len(errors))
    if stop.requested and written < len(dataset):
        raise KeyboardInterrupt
    return written


def _summary(path: Path, status: str, rows: int, written: int, seconds: float,
             features: list[FeatureSpec]) -> ExtractSummary:
    from extract.store import read_info

    info = read_info(path, allow_partial=False)
    return ExtractSummary(
        store=str(path), status=status, rows=rows, written=written, skipped=len(info.errors),
        seconds=seconds, images_per_s=written / seconds if seconds else 0.0,
        file_mb=path.stat().st_size / 1e6, features={f.key: f.dim for f in features}, errors=info.errors,
        views=info.views,
    )
