"""Every option of the classify stage, declared once (flag, type, choices or range, default, help).

:class:`ClassifyOptions` is what ``run`` shares with ``classify`` (everything but the store and
the output folder); :class:`ClassifyConfig` adds those. Parsers, config-file keys and checks are
generated from the fields (:mod:`common.options`); a config is checked when it is made, so a
bad option fails before any store is read. The defaults are the product's: ``classify`` does
what ``run`` does to each feature set (few-shot curve, every core, the zoo sized to the
extraction).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from featcache.common import options
from featcache.common.errors import BadInput
from featcache.common.options import address_option, engine_option, option

VIEWS_CHOICES = ("auto", "on", "off", "both")
TTA_CHOICES = ("none", "flip", "both")
SELECT_CHOICES = ("auto", "val", "cv")
FINAL_FIT_CHOICES = ("auto", "train", "train+val")
METRICS = ("accuracy", "balanced_accuracy")  # what ranks a leaderboard (classify.ranking)
METRIC_CHOICES = ("auto", *METRICS)  # auto: balanced accuracy when the train classes are imbalanced
CLASS_WEIGHTS = ("auto", "balanced", "none")


def _problem(check: Any, value: Any) -> str | None:
    """A library check's refusal as the problem text (the option's name is added by the caller)."""
    try:
        check(value)
    except BadInput as e:
        return str(e).split(": ", 1)[-1] if str(e).startswith("--") else str(e)
    return None


def _protocol(value: str) -> str | None:
    if value == "auto":
        return None
    from classify.protocol import check_spec  # scikit-learn: only when a protocol is given

    return _problem(check_spec, value)


def _preprocess(value: str) -> str | None:
    from classify.preprocess import parse_preprocess  # scikit-learn: only when a preprocessing is given

    return _problem(parse_preprocess, value)


def _budget(value: str) -> str | None:
    if value.strip().lower() in ("auto", "none"):
        return None
    from classify.budget import parse_budget  # numpy and h5py: only when a time is given

    return _problem(parse_budget, value)


def _jobs(value: int) -> str | None:
    return "expected -1 (every core) or a number of workers >= 1" if value == 0 or value < -1 else None


_MODEL = re.compile(r"[A-Za-z0-9_+.-]+")


def _models(value: tuple[str, ...]) -> str | None:
    bad = [v for v in value if not _MODEL.fullmatch(v)]
    return f"not model names: {bad}" if bad else None


@dataclass(frozen=True)
class ClassifyOptions:
    """How to compare classifiers on a feature set, whatever the store: what ``run`` passes to each."""

    models: tuple[str, ...] = option(("default",), kind="list", check=_models,
                                     help="comma list of model names (`pipeline.py classify --help` lists them), "
                                          "all, or default")
    jobs: int = option(-1, type=int, check=_jobs,
                       help="parallel jobs for the sweeps and the slow models' CV folds (-1: every core); in "
                            "`run`, the models of feature sets of up to 20,000 rows are fitted side by side on "
                            "that many worker processes instead (-1: one more than the cores, at most 16)")
    seed: int = option(0, type=int, low=0, help="seed for CV folds, models and torch heads")
    preprocess: str | None = option(None, nullable=True, check=_preprocess, default_text="each model's own",
                                    help="override every model's preprocessing: comma list of standardize, l2, "
                                         "pca:N, or none")
    tensorboard: str | None = option(None, nullable=True, metavar="DIR",
                                     help="write the torch heads' per-epoch curves and misclassified images under DIR")
    train_on_views: str = option("auto", choices=VIEWS_CHOICES,
                                 help="train on the store's augmented views (extract --views K) as well: auto (when "
                                      "the store has them), on, off, or both (each model twice, as separate rows)")
    tta: str = option("none", choices=TTA_CHOICES,
                      help="flip: score the average of each image's center and mirrored crops (needs a store with "
                           "views); both: report with and without")
    protocol: str = option("auto", check=_protocol, metavar="SPEC",
                           help="how models are selected: auto (5-fold CV below 2,000 train rows, 3-fold below "
                                "5,000, else one stratified holdout and one refit; repeated 5-fold below 100), "
                                "cv[:K], repeated-cv[:KxR], holdout[:FRACTION]")
    budget: str = option("auto", check=_budget, metavar="TIME",
                         help="auto: the default zoo sized to the store's extraction (one model of each family "
                              "unless it alone costs more than the whole extraction, then second variants cheapest "
                              "first within a third of it; models named in --models all run); none: every model; "
                              "or a time (90s, 10m, 1h): a model whose estimate does not fit in what is left is "
                              "approximated or skipped (run: the whole run's time). The report says which and why")
    select: str = option("auto", choices=SELECT_CHOICES,
                         help="what ranks the models: val accuracy, or cv (repeated stratified CV of each chosen "
                              "configuration over train+val, grouped by image); auto: cv when val has fewer than "
                              "1,000 images and train+val at most 5,000")
    final_fit: str = option("auto", choices=FINAL_FIT_CHOICES,
                            help="what the saved models (and their test scores) are fitted on: train, or train+val "
                                 "with the chosen configuration; auto: train+val when ranking by cv, else train")
    metric: str = option("auto", choices=METRIC_CHOICES,
                         help="what ranks the rows: accuracy, balanced_accuracy, or auto (balanced accuracy when the "
                              "largest train class has at least 1.5x the rows of the smallest, else accuracy); both "
                              "are always measured")
    class_weight: str = option("auto", choices=CLASS_WEIGHTS,
                               help="balanced: every model weighs each class alike (scikit-learn's class_weight="
                                    "'balanced', weighted losses for the torch heads and probes, balanced kNN votes); "
                                    "none: as the rows come; auto: balanced when the train classes are imbalanced "
                                    "(the same 1.5x rule)")
    few_shot: bool = option(True, kind="bool",
                            help="measure the few-shot curve (1-16 train images per class and all; logreg and DINO "
                                 "kNN; 5 draws)")
    resume: bool = option(True, kind="bool",
                          help="reuse the models an earlier run into the same folder finished with the same "
                               "settings (their model files unchanged); --no-resume fits every model again")
    allow_partial: bool = option(False, kind="bool",
                                 help="use the rows written so far of an unfinished store (F.h5.partial)")
    engine: str = engine_option()
    address: str | None = address_option()

    def __post_init__(self) -> None:
        options.check(self)

    def job(self, *, features: str, out: str, **changes: Any) -> ClassifyConfig:
        """These options applied to one store and output folder."""
        values = {f.name: getattr(self, f.name) for f in fields(ClassifyOptions)}
        return ClassifyConfig(**{**values, **changes}, features=features, out=out)


@dataclass(frozen=True)
class ClassifyConfig(ClassifyOptions):
    """One classify job: a feature set of a store, compared into one output folder."""

    features: str = option(kw_only=True, metavar="F.h5", help="the HDF5 feature store (from extract)")
    out: str = option(kw_only=True, metavar="RUN_DIR", help="folder for models/, results and the reports")
    feature: str | None = option(None, nullable=True, aliases=("--layer",), kw_only=True,
                                 default_text="the store's default",
                                 help="the feature set: a key (layer4/avgmax) or a layer (layer4)")


def config_from_values(values: dict[str, Any], how: options.Spelling = "flag", **fixed: Any) -> ClassifyConfig:
    """A :class:`ClassifyConfig` from given option values, each checked and named as the user gave it."""
    return options.build(ClassifyConfig, values, how, **fixed)
