"""Command-line options of the classify stage: ``pipeline.py classify`` or ``python -m classify.cli``.

The options are generated from :class:`classify.config.ClassifyConfig`, where each is declared once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from classify import progress
from classify.config import ClassifyConfig, config_from_values
from classify.engine import parallel_engine
from featcache.common import options
from featcache.common.errors import BadInput

log = logging.getLogger(__name__)

DESCRIPTION = ("Fit the classifier zoo on a feature store's train split, compare on val (test reported once), "
               "save each model with its feature spec, and write metrics.json, metrics.csv and summary.md.")


class _Renamed(argparse.Action):
    """An old spelling, refused with the new one named (a count of views is extract's --views K)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error("classify --views is now --train-on-views auto|on|off|both, as in `run` "
                     "(--views K, a count, is extraction's)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every classify option, generated from :class:`~classify.config.ClassifyConfig`."""
    options.add_arguments(p, ClassifyConfig, only=("features", "out"), required=("features", "out"))
    options.add_arguments(p, ClassifyConfig, exclude=("features", "out"))
    p.add_argument("--views", action=_Renamed, nargs="?", help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> ClassifyConfig:
    return config_from_values(options.given(args, ClassifyConfig))


def main(args: argparse.Namespace) -> int:
    # scikit-learn: imported when the command runs, not when pipeline.py builds its parser
    from classify.job import classify
    from classify.table import console_text

    progress.set_enabled(False if getattr(args, "quiet", False) else None)
    cfg = config_from_args(args)
    with parallel_engine(cfg.engine, cfg.address):
        board = classify(cfg)
    print(console_text(board.rows, board.skipped, board.seconds, cfg.out))  # stdout: the answer, and only it
    log.info("reports: %s (summary.md, metrics.json, metrics.csv, results.json); models: %s", cfg.out,
             Path(cfg.out) / "models")
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
    from classify.audit import audit, write_audit  # numpy and scikit-learn, as in main()

    if args.k < 1:
        raise BadInput(f"--k {args.k}: expected an integer >= 1")
    if args.map_points < 0:
        raise BadInput(f"--map-points {args.map_points}: expected an integer >= 0")
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
    except BadInput as e:  # StoreError included: one line naming the culprit
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main_standalone())
