"""Command-line options of the classify stage: ``pipeline.py classify`` or ``python -m classify.cli``.

Options default to None so that the library's defaults stand (one place to change them).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DESCRIPTION = ("Fit the classifier zoo on a feature store's train split, compare on val (test reported once), "
               "save each model with its feature spec, and write metrics.json, metrics.csv and summary.md.")


class _Renamed(argparse.Action):
    """An old spelling, refused with the new one named (a count of views is extract's --views K)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        parser.error("classify --views is now --train-on-views auto|on|off|both, as in `run` "
                     "(--views K, a count, is extraction's)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, metavar="F.h5", help="the HDF5 feature store (from extract)")
    p.add_argument("--feature", "--layer", dest="layer", default=None,
                   help="the feature set: a key (layer4/avgmax) or a layer (layer4); default: the store's default")
    p.add_argument("--models", default=None,
                   help="comma list of model names (below), all, or default (default: those not marked below)")
    p.add_argument("--jobs", type=int, default=None, help="parallel sweep workers (default 1; -1: all cores)")
    p.add_argument("--seed", type=int, default=None, help="seed for CV folds, models and torch heads (default 0)")
    p.add_argument("--allow-partial", action="store_true", default=None,
                   help="use the rows written so far of an unfinished store (F.h5.partial)")
    p.add_argument("--preprocess", default=None,
                   help="override every model's preprocessing: comma list of standardize, l2, pca:N, or none")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write per-epoch TensorBoard scalars of the torch heads under DIR")
    p.add_argument("--views", action=_Renamed, nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--train-on-views", dest="views", choices=("auto", "on", "off", "both"), default=None,
                   help="train on the store's augmented views (extract --views K) as well: auto (default: when the "
                        "store has them), on, off, or both (each model twice, with and without, as separate rows)")
    p.add_argument("--tta", choices=("none", "flip", "both"), default=None,
                   help="flip: score the average of each image's center and mirrored crops (needs a store with "
                        "views); both: report with and without (default none)")
    p.add_argument("--protocol", default=None, metavar="SPEC",
                   help="how models are selected: auto (default: 5-fold CV below 2,000 train rows, 3-fold below "
                        "5,000, else one stratified holdout of train and one refit; repeated 5-fold below 100), "
                        "cv[:K], repeated-cv[:KxR], holdout[:FRACTION]")
    p.add_argument("--budget", default=None, metavar="TIME",
                   help="time for the whole zoo (90s, 10m, 1h): a model whose estimate does not fit in what is left "
                        "is approximated or skipped, and the report says which and why")
    p.add_argument("--select", choices=("auto", "val", "cv"), default=None,
                   help="what ranks the models: val accuracy, or cv (5-fold stratified CV x 2 of each chosen "
                        "configuration over train+val, grouped by image); auto (default): cv when val has fewer "
                        "than 1,000 images and train+val at most 5,000")
    p.add_argument("--final-fit", choices=("auto", "train", "train+val"), default=None,
                   help="what the saved models (and their test scores) are fitted on: train, or train+val with the "
                        "chosen configuration (val is still scored by the train-only fit); auto (default): "
                        "train+val when ranking by cv, else train")
    p.add_argument("--metric", choices=("accuracy", "balanced_accuracy"), default=None,
                   help="what `pipeline.py report` ranks by (default accuracy; balanced_accuracy for imbalanced "
                        "classes); both are always measured")
    p.add_argument("--few-shot", action="store_true", default=None,
                   help="also measure the few-shot curve (1-16 train images per class and all; logreg and DINO "
                        "kNN; 5 draws) into metrics.json")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="folder for models/ and the reports")
    p.add_argument("--no-resume", dest="resume", action="store_false", default=None,
                   help="fit every model again, even those an earlier run with the same settings finished "
                        "(default: reuse them from RUN_DIR/finished/ when their model files are unchanged)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run the sweeps here (default) or on a Ray cluster via joblib's Ray backend")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")


def options_from_args(args: argparse.Namespace) -> dict:
    """Keyword arguments for :func:`run_classify`; options left unset are dropped."""
    given = {"feature": args.layer, "models": args.models, "jobs": args.jobs, "seed": args.seed,
             "allow_partial": args.allow_partial, "preprocess": args.preprocess, "tensorboard": args.tensorboard,
             "views": args.views, "tta": args.tta, "protocol": args.protocol, "budget": args.budget,
             "select": args.select, "final_fit": args.final_fit, "metric": args.metric, "few_shot": args.few_shot, "resume": args.resume}
    return {k: v for k, v in given.items() if v is not None}


def main(args: argparse.Namespace) -> int:
    from classify.report import markdown_table
    from classify.train import run_classify

    from classify.engine import parallel_engine

    from classify import progress

    progress.set_enabled(False if getattr(args, "quiet", False) else None)
    options = options_from_args(args)
    if args.engine == "ray" and "jobs" not in options:
        options["jobs"] = -1  # every CPU of the cluster
    with parallel_engine(args.engine, args.address):
        results = run_classify(args.features, out_dir=args.out, **options)
    print(markdown_table(results))
    out = Path(args.out)
    print(f"\nreports: {out / 'summary.md'}, {out / 'metrics.json'}, {out / 'metrics.csv'}; models: {out / 'models'}")
    return 0


def _epilog() -> str:
    from classify.models import describe_models

    return "models [default preprocessing]:\n" + describe_models()


class _ModelsEpilog(argparse.RawDescriptionHelpFormatter):
    """Lists the models only when help is printed: the registry imports scikit-learn (1.4 s)."""

    def add_text(self, text: str | None) -> None:
        super().add_text(_epilog() if text == EPILOG else text)


EPILOG = "(models)"


def add_subcommands(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The hook pipeline.py calls: adds ``classify``."""
    p = sub.add_parser("classify", parents=parents, help="train and compare classifiers on a feature store",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=_ModelsEpilog)
    add_arguments(p)
    p.set_defaults(func=main)

    p = sub.add_parser("audit", parents=parents, help="duplicates and leaks, label issues and outliers of a store",
                       description="One cosine kNN search over the cached features: near-duplicate pairs (flagged "
                                   "when they cross splits: leaks), label-issue candidates (confident learning's "
                                   "self-confidence on out-of-fold probabilities) and outliers, ranked worst first, "
                                   "in OUT/audit.json.")
    p.add_argument("store", help="FILE.h5")
    p.add_argument("--feature", default=None, help="feature set (default: the store's default)")
    p.add_argument("--out", required=True, help="folder for audit.json")
    p.add_argument("--k", type=int, default=10, help="neighbours per row (default 10)")
    p.add_argument("--map-points", type=int, default=2000,
                   help="rows drawn on the 2-D map in audit.json (PCA, then UMAP or t-SNE; 0: no map; default 2000)")
    p.set_defaults(func=main_audit)


def main_audit(args: argparse.Namespace) -> int:
    from classify.audit import audit, write_audit

    if args.k < 1:
        raise ValueError(f"--k {args.k}: expected an integer >= 1")
    if args.map_points < 0:
        raise ValueError(f"--map-points {args.map_points}: expected an integer >= 0")
    result = audit(args.store, args.feature, args.k, map_points=args.map_points)
    path = write_audit(result, args.out)
    c = result["counts"]
    print(f"audit of {result['rows']} rows ({result['feature']}) in {result['seconds']:.1f} s: "
          f"{c['duplicate_pairs']} duplicate pairs (cosine >= {result['duplicate_threshold']:.3f}; "
          f"{c['cross_split']} across splits, {c['exact']} exact), {len(result['label_issues'])} label-issue "
          f"candidates, {len(result['outliers'])} outliers ranked -> {path}")
    for d in [d for d in result["duplicates"] if d["cross_split"]][:5]:
        print(f"  leak? {d['paths'][0]} ({d['splits'][0]}) ~ {d['paths'][1]} ({d['splits'][1]}) {d['similarity']:.4f}")
    for li in result["label_issues"][:5]:
        print(f"  label? {li['path']}: given {li['given']}, looks like {li['suggested']} (p={li['score']:.3f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m classify.cli", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=_ModelsEpilog)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    add_arguments(p)
    return p


def _main_standalone(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return main(args)
    except ValueError as e:  # StoreError included: one line naming the culprit
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main_standalone())
