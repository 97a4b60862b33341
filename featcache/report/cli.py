"""``pipeline.py report RUN_DIR``: rebuild the comparison report from a run's saved results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from classify.table import PROG, TOP, console_text


def prog() -> str:
    """How the user called us, for the commands the summary prints."""
    return "featcache" if Path(sys.argv[0] if sys.argv else "").stem == "featcache" else PROG


def publish(run_dir: object, tensorboard: str | None = None, top: int = TOP) -> dict:
    """Build the report, log to TensorBoard if asked, and print the answer: the summary and the
    top ``top`` rows, at most 100 columns wide. This is all a run prints on stdout.
    ``run_dir``: a run folder, or a run's :class:`~classify.leaderboard.Leaderboard` in memory."""
    from featcache.report.build import build_report  # matplotlib: not for pipeline.py's parser
    from featcache.report.results import as_run
    from featcache.report.tb import log_misclassified

    board = as_run(run_dir)
    paths = build_report(board)
    if tensorboard:
        log_misclassified(run_dir, tensorboard)
    out = paths["html"].parent.parent
    print(console_text(board.rows, board.skipped, board.seconds, out, top=top, prog=prog()))
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
    p.add_argument("--top", type=int, default=TOP, help=f"leaderboard rows to print (default {TOP})")
    p.add_argument("--tensorboard", metavar="LOG_DIR", help="also log the best model's misclassified images here")
    p.set_defaults(func=main_report)
