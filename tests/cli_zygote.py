"""Run ``python pipeline.py ARGS`` for many ARGS, paying the ~4 s of imports once (helper for test_reliability).

    python tests/cli_zygote.py < cases.json > results.json

``cases.json`` maps a name to an argument list. This process imports what ``pipeline.py``
and its ``extract`` command import (torch, torchvision, every stage's CLI module), then
forks one child per case, two at a time. A child runs ``pipeline.py`` as ``__main__``
with that ``sys.argv``, its stdout and stderr going to files, and exits with the
script's exit status: a real process each time, like a DataLoader worker forked from a
parent that has already imported torch. The answer maps each name to
``{"returncode", "stdout", "stderr"}``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARALLEL = 2


def _child(args: list[str], out: str, err: str) -> None:
    """Become ``python pipeline.py ARGS``; never returns."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = [str(ROOT / "pipeline.py"), *args]
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as e:  # what the interpreter does with sys.exit(...)
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - an uncaught exception: the trace and exit 1, as python does
            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    cases: dict[str, list[str]] = json.load(sys.stdin)
    sys.path.insert(0, str(ROOT))
    import pipeline

    pipeline.build_parser()  # imports every stage's CLI module
    import extract.runner  # noqa: F401 - torch and torchvision, as `extract` loads them

    tmp = tempfile.mkdtemp(prefix="cli_zygote_")
    running: dict[int, tuple[str, str, str]] = {}
    results: dict[str, dict] = {}

    def reap() -> None:
        pid, status = os.wait()
        name, out, err = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        results[name] = {"returncode": code, "stdout": Path(out).read_text(), "stderr": Path(err).read_text()}

    sys.stdout.flush()
    for i, (name, args) in enumerate(cases.items()):
        while len(running) >= PARALLEL:
            reap()
        out, err = os.path.join(tmp, f"{i}.out"), os.path.join(tmp, f"{i}.err")
        pid = os.fork()
        if pid == 0:
            _child(args, out, err)
        running[pid] = (name, out, err)
    while running:
        reap()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
