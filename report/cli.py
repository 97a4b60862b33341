"""``pipeline.py report RUN_DIR``: rebuild the comparison report from a run's saved results."""

from __future__ import annotations

import argparse


def publish(run_dir: str, tensorboard: str | None = None, top: int = 5) -> dict:
    """Build the report, log to TensorBoard if asked, and print the leaderboard's top rows."""
    from report.build import build_report, excerpt  # matplotlib: not for pipeline.py's parser
    from report.tb import log_misclassified

    paths = build_report(run_dir)
    if tensorboard:
        log_misclassified(run_dir, tensorboard)
    print(excerpt(run_dir, top=top))
    print(f"report: {paths['html']}  (also {paths['md']}, {paths['leaderboard_csv']})")
    return paths


def main_report(args: argparse.Namespace) -> int:
    publish(args.run_dir, args.tensorboard, args.top)
    return 0


def add_subcommands(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", parents=parents, help="rebuild the comparison report of a run (no retraining)",
                       description="Read RUN_DIR/results.json (written by `run` and by `classify --out`) "
                                   "and the feature stores it names, and write "
                                   "RUN_DIR/report/: report.html (one offline file), report.md, leaderboard.json/csv "
                                   "and the plots.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `pipeline.py run` or `classify --out`")
    p.add_argument("--top", type=int, default=5, help="leaderboard rows to print (default 5)")
    p.add_argument("--tensorboard", metavar="LOG_DIR", help="also log the best model's misclassified images here")
    p.set_defaults(func=main_report)
