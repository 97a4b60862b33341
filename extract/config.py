"""Every option of an extraction, declared once (flag, type, choices or range, default, help).

:class:`ExtractOptions` holds what ``run`` shares with ``extract`` (everything but the job's
data, backbone and output); :class:`ExtractConfig` adds those. The parsers of ``extract`` and
``run``, the config-file keys and the checks are generated from these fields
(:mod:`common.options`), and a config is checked when it is made, so a bad option fails
before any image is listed or network built. Light on purpose: no torch, no numpy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from extract.weights import split_weights
from featcache.common import options
from featcache.common.errors import BadInput
from featcache.common.options import address_option, engine_option, option

LOADERS = ("auto", "inline", "thread", "process")
POOLS = ("avg", "max", "avgmax", "gem", "cls", "flatten")
DEFAULT_VIEW_SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop's area range
DEFAULT_MAX_PIXELS = 178_956_970  # PIL's decompression-bomb limit


def _shard(value: str) -> str | None:
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        return "expected K/N with 0 <= K < N, e.g. 0/4"
    return None if 0 <= k < n else "expected K/N with 0 <= K < N (shards count from 0)"


@dataclass(frozen=True)
class ExtractOptions:
    """How to extract, whatever the images and the backbone: what ``run`` passes to every job."""

    layers: tuple[str, ...] = option(("default",), kind="list", group="features",
                                     help="comma list of modules to hook: NAME (output) or NAME:in (input), or "
                                          "default: the classifier's input")
    pools: tuple[str, ...] = option(("avg",), kind="list", aliases=("--pool",), choices=POOLS, group="features",
                                    help="comma list of avg,max,avgmax,gem,cls,flatten (vectors are stored as "
                                         "they are)")
    weights: str = option("DEFAULT", help="DEFAULT, a torchvision enum name (IMAGENET1K_V1), none, or a "
                                          "state-dict FILE", group="features")
    dtype: str = option("float32", choices=("float32", "float16"), help="storage dtype", group="features")
    compression: str | None = option(None, choices=("gzip", "lzf"), nullable=True, default_text="none",
                                     help="HDF5 compression", group="features")
    views: int = option(0, type=int, low=0, metavar="K", group="augmented views",
                        help="also store K seeded RandomResizedCrop+flip views of every train image, and every "
                             "image's mirrored crop (classify trains on the views)")
    view_seed: int = option(0, type=int, low=0, help="seed of the views", group="augmented views")
    view_scale: tuple[float, float] = option(DEFAULT_VIEW_SCALE, kind="pair", check=options.fraction_range,
                                             group="augmented views",
                                             help="area range of the view crops as fractions of the image "
                                                  "(torchvision's)")
    batch_size: int = option(32, type=int, low=1, help="images per forward", group="speed")
    workers: int | None = option(None, type=int, low=0, nullable=True, group="speed",
                                 default_text="every core for inline and beside OpenVINO, 1 beside a torch CPU "
                                              "forward, up to 8 for a GPU",
                                 help="decode workers (0 decodes in the main process)")
    loader: str = option("auto", choices=LOADERS, group="speed",
                         help="inline: decode each batch when needed on --workers threads; thread: prefetch on "
                              "threads; process: DataLoader worker processes (same features; auto: threads beside "
                              "an OpenVINO forward, inline for torch on a CPU, processes for a GPU)")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N, mps", group="speed")
    runtime: str = option("auto", choices=("auto", "torch", "openvino"), group="speed",
                          help="what runs the network: openvino (CPU; converted once and cached in "
                               "$FEATCACHE_HOME, 1.5-3x torch here) or torch (any device); auto: OpenVINO on a "
                               "CPU when installed")
    precision: str = option("auto", choices=("fp32", "bf16", "fp16", "int8", "auto"), group="speed",
                            help="auto: bf16 where the hardware computes it natively (1.9x fp32 on a 2-core "
                                 "AVX512-BF16 CPU, the same probe accuracy), fp16 on a GPU without bf16, else "
                                 "fp32; bf16/fp16 (autocast on torch, inference hints on OpenVINO); int8 "
                                 "(OpenVINO: NNCF post-training quantization calibrated on up to 300 of the job's "
                                 "train images, checked and recorded in the store)")
    channels_last: bool = option(True, kind="bool", group="speed", help="NHWC memory format for the forward")
    fold_bn: bool = option(True, kind="bool", group="speed",
                           help="fold eval BatchNorms into the convolutions before them, checked on a probe "
                                "batch (1.3-1.6x faster on a CPU, features change ~1e-6)")
    draft: bool = option(False, kind="bool", group="speed",
                         help="decode large JPEGs at reduced scale (faster; features change slightly)")
    max_pixels: int | None = option(DEFAULT_MAX_PIXELS, type=int, low=0, nullable=True, group="input checks",
                                    help="refuse images above this many pixels (decompression-bomb guard; 0: no "
                                         "limit)")
    image_root: str | None = option(None, nullable=True, group="input checks", default_text="the CSV's folder",
                                    help="folder the CSV's paths are relative to")
    allow_outside_root: bool = option(False, kind="bool", group="input checks",
                                      help="accept CSV paths that leave the image root (../, absolute)")
    force: bool = option(False, kind="bool", group="input checks",
                         help="start even when the store's estimated size exceeds the free space on its disk")
    overwrite: bool = option(False, kind="bool", help="replace a store at the output path that holds another spec")
    engine: str = engine_option()
    address: str | None = address_option()
    gpus_per_worker: float = option(0.0, type=float, low=0, help="GPUs per Ray worker", group="engine")
    cpus_per_worker: float = option(1.0, type=float, low=0, help="CPUs per Ray worker", group="engine")
    # Python only: set by the library's callers, not by users.
    weights_file: str | None = option(None, cli=False, nullable=True, help="the state-dict file of --weights FILE")
    view_splits: tuple[str, ...] = option(("train",), kind="list", cli=False, help="splits whose rows get views")
    flip: bool = option(False, kind="bool", cli=False, help="store every row's mirrored crop (implied by views)")
    calibration: dict | None = option(None, cli=False, nullable=True, type=dict,
                                      help="int8: reuse this recorded calibration (predict)")
    quantized_from: str | None = option(None, cli=False, nullable=True,
                                        help="int8: a store whose embedded network to use (predict)")
    progress: bool = option(True, kind="bool", cli=False, help="a progress bar on stderr")

    def __post_init__(self) -> None:
        if self.max_pixels == 0:
            object.__setattr__(self, "max_pixels", None)  # 0 on the command line: no limit
        if self.weights_file is None and self.weights not in (None, "file"):
            weights, weights_file = split_weights(self.weights)  # --weights FILE names a state dict
            object.__setattr__(self, "weights", weights)
            object.__setattr__(self, "weights_file", weights_file)
        options.check(self)
        if self.views and not self.view_splits:
            raise BadInput("view_splits: name at least one split to draw the views for (e.g. train)")

    def job(self, *, data: str, backbone: str, out: str, **changes: Any) -> ExtractConfig:
        """This extraction applied to one dataset and backbone."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(ExtractOptions)}
        return ExtractConfig(**{**fields, **changes}, data=data, backbone=backbone, out=out)


@dataclass(frozen=True)
class ExtractConfig(ExtractOptions):
    """One extraction job; the options that change numbers go into its cache key (extract.spec)."""

    data: str = option(kw_only=True, help="image folder (train/ val/ test/ or class folders), a CSV, or "
                                          "uncompressed webdataset tar shards, quoted: "
                                          "'shards/train-{000..009}.tar' (braces and globs)")
    backbone: str = option(kw_only=True, help="efficientnet_lite0, resnet50, vit_b_16, timm:NAME, ...")
    out: str = option(kw_only=True, help="the HDF5 store to write (FILE.h5)")
    shard: str | None = option(None, nullable=True, check=_shard, metavar="K/N", kw_only=True,
                               help="extract only the K-th of N contiguous slices (0-based) into its own store; "
                                    "join them with `pipeline.py merge`")


def config_from_values(values: dict[str, Any], how: options.Spelling = "flag", **fixed: Any) -> ExtractConfig:
    """An :class:`ExtractConfig` from given option values (CLI or file), each checked and named as given."""
    return options.build(ExtractConfig, values, how, **fixed)
