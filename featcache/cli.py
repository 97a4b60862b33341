#!/usr/bin/env python3
"""Transfer learning on cached CNN features: extract once, then compare classifiers in seconds.

    python pipeline.py extract  --data DIR|CSV --backbone NAME --out F.h5
    python pipeline.py classify --features F.h5 --models all --out RUN_DIR
    python pipeline.py predict  --model M.skops IMAGES...|DIR --out preds.csv
    python pipeline.py run      --data DIR --backbones efficientnet_lite0,resnet50 --out RUN_DIR
    python pipeline.py report   RUN_DIR
    python pipeline.py finetune --data DIR --backbone NAME --out DIR [--run-dir RUN_DIR]
    python pipeline.py info F.h5

Exit codes: 0 ok, 1 failure, 2 bad input (one line on stderr names the culprit), 3 disk full (one line
names the path and the space needed; rerun after freeing space to resume), 4 store corrupted (a chunk
fails its checksum; ``info --verify`` lists them), 5 out of memory (a feature set that cannot fit is
refused before it is read), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from classify import cli as classify_cli
from extract import cli as extract_cli
from extract import costs
from featcache.common.errors import (
    EXIT_BAD_INPUT,
    EXIT_CORRUPT,
    EXIT_DISK_FULL,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NO_MEMORY,
    KEPT,
    BadInput,
    DiskFull,
    is_disk_full,
)
from featcache.driver import cli as driver_cli
from featcache.finetune import cli as finetune_cli
from featcache.report import cli as report_cli

log = logging.getLogger("pipeline")


def _add_common(p: argparse.ArgumentParser, default: object = False) -> argparse.ArgumentParser:
    """-v/-q work before or after the subcommand (SUPPRESS keeps a subparser from resetting them)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")
    g.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="log warnings and errors only, no progress bar")
    w = p.add_argument_group("weights")
    w.add_argument("--offline", action="store_true", default=default,
                   help="read weights from the caches only (as HF_HUB_OFFLINE=1 does); a miss says where it looked")
    w.add_argument("--weights-mirror", metavar="URL", default=None if default is False else default,
                   help="fetch torchvision's weights from URL instead of https://download.pytorch.org "
                        "(also FEATCACHE_WEIGHTS_MIRROR)")
    m = p.add_argument_group("model files")
    m.add_argument("--trust-pickle", action="store_true", default=default,
                   help="load .joblib models of older versions, which are pickles: unpickling runs any code the "
                        "file names, so only for files whose author you trust (also FEATCACHE_TRUST_PICKLE=1)")
    return p


def build_parser() -> argparse.ArgumentParser:
    # `featcache` as the installed console command (pyproject.toml); `pipeline.py` otherwise (a checkout, tests)
    command = os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ""))[0]
    parser = argparse.ArgumentParser(prog="featcache" if command == "featcache" else "pipeline.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [_add_common(argparse.ArgumentParser(add_help=False), default=argparse.SUPPRESS)]
    for cli in (extract_cli, classify_cli, driver_cli, report_cli, finetune_cli):  # each CLI imports its stage lazily
        cli.add_subcommands(sub, parents)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("PIL", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _print_costs() -> None:
    """``-v``: what the run spent before and around its real work (see extract/costs.py)."""
    print(f"fixed costs: {costs.line()}; wall {costs.since_process_start() or 0:.2f} s since the process started",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from featcache.store.errors import StoreCorrupted  # the store package imports h5py and numpy: not for build_parser

    args = build_parser().parse_args(argv)
    startup = costs.since_process_start()
    if startup is not None and argv is None:
        costs.add("start-up (interpreter, imports, parser)", startup)
    _setup_logging(args)
    try:
        from extract.fetch import set_options  # urllib.request and ssl (~25 ms): not for build_parser or --help

        set_options(args.offline, args.weights_mirror)
        if args.trust_pickle:  # read by classify.persist.load_model; restored below (tests call main in-process)
            os.environ["FEATCACHE_TRUST_PICKLE"] = "1"
        code = int(args.func(args) or 0)
        if args.verbose:
            _print_costs()
        return code
    except KeyboardInterrupt:
        hint = "rerun with --resume" if getattr(args, "command", "") == "finetune" else "rerun the same command"
        print(f"interrupted: work done so far is kept; {hint} to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DiskFull as e:
        print(f"error: {e}", file=sys.stderr)
        if e.fatal:  # HDF5 met the full disk mid-flush: closing its files (even at exit) can crash
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_DISK_FULL)
        return EXIT_DISK_FULL
    except StoreCorrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CORRUPT
    except MemoryError as e:  # NotEnoughMemory names the store; a bare MemoryError at least says what ran out
        print(f"error: {e}" if str(e) else f"error: out of memory during `{getattr(args, 'command', '?')}` "
              "(MemoryError); use a smaller feature set or a machine with more memory", file=sys.stderr)
        return EXIT_NO_MEMORY
    except Exception as e:  # noqa: BLE001 - a full disk anywhere else still gets one line
        if is_disk_full(e):
            where = getattr(e, "filename", None) or "a file"
            print(f"error: {where}: no space left on device ({' '.join(str(e).split())}); {KEPT}", file=sys.stderr)
            return EXIT_DISK_FULL
        if isinstance(e, (BadInput, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)):
            print(f"error: {e}", file=sys.stderr)  # the user's input (or a file they named): one line
            return EXIT_BAD_INPUT
        log.exception("failed")  # anything else is a bug: its traceback, once
        return EXIT_FAILURE
    finally:
        if args.trust_pickle:
            os.environ.pop("FEATCACHE_TRUST_PICKLE", None)


if __name__ == "__main__":
    sys.exit(main())
