"""The options of ``pipeline.py run``: one frozen dataclass, filled from defaults, a config file, then flags.

A config file (YAML or JSON) uses the long option names, with dashes or underscores::

    data: data/sample
    backbones: [efficientnet_lite0, resnet50]
    layers: [default, layer4]
    models: default
    out: runs/demo
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path


class ConfigError(ValueError):
    """A config file or option that cannot be used; names the file or key."""


@dataclass(frozen=True)
class RunConfig:
    data: tuple[str, ...]  # one or more datasets (folder or CSV); several: one report across them
    out: str
    # Three backbones by default: each backbone's best model and their soft vote moved dtd10's
    # test accuracy +3-4 points over one backbone's (bench/heldout_study.py), for 2-3x the extraction.
    backbones: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    layers: tuple[str, ...] = ("default",)
    pools: tuple[str, ...] = ("avg",)
    models: tuple[str, ...] = ("default",)
    weights: str | None = None
    cache_dir: str | None = None  # default: <out>/features; share one between runs to reuse stores
    batch_size: int = 32
    workers: int | None = None
    device: str = "auto"
    runtime: str = "auto"  # extract --runtime: auto | torch | openvino
    precision: str = "auto"
    loader: str = "auto"  # extract --loader: auto | inline | thread | process
    draft: bool = False  # extract --draft
    fold_bn: bool = True  # extract --no-fold-bn sets False
    preprocess: str | None = None  # classify --preprocess: override every model's preprocessing
    dtype: str = "float32"  # the other extract options, as extract names them
    compression: str | None = None
    channels_last: bool = True
    max_pixels: int | None = None  # None: extract's default guard; 0: no limit
    allow_outside_root: bool = False
    force: bool = False  # extract --force: start even when a store will not fit on its disk
    view_seed: int = 0
    view_scale: tuple[float, float] | None = None
    jobs: int = -1  # every core: the sweeps and the slow models' CV folds run on joblib workers
    seed: int = 0
    tensorboard: str | None = None
    image_root: str | None = None
    views: int = 0  # augmented views per train image stored at extraction (0: none)
    train_on_views: str = "auto"  # classify --views: auto | on | off | both
    tta: str = "none"  # classify --tta: none | flip | both
    protocol: str = "auto"  # classify --protocol: how models are selected
    budget: str | None = "auto"  # the whole run's time ("10m"), "auto" (each zoo sized to its extraction) or None / "none"
    select: str = "auto"  # classify --select: auto | val | cv
    final_fit: str = "auto"  # classify --final-fit: auto | train | train+val
    metric: str = "accuracy"  # what ranks the rows: accuracy | balanced_accuracy
    finetune: str = "auto"  # a fine-tuned row (driver.finetune_rows): off | auto (with a GPU) | on
    few_shot: bool = True  # the few-shot curve of every feature set
    ensembles: bool = True  # concat of the two best feature sets, soft vote of the tied group
    audit: bool = True  # duplicates, leaks, label issues of the best model's feature set (classify.audit)
    resume: bool = True  # classify --no-resume sets False: refit what an earlier run finished
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def feature_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.out) / "features"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


LIST_KEYS = {"backbones", "layers", "pools", "models"}


def _as_tuple(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{key}: expected a list of names or a comma-separated string, got {value!r}")


def _data_tuple(value: object) -> tuple[str, ...]:
    """One path or a list of them (paths are not split on commas), each given once."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"data: expected a path or a list of paths, got {value!r}")
    return tuple(dict.fromkeys(items))


def dataset_names(paths: tuple[str, ...]) -> list[str]:
    """Report names of the datasets: each folder's (CSV's, shards' folder's) name, made unique with a suffix."""
    names: list[str] = []
    for p in paths:
        path = Path(p.rstrip("/"))
        if any(c in path.name for c in "{*?[") and path.name.lower().endswith(".tar"):
            path = path.parent  # tar shards 'DIR/train-{000..009}.tar': the folder names the dataset
        base = path.stem or "data"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def load_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - yaml and json raise different types
        raise ConfigError(f"--config {path}: cannot parse: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(file_values: dict, flag_values: dict, source: str = "--config") -> RunConfig:
    """Defaults < config file < flags given on the command line (None = not given)."""
    known = {f.name for f in fields(RunConfig)} - {"extra"}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {unknown}; valid: {sorted(known)}")
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None and k in known}}
    for key in ("data", "out"):
        if not merged.get(key):
            raise ConfigError(f"--{key} is required (on the command line or in the config file)")
    for key in LIST_KEYS & set(merged):
        merged[key] = _as_tuple(key, merged[key])
    merged["data"] = _data_tuple(merged["data"])
    for key in ("few_shot", "ensembles", "audit", "draft", "fold_bn", "channels_last", "allow_outside_root",
                "force", "resume"):
        if key in merged and not isinstance(merged[key], bool):
            raise ConfigError(f"{key}: expected true or false, got {merged[key]!r}")
    if merged.get("view_scale") is not None:
        merged["view_scale"] = tuple(float(v) for v in merged["view_scale"])
    for key in ("batch_size", "jobs", "seed", "views", "view_seed"):
        if key in merged and not isinstance(merged[key], int):
            raise ConfigError(f"{key}: expected an integer, got {merged[key]!r}")
    for key, choices in (("train_on_views", ("auto", "on", "off", "both")), ("tta", ("none", "flip", "both")),
                         ("select", ("auto", "val", "cv")), ("final_fit", ("auto", "train", "train+val")),
                         ("metric", ("accuracy", "balanced_accuracy")), ("finetune", ("off", "auto", "on")),
                         ("loader", ("auto", "inline", "thread", "process"))):
        if key in merged and merged[key] not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {merged[key]!r}")
    if "protocol" in merged:
        from classify.protocol import check_spec

        try:
            merged["protocol"] = check_spec(str(merged["protocol"]))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if merged.get("preprocess") is not None:
        from classify.preprocess import parse_preprocess

        try:
            parse_preprocess(merged["preprocess"])
        except ValueError as e:
            raise ConfigError(f"preprocess: {e}") from None
    if merged.get("budget") is not None and str(merged["budget"]).strip().lower() != "auto":
        from classify.budget import parse_budget

        try:
            parse_budget(merged["budget"])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        merged["budget"] = str(merged["budget"])
    return RunConfig(**merged)
