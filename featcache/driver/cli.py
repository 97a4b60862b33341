"""``pipeline.py run``: options shared with extract/classify, plus a YAML/JSON config file."""

from __future__ import annotations

import argparse
import logging
import sys

from classify import progress as classify_progress
from classify.config import ClassifyOptions
from classify.engine import parallel_engine
from classify.table import shown_path
from extract.config import ExtractOptions
from featcache.common import options
from featcache.driver import worker_server
from featcache.driver.config import RunConfig, load_file, resolve
from featcache.report.cli import publish

log = logging.getLogger(__name__)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """run's own options, then every extraction and classify option as those stages declare them
    (generated from RunConfig, ExtractOptions and ClassifyOptions: one name, one default)."""
    p.add_argument("--config", help="YAML or JSON file with the same option names; flags override it")
    options.add_arguments(p, RunConfig)
    options.add_arguments(p, ExtractOptions)
    shared = options.option_names(ExtractOptions) & options.option_names(ClassifyOptions)  # engine, address
    options.add_arguments(p, ClassifyOptions, exclude=shared)


def flag_values(args: argparse.Namespace) -> dict:
    """The options given on the command line, by name (None: not given)."""
    return {**options.given(args, RunConfig), **options.given(args, ExtractOptions),
            **options.given(args, ClassifyOptions)}


def main_run(args: argparse.Namespace) -> int:
    file_values = load_file(args.config) if args.config else {}
    cfg = resolve(file_values, flag_values(args), source=args.config or "")
    sets = len(cfg.backbones) * len(cfg.extract.layers) * len(cfg.extract.pools) + len(cfg.features)
    if worker_server.likely_needed(sets, cfg.classify.jobs, cfg.classify.engine):
        from classify.budget import machine_gflops

        machine_gflops()  # the rate the workers' estimates use, measured before the server's imports load the cores
        worker_server.start()  # its imports go on beside ours
    from featcache.driver.run import run  # every stage, numpy and scikit-learn: not for pipeline.py's parser

    classify_progress.set_enabled(False if args.quiet else None)
    with parallel_engine(cfg.classify.engine, cfg.classify.address):
        board = run(cfg, progress=not args.quiet and sys.stderr.isatty())
    publish(board, cfg.classify.tensorboard)  # the run's leaderboard, in memory
    return 0


def add_subcommands(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", parents=parents, help="extract, classify and report in one command",
                       description="Extract every feature set it lacks (stores are reused by cache key), run the "
                                   "classifier zoo on each, and write one comparison report to RUN_DIR/report/.")
    add_run_arguments(p)
    p.set_defaults(func=main_run)
    add_predict_subcommand(sub, parents)


def main_predict(args: argparse.Namespace) -> int:
    from featcache.driver.predict import predict  # numpy, h5py and scikit-learn, as run

    res = predict(args.model, args.images, args.out, features=args.features, weights_file=args.weights,
                  progress=not args.quiet and sys.stderr.isatty(), tta=args.tta != "none")
    print(f"wrote {res['rows']} predictions to {shown_path(res['out'])}" + (f"; {res['errors']} unreadable images listed with "
                                                                 "their error" if res["errors"] else ""))
    return 0


def add_predict_subcommand(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("predict", parents=parents, help="classify new images with a saved model",
                       description="Re-extract features for new images exactly as the model's training features "
                                   "were made (backbone, weights, layer, pooling, transform), then predict. "
                                   "A .skops model file runs no code when loaded: every type it names is checked "
                                   "against a list before anything is built.")
    p.add_argument("--model", required=True, help="a .skops model saved by classify or run, or a soft vote run saved "
                        "(RUN/classify/ensembles/*.skops); checked against its .sha256 (older .joblib pickles "
                        "need --trust-pickle); or a fine-tuned .pt")
    p.add_argument("images", nargs="*", help="image files and/or folders")
    p.add_argument("--features", help="predict on a feature store instead of images (must match the model's spec)")
    p.add_argument("--weights", help="the backbone weights FILE, when the model was trained on one")
    p.add_argument("--out", required=True, help="CSV to write: path, predicted, p_<class>..., error")
    p.add_argument("--tta", choices=("flip", "none"), default=None,
                   help="flip: average each image's center and mirrored crops; none: the center crop only "
                        "(default: as the model was saved)")
    p.add_argument("--no-tta", dest="tta", action="store_const", const="none", help=argparse.SUPPRESS)
    p.set_defaults(func=main_predict)
