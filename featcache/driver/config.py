"""The options of ``pipeline.py run``: one frozen dataclass, filled from defaults, a config file, then flags.

Every option is declared once, by the stage that owns it (extract.config, classify.config, and
:class:`RunConfig` for run's own); run's parser and config keys are generated from those.
A config file (YAML or JSON) uses the long option names, with dashes or underscores::

    data: data/sample
    backbones: [efficientnet_lite0, resnet50]
    layers: [default, layer4]
    models: default
    out: runs/demo
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from classify.config import ClassifyOptions
from extract.config import ExtractOptions
from featcache.common import options
from featcache.common.errors import BadInput
from featcache.common.options import option


class ConfigError(BadInput):
    """A config file or option that cannot be used; names the file or key."""


def _paths(value: tuple[str, ...]) -> str | None:
    return None if all(isinstance(v, str) and v for v in value) else "expected a path or a list of paths"


@dataclass(frozen=True)
class RunConfig:
    """``run``'s own options; every stage option lives in the stage's config (one declaration each)."""

    data: tuple[str, ...] = option((), kind="paths", check=_paths,
                                   help="image folder, CSV, or uncompressed webdataset tar shards, quoted: "
                                        "'shards/train-{000..009}.tar' (as for extract); repeat it for one report "
                                        "across several datasets")
    out: str = option("", help="run directory for results, models and the report")
    # Three backbones by default: each backbone's best model and their soft vote moved dtd10's
    # test accuracy +3-4 points over one backbone's (bench/heldout_study.py), for 2-3x the extraction.
    backbones: tuple[str, ...] = option(("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
                                        kind="list", help="comma list of backbones, each extracted once into the "
                                                          "cache")
    features: tuple[str, ...] = option((), kind="paths", check=_paths, metavar="F.h5",
                                       help="existing feature stores to compare as well (repeat it; each one's "
                                            "feature sets go through the zoo, nothing is extracted for them)")
    cache_dir: str | None = option(None, nullable=True, default_text="RUN_DIR/features",
                                   help="where feature stores live; share it between runs to reuse them")
    finetune: str = option("auto", choices=("off", "auto", "on"),
                           help="add a fine-tuned row: the first backbone's last 3 blocks, LP-FT from the run's "
                                "logreg (auto: only with a GPU, where it costs seconds; on a CPU it cost minutes "
                                "and kept the probe)")
    ensembles: bool = option(True, kind="bool",
                             help="add ensemble rows: the two best feature sets concatenated, and a soft vote of "
                                  "the tied group")
    audit: bool = option(True, kind="bool",
                         help="audit the best model's feature set: near-duplicates and train/test leaks (with the "
                              "accuracy once leaked test images are dropped), label issues, outliers, the nearest "
                              "train images of mistakes and a 2-D map, in the report and RUN_DIR/report/audit.json")
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    classify: ClassifyOptions = field(default_factory=ClassifyOptions)
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        options.check(self)
        object.__setattr__(self, "data", tuple(dict.fromkeys(self.data)))  # each dataset once
        if not self.data and not self.features:
            raise ConfigError("--data is required (on the command line or in the config file), or --features")
        if not self.out:
            raise ConfigError("--out is required (on the command line or in the config file)")

    @property
    def feature_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.out) / "features"

    def to_dict(self) -> dict:
        """Flat, with the names of the command line and the config file (config.json, the report)."""
        d = {f.name: getattr(self, f.name) for f, _ in options.declared(RunConfig)}
        for stage in (self.extract, self.classify):
            d.update({f.name: getattr(stage, f.name) for f, opt in options.declared(type(stage)) if opt.cli})
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


STAGES = (RunConfig, ExtractOptions, ClassifyOptions)


def config_keys() -> set[str]:
    """Every key a run config file may hold: run's own, extract's and classify's options."""
    return {f.name for cls in STAGES for f, opt in options.declared(cls) if opt.cli}


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


def resolve(file_values: dict, flag_values: dict, source: str = "") -> RunConfig:
    """Defaults < config file < flags given on the command line (None = not given).

    Each value is checked by the stage that declares it; errors name the file's key or the flag."""
    known = config_keys()
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"{source + ': ' if source else ''}unknown keys {unknown}; valid: {sorted(known)}")
    try:
        staged = [{**options.values_from_mapping(cls, file_values, "key", where=source, unknown="ignore"),
                   **options.values_from_mapping(cls, {k: v for k, v in flag_values.items() if v is not None},
                                                 "flag", unknown="ignore")}
                  for cls in STAGES]
        own, ext, cls_ = staged
        return RunConfig(**own, extract=ExtractOptions(**ext), classify=ClassifyOptions(**cls_))
    except ConfigError:
        raise
    except BadInput as e:
        raise ConfigError(str(e)) from None
