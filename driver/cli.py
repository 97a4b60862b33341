"""``pipeline.py run``: options shared with extract/classify, plus a YAML/JSON config file."""

from __future__ import annotations

import argparse
import logging
import sys

from driver.config import load_file, resolve

log = logging.getLogger(__name__)


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """run's own options, then every extraction option exactly as ``extract`` declares it."""
    from extract.cli import add_extract_arguments

    p.add_argument("--config", help="YAML or JSON file with the same option names; flags override it")
    p.add_argument("--data", action="append",
                   help="image folder, CSV, or uncompressed webdataset tar shards, quoted: 'shards/train-{000..009}.tar' "
                        "(as for extract); repeat it for one report across several datasets")
    p.add_argument("--out", help="run directory for results, models and the report")
    p.add_argument("--backbones", type=_csv, help="comma list (default efficientnet_lite0,efficientnet_lite1,efficientnet_lite2)")
    p.add_argument("--models", type=_csv, help="comma list of classifiers, 'default' or 'all'")
    p.add_argument("--weights", help="weights for every backbone: DEFAULT, an enum name, none, or a FILE")
    p.add_argument("--cache-dir", help="where feature stores live (default RUN_DIR/features); share it to reuse")
    p.add_argument("--preprocess", help="as for classify: override every model's preprocessing")
    p.add_argument("--jobs", type=int, help="parallel jobs for classifier sweeps and slow CV folds (default -1: every core)")
    p.add_argument("--seed", type=int)
    p.add_argument("--tensorboard", help="write torch-head training curves and misclassified images here")
    p.add_argument("--train-on-views", choices=("auto", "on", "off", "both"),
                   help="classify on the views too: auto (when stored), on, off, or both as separate rows")
    p.add_argument("--tta", choices=("none", "flip", "both"), help="flip test-time augmentation (needs --views)")
    p.add_argument("--protocol", metavar="SPEC",
                   help="model selection: auto (sized from rows), cv[:K], repeated-cv[:KxR], holdout[:F]")
    p.add_argument("--select", choices=("auto", "val", "cv"),
                   help="what ranks the rows: val accuracy, or cv (repeated stratified CV over train+val); "
                        "auto (default): cv when val has fewer than 1,000 images")
    p.add_argument("--metric", choices=("accuracy", "balanced_accuracy"),
                   help="what ranks the rows (default accuracy; balanced_accuracy for imbalanced classes); both "
                        "are always reported")
    p.add_argument("--final-fit", choices=("auto", "train", "train+val"),
                   help="what saved models and test scores are fitted on: auto (default: train+val when ranking "
                        "by cv), train, train+val")
    p.add_argument("--few-shot", dest="few_shot", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the few-shot curve of every feature set (default on)")
    p.add_argument("--ensembles", action=argparse.BooleanOptionalAction, default=None,
                   help="add ensemble rows: the two best feature sets concatenated, and a soft vote of the tied "
                        "group (default on)")
    p.add_argument("--audit", action=argparse.BooleanOptionalAction, default=None,
                   help="audit the best model's feature set: near-duplicates and train/test leaks (with the "
                        "accuracy once leaked test images are dropped), label issues, outliers, the nearest "
                        "train images of mistakes and a 2-D map, in the report and RUN_DIR/report/audit.json "
                        "(default on)")
    p.add_argument("--finetune", choices=("off", "auto", "on"),
                   help="add a fine-tuned row: the first backbone's last 3 blocks, LP-FT from the run's logreg "
                        "(default auto: only with a GPU, where it costs seconds; on a CPU it cost minutes and "
                        "kept the probe)")
    p.add_argument("--budget", metavar="TIME",
                   help="auto (default): every backbone; each feature set gets logreg and the kNNs, then the "
                        "other models cheapest first while their estimated cost stays within a third of the "
                        "backbone's estimated extraction (decided from estimates, so the same on any machine; "
                        "models named in --models all run); "
                        "none: every model; or a time for the whole run (10m, 90s): backbones in --backbones "
                        "order, the last ones skipped when their estimate does not fit, each feature set's zoo "
                        "an equal share of what is left, approximating or skipping what would not fit. The "
                        "report says what was skipped and why")
    p.add_argument("--no-resume", dest="resume", action="store_false", default=None,
                   help="fit every classifier again, even those an earlier run into RUN_DIR finished with the "
                        "same settings (default: reuse them)")
    add_extract_arguments(p, with_io=False)


FLAG_KEYS = ("data", "out", "backbones", "layers", "pools", "models", "weights", "cache_dir", "batch_size",
             "workers", "device", "runtime", "precision", "jobs", "seed", "tensorboard", "image_root", "views",
             "train_on_views", "tta", "protocol", "budget", "select", "final_fit", "metric", "finetune", "few_shot", "ensembles", "audit",
             "loader", "draft", "fold_bn", "preprocess", "dtype", "compression", "channels_last",
             "max_pixels", "allow_outside_root", "view_seed", "view_scale", "force", "resume")


def main_run(args: argparse.Namespace) -> int:
    from driver.run import run

    file_values = load_file(args.config) if args.config else {}
    cfg = resolve(file_values, {k: getattr(args, k) for k in FLAG_KEYS}, source=args.config or "--config")
    from report.cli import publish

    from classify import progress as classify_progress

    classify_progress.set_enabled(False if args.quiet else None)
    run(cfg, progress=not args.quiet and sys.stderr.isatty())
    publish(cfg.out, cfg.tensorboard)
    return 0


def add_subcommands(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", parents=parents, help="extract, classify and report in one command",
                       description="Extract every feature set it lacks (stores are reused by cache key), run the "
                                   "classifier zoo on each, and write one comparison report to RUN_DIR/report/.")
    add_run_arguments(p)
    p.set_defaults(func=main_run)
    add_predict_subcommand(sub, parents)


def main_predict(args: argparse.Namespace) -> int:
    from driver.predict import predict

    res = predict(args.model, args.images, args.out, features=args.features, weights_file=args.weights,
                  progress=not args.quiet and sys.stderr.isatty(), tta=args.tta != "none")
    print(f"wrote {res['rows']} predictions to {res['out']}" + (f"; {res['errors']} unreadable images listed with "
                                                                 "their error" if res["errors"] else ""))
    return 0


def add_predict_subcommand(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("predict", parents=parents, help="classify new images with a saved model",
                       description="Re-extract features for new images exactly as the model's training features "
                                   "were made (backbone, weights, layer, pooling, transform), then predict. "
                                   "A .skops model file runs no code when loaded: every type it names is checked "
                                   "against a list before anything is built.")
    p.add_argument("--model", required=True, help="a .skops model saved by classify (checked against its .sha256; older .joblib pickles "
                        "need --trust-pickle), or a fine-tuned .pt")
    p.add_argument("images", nargs="*", help="image files and/or folders")
    p.add_argument("--features", help="predict on a feature store instead of images (must match the model's spec)")
    p.add_argument("--weights", help="the backbone weights FILE, when the model was trained on one")
    p.add_argument("--out", required=True, help="CSV to write: path, predicted, p_<class>..., error")
    p.add_argument("--tta", choices=("flip", "none"), default=None,
                   help="flip: average each image's center and mirrored crops; none: the center crop only "
                        "(default: as the model was saved)")
    p.add_argument("--no-tta", dest="tta", action="store_const", const="none", help=argparse.SUPPRESS)
    p.set_defaults(func=main_predict)
