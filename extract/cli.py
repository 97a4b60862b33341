"""Command-line options of the extract stage (``pipeline.py extract|info|backbones|layers``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from extract.config import ExtractConfig, ExtractOptions, config_from_values
from extract.weights import WEIGHT_FILE_SUFFIXES, split_weights  # noqa: F401 - re-exported
from featcache.common import options
from featcache.common.errors import EXIT_CORRUPT

log = logging.getLogger(__name__)


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options that pick the backbone (``layers``): declared on ExtractConfig, shown here too."""
    options.add_arguments(p, ExtractConfig, only=("backbone", "weights"), required=("backbone",))


# ExtractConfig's fields that name one job: run has its own spelling of each (--data repeated,
# --backbones, stores named by cache key in --cache-dir, no --shard).
JOB_FIELDS = ("data", "backbone", "out", "shard")


def add_extract_arguments(p: argparse.ArgumentParser, *, with_io: bool = True) -> None:
    """Every extraction option, generated from :class:`ExtractConfig`: ``extract`` (``with_io``: the
    job's data, out, backbone and shard too) and ``run`` (the rest, the same names and defaults)."""
    if with_io:
        options.add_arguments(p, ExtractConfig, only=("data", "out", "backbone"),
                              required=("data", "out", "backbone"))
        options.add_arguments(p, ExtractConfig, exclude=("data", "out", "backbone"))
    else:
        options.add_arguments(p, ExtractOptions)


def config_from_args(args: argparse.Namespace, **override: object) -> ExtractConfig:
    """The job the command line describes; options not given keep ExtractConfig's defaults."""
    values = options.given(args, ExtractConfig)
    values["progress"] = not getattr(args, "quiet", False) and sys.stderr.isatty()
    return config_from_values({**values, **override})


def main_extract(args: argparse.Namespace) -> int:
    from extract.runner import extract

    cfg = config_from_args(args)
    if cfg.engine == "ray":
        from extract.ray_engine import extract_ray

        summary = extract_ray(dataclasses.replace(cfg, workers=None), address=cfg.address, workers=cfg.workers or 2,
                              gpus_per_worker=cfg.gpus_per_worker, cpus_per_worker=cfg.cpus_per_worker)
    else:
        summary = extract(cfg)
    print(summary.line())
    for path, msg in summary.errors[:10]:
        print(f"  skipped {path}: {msg}")
    if len(summary.errors) > 10:
        print(f"  ... and {len(summary.errors) - 10} more (see `pipeline.py info {summary.store}`)")
    return 0


def main_merge(args: argparse.Namespace) -> int:
    from extract.shards import merge
    from featcache.store import read_info

    out = merge(args.shards, args.out, copy=args.copy, overwrite=args.overwrite)
    info = read_info(out)
    how = "copied" if args.copy else "linked (virtual datasets; keep the shard files beside it)"
    print(f"merged {len(args.shards)} shards into {out}: {info.n_rows} rows, {info.n_ok} readable, {how}")
    return 0


def main_export(args: argparse.Namespace) -> int:
    from featcache.store.export import export

    meta = export(args.store, args.out, args.format, list(args.features) if args.features else None)
    files = ", ".join(f["file"] for f in meta["features"].values())
    print(f"exported {meta['rows']} rows of {len(meta['features'])} feature sets to {args.out} ({files}; index.json)")
    return 0


def main_info(args: argparse.Namespace) -> int:
    from featcache.store import read_info

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
        from featcache.store.verify import describe, verify_store

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
