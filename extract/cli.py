"""Command-line options of the extract stage (``pipeline.py extract|info|backbones|layers``)."""

from __future__ import annotations

import argparse
import logging
import sys

from store.errors import EXIT_CORRUPT
from extract.weights import WEIGHT_FILE_SUFFIXES, split_weights  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _scale(text: str) -> tuple[float, float]:
    try:
        parts = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN or MIN,MAX, e.g. 0.35 or 0.35,1") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN or MIN,MAX, e.g. 0.35 or 0.35,1")
    return (parts[0], parts[1] if len(parts) == 2 else 1.0)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options that pick the backbone; shared by extract, layers and run."""
    p.add_argument("--backbone", required=True, help="efficientnet_lite0, resnet50, vit_b_16, timm:NAME, ...")
    p.add_argument("--weights", default=None,
                   help="DEFAULT (default), a torchvision enum name (IMAGENET1K_V1), none, or a state-dict FILE")


def add_extract_arguments(p: argparse.ArgumentParser, *, with_io: bool = True) -> None:
    """Every extraction option, declared once: ``extract`` (``with_io``: data, out, backbone,
    overwrite, engine, shard) and ``run`` (the rest, the same names and meanings)."""
    if with_io:
        p.add_argument("--data", required=True,
                       help="image folder (train/ val/ test/ or class folders), a CSV, or uncompressed webdataset "
                            "tar shards, quoted: 'shards/train-{000..009}.tar' (braces and globs)")
        p.add_argument("--out", required=True, help="the HDF5 store to write (FILE.h5)")
        add_model_arguments(p)
    g = p.add_argument_group("features")
    g.add_argument("--layers", type=_csv_list, default=None,
                   help="comma list of modules to hook: NAME (output) or NAME:in (input); default: the "
                        "classifier's input")
    g.add_argument("--pools", "--pool", dest="pools", type=_csv_list, default=None,
                   help="comma list of avg,max,avgmax,gem,cls,flatten (default avg; vectors are stored as they are)")
    g.add_argument("--dtype", choices=("float32", "float16"), default=None, help="storage dtype (default float32)")
    g.add_argument("--compression", choices=("gzip", "lzf"), default=None, help="HDF5 compression (default none)")
    g = p.add_argument_group("augmented views")
    g.add_argument("--views", type=int, default=None, metavar="K",
                   help="also store K seeded RandomResizedCrop+flip views of every train image, and every "
                        "image's mirrored crop (classify trains on the views; default 0)")
    g.add_argument("--view-seed", type=int, default=None, help="seed of the views (default 0)")
    g.add_argument("--view-scale", type=_scale, default=None, metavar="MIN[,MAX]",
                   help="area range of the view crops as fractions of the image (default 0.08,1 as torchvision)")
    g = p.add_argument_group("speed")
    g.add_argument("--batch-size", type=int, default=None, help="images per forward (default 32)")
    g.add_argument("--workers", type=int, default=None,
                   help="decode workers (default: every core for inline and beside OpenVINO, 1 beside a torch CPU "
                        "forward, up to 8 for a GPU)")
    g.add_argument("--loader", choices=("auto", "inline", "thread", "process"), default=None,
                   help="inline: decode each batch when needed on --workers threads, nothing beside the forward; "
                        "thread: prefetch on threads; process: DataLoader worker processes (same features; "
                        "default auto: threads on all cores beside an OpenVINO forward, inline for torch on a CPU, "
                        "process for a GPU)")
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps")
    g.add_argument("--runtime", choices=("auto", "torch", "openvino"), default=None,
                   help="what runs the network: openvino (CPU; converted once and cached in $FEATCACHE_HOME, "
                        "1.5-3x torch here) or torch (any device); default auto: OpenVINO on a CPU when installed")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16", "int8", "auto"), default=None,
                   help="auto (default): bf16 where the hardware computes it natively (1.9x fp32 on a 2-core "
                        "AVX512-BF16 CPU, the same probe accuracy), fp16 on a GPU without bf16, else fp32; "
                        "fp32; bf16/fp16 (autocast on torch, inference hints on OpenVINO); int8 "
                        "(OpenVINO: NNCF post-training quantization calibrated on up to 300 of the job's train "
                        "images, checked and recorded in the store)")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None,
                   help="keep NCHW memory format")
    g.add_argument("--no-fold-bn", dest="fold_bn", action="store_false", default=None,
                   help="keep BatchNorm layers separate (default: fold them into the convolutions before them, "
                        "checked on a probe batch; 1.3-1.6x faster on a CPU, features change ~1e-6)")
    g.add_argument("--draft", action="store_true", default=None,
                   help="decode large JPEGs at reduced scale (faster; features change slightly)")
    g = p.add_argument_group("input checks")
    g.add_argument("--max-pixels", type=int, default=None,
                   help="refuse images above this many pixels (decompression-bomb guard; 0 = no limit)")
    g.add_argument("--image-root", default=None, help="folder the CSV's paths are relative to (default: its folder)")
    g.add_argument("--allow-outside-root", action="store_true", default=None,
                   help="accept CSV paths that leave the image root (../, absolute)")
    g.add_argument("--force", action="store_true", default=None,
                   help="start even when the store's estimated size exceeds the free space on its disk")
    if with_io:
        p.add_argument("--overwrite", action="store_true", default=None,
                       help="replace a store at --out that holds another spec")
        g = p.add_argument_group("engine")
        g.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local (default) or ray: Ray Data actors on a cluster (then --workers = Ray workers)")
        g.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
        g.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per Ray worker (default 0)")
        g.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs per Ray worker (default 1)")
        p.add_argument("--shard", default=None, metavar="K/N",
                       help="extract only the K-th of N contiguous slices (0-based) into its own store; "
                            "join them with `pipeline.py merge`")


def config_from_args(args: argparse.Namespace, **override: object):  # -> ExtractConfig
    from extract.runner import ExtractConfig

    weights, weights_file = split_weights(getattr(args, "weights", None))
    given = {
        "data": getattr(args, "data", None), "backbone": getattr(args, "backbone", None),
        "out": getattr(args, "out", None), "layers": args.layers, "pools": args.pools, "weights": weights,
        "weights_file": weights_file, "batch_size": args.batch_size, "workers": args.workers,
        "loader": args.loader, "runtime": args.runtime,
        "device": args.device, "precision": args.precision, "dtype": args.dtype, "compression": args.compression,
        "channels_last": args.channels_last, "fold_bn": args.fold_bn, "draft": args.draft,
        "image_root": args.image_root, "force": args.force,
        "allow_outside_root": args.allow_outside_root, "overwrite": getattr(args, "overwrite", None),
        "shard": getattr(args, "shard", None), "views": args.views, "view_seed": args.view_seed,
        "view_scale": args.view_scale,
        "progress": not getattr(args, "quiet", False) and sys.stderr.isatty(),
    }
    if args.max_pixels is not None:
        given["max_pixels"] = args.max_pixels or None
    given.update(override)
    return ExtractConfig(**{k: v for k, v in given.items() if v is not None})  # unset: the library default stands


def main_extract(args: argparse.Namespace) -> int:
    from extract.runner import extract

    if args.engine == "ray":
        from extract.ray_engine import extract_ray

        cfg = config_from_args(args, workers=None)
        summary = extract_ray(cfg, address=args.address, workers=args.workers or 2,
                              gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker)
    else:
        summary = extract(config_from_args(args))
    print(summary.line())
    for path, msg in summary.errors[:10]:
        print(f"  skipped {path}: {msg}")
    if len(summary.errors) > 10:
        print(f"  ... and {len(summary.errors) - 10} more (see `pipeline.py info {summary.store}`)")
    return 0


def main_merge(args: argparse.Namespace) -> int:
    from extract.shards import merge
    from store import read_info

    out = merge(args.shards, args.out, copy=args.copy, overwrite=args.overwrite)
    info = read_info(out)
    how = "copied" if args.copy else "linked (virtual datasets; keep the shard files beside it)"
    print(f"merged {len(args.shards)} shards into {out}: {info.n_rows} rows, {info.n_ok} readable, {how}")
    return 0


def main_export(args: argparse.Namespace) -> int:
    from store.export import export

    meta = export(args.store, args.out, args.format, list(args.features) if args.features else None)
    files = ", ".join(f["file"] for f in meta["features"].values())
    print(f"exported {meta['rows']} rows of {len(meta['features'])} feature sets to {args.out} ({files}; index.json)")
    return 0


def main_info(args: argparse.Namespace) -> int:
    from store import read_info

    info = read_info(args.store, allow_partial=True)
    spec, prov = info.spec, info.provenance
    state = "complete" if info.complete else f"INCOMPLETE ({info.n_done}/{info.n_rows} rows written)"
    print(f"{info.path}: {state}, schema v1, cache key {info.cache_key[:12]}")
    print(f"  backbone   {spec['backbone']}  weights {spec['weights']}"
          f"  sha256 {(spec.get('weights_sha256') or '-')[:12]}")
    t = spec["transform"]
    print(f"  transform  resize {t['resize']} {t['interpolation']}, crop {t['crop']}, mean {t['mean']}, std {t['std']}"
          f"{', draft' if spec.get('draft') else ''}")
    runtime = prov.get("runtime", "torch")
    print(f"  precision  {spec['precision']} on {runtime}"
          f"{' ' + str(prov.get('openvino')) if runtime == 'openvino' and prov.get('openvino') else ''}, "
          f"stored {info.dtype}")
    if "calibration" in spec:
        c = spec["calibration"]
        checks = prov.get("quantization", {}).get("check", {})
        print(f"  int8       {c['method']} on {c['rows']} calibration rows ({c['model_type']}, "
              f"preset {c['preset']}); network embedded in the store")
        for key, ch in checks.items():
            print(f"             {key}: cosine to fp32 {ch['cosine_mean']:.4f} (min {ch['cosine_min']:.4f}), "
                  f"probe accuracy {_pct(ch.get('probe_fp32'))} -> {_pct(ch.get('probe_int8'))}")
    print(f"  rows       {info.n_rows} ({info.n_ok} readable, {len(info.errors)} errors); "
          f"splits {info.split_counts}")
    print(f"  classes    {len(info.class_names)}: {', '.join(info.class_names[:20])}"
          f"{' ...' if len(info.class_names) > 20 else ''}")
    for key, dim in info.features.items():
        mark = " (default)" if key == info.default_feature else ""
        print(f"  feature    {key}  dim {dim}{mark}")
    if info.views or info.flip:
        v = spec.get("views", {})
        print(f"  views      {info.views} per {'/'.join(v.get('splits', []))} row (seed {v.get('seed')}, "
              f"scale {v.get('scale')}, ratio {[round(r, 3) for r in v.get('ratio', [])]}); mirrored crops of "
              f"every row: {'yes' if info.flip else 'no'}")
    print(f"  made with  torch {prov.get('torch')}, torchvision {prov.get('torchvision')}, "
          f"on {prov.get('device')} at {prov.get('created')}")
    for path, msg in info.errors[: args.errors]:
        print(f"  error      {path}: {msg}")
    if args.verify:
        from store.verify import describe, verify_store

        report = verify_store(info.path)
        print("\n".join(describe(report)))
        if not report.ok:
            print(f"error: {info.path}: failed verification; extract again with --overwrite to rewrite it",
                  file=sys.stderr)
            return EXIT_CORRUPT
    return 0


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def main_backbones(args: argparse.Namespace) -> int:
    """Names, and where each one's default weights are: cached here, or fetched on first use (and how big)."""
    from extract.backbones import create_backbone, list_backbones, weights_status
    from extract.families import SUGGESTED

    if args.fetch:
        for name in args.fetch:
            bb = create_backbone(name, "DEFAULT")
            st = weights_status(name)
            print(f"{name}: {bb.weights} weights {st.state}, {_mb(st.size_mb)}, {st.where}")
        return 0
    if args.names:
        names = list_backbones()
        print("\n".join(n for n in names if not args.filter or args.filter in n))
        print("(any timm model as timm:NAME when timm is installed)", file=sys.stderr)
        return 0
    names = [n for n in (*SUGGESTED, "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
             if not args.filter or args.filter in n]
    if args.filter:
        names += [n for n in list_backbones() if args.filter in n and n not in names]
    print(f"{'backbone':45s} {'weights':13s} {'size':>9s}  where / what")
    for name in names:
        try:
            st = weights_status(name)
        except Exception as e:  # noqa: BLE001 - timm missing, a model without weights: listed, not fatal
            print(f"{name:45s} {'-':13s} {'-':>9s}  {type(e).__name__}: {str(e).splitlines()[0][:60]}")
            continue
        what = SUGGESTED.get(name, "")
        print(f"{name:45s} {st.state:13s} {_mb(st.size_mb):>9s}  {what + '; ' if what else ''}{st.where}")
    print("every torchvision model by name (--names lists them), any timm model as timm:NAME; weights marked "
          "'to fetch' are downloaded on first use (--offline: never), `--fetch NAME` fetches them now", file=sys.stderr)
    return 0


def _mb(size: float | None) -> str:
    return "?" if size is None else f"{size:.0f} MB" if size >= 10 else f"{size:.1f} MB"


def main_layers(args: argparse.Namespace) -> int:
    """Print hookable modules with their output shapes on one dummy image."""
    import torch

    from extract.backbones import create_backbone
    from extract.hooks import FeatureHooks, Tap

    weights, weights_file = split_weights(args.weights)
    bb = create_backbone(args.backbone, "none" if weights == "DEFAULT" else weights, weights_file)
    names = [n for n, _ in bb.model.named_modules() if n and (args.all or n.count(".") <= args.depth)]
    taps = [Tap(n, "output") for n in names]
    with FeatureHooks(bb.model, taps, ["avg"], stop_early=False) as hooks, torch.inference_mode():
        try:
            hooks(torch.zeros(1, 3, bb.transform.crop, bb.transform.crop))
        except Exception:  # noqa: BLE001 - an unused module just shows no shape
            pass
        shapes = hooks.raw_shapes
    print(f"default layer: {bb.default_layer}")
    if bb.presets:
        print("presets (--layers NAME): " + ", ".join(f"{k} = {v}" for k, v in bb.presets.items()))
    for t in taps:
        print(f"{t.layer:40s} {tuple(shapes.get(t, ())) or '-'}")
    return 0


def add_subcommands(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("extract", parents=parents, help="extract pooled features from images into an HDF5 store",
                       description="Run a frozen backbone over images and stream pooled features to HDF5. "
                                   "A second run with the same options is a cache hit; an interrupted run resumes.")
    add_extract_arguments(p)
    p.set_defaults(func=main_extract)

    p = sub.add_parser("merge", parents=parents, help="join the shard stores of one job into one store",
                       description="Check that the shards share one spec, are complete and cover the manifest "
                                   "exactly once, then join them: HDF5 virtual datasets (no copy) or --copy.")
    p.add_argument("shards", nargs="+", help="shard stores (any order)")
    p.add_argument("--out", required=True, help="the merged store")
    p.add_argument("--copy", action="store_true", help="copy the features instead of linking the shard files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=main_merge)

    p = sub.add_parser("export", parents=parents, help="write a store's feature sets as .npy or Parquet files",
                       description="One file per feature set plus labels, paths and splits, streamed by chunks "
                                   "(flat memory), with an index.json; readable by NumPy/FAISS (npy) or "
                                   "pandas/polars/pyarrow (parquet).")
    p.add_argument("store", help="FILE.h5")
    p.add_argument("--format", default="npy", choices=("npy", "parquet"), help="npy (default) or parquet")
    p.add_argument("--out", required=True, help="folder to write (created)")
    p.add_argument("--features", type=_csv_list, default=None, help="feature sets to write (default: all)")
    p.set_defaults(func=main_export)

    p = sub.add_parser("info", parents=parents, help="show what a feature store holds")
    p.add_argument("store", help="FILE.h5 (or its unfinished FILE.h5.partial)")
    p.add_argument("--errors", type=int, default=20, help="how many error rows to list (default 20)")
    p.add_argument("--verify", action="store_true",
                   help=f"read every feature chunk and check its fletcher32 checksum, the row flags and the blobs "
                        f"(exit {EXIT_CORRUPT} when anything is wrong)")
    p.set_defaults(func=main_info)

    p = sub.add_parser("backbones", parents=parents, help="list backbones and whether their weights are cached here",
                       description="The suggested backbones (and any matching FILTER) with their default weights: "
                                   "cached here, installed, or fetched on first use, with their sizes.")
    p.add_argument("filter", nargs="?", help="substring to filter by")
    p.add_argument("--names", action="store_true", help="print every accepted name, one per line")
    p.add_argument("--fetch", nargs="+", metavar="NAME", help="fetch these backbones' default weights into the caches now")
    p.set_defaults(func=main_backbones)

    p = sub.add_parser("layers", parents=parents, help="list a backbone's hookable layers and their shapes")
    add_model_arguments(p)
    p.add_argument("--depth", type=int, default=1, help="max dots in a listed name (default 1)")
    p.add_argument("--all", action="store_true", help="list every module")
    p.set_defaults(func=main_layers)
