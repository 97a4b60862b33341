"""``python pipeline.py ARGS`` with one model made slow, for the kill and Ctrl-C tests of test_zoo_resume.

    ZOO_SLOW=MODEL:SECONDS:MARKER python tests/zoo_child.py classify ...

Before fitting MODEL, the child creates the file MARKER (so that a test knows the model in
hand) and then waits SECONDS, as a long fit would; a signal that does not raise lets the wait
go on. SIGINT gets Python's default handler, as in a terminal, even when the test runner was
started with SIGINT ignored (a background job of a non-interactive shell).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _slow_down(model: str, seconds: float, marker: Path) -> None:
    import classify.zoo as zoo

    real = zoo.fit

    def fit(plan, data):  # noqa: ANN001, ANN202
        if plan.name == model:
            marker.touch()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return real(plan, data)

    zoo.fit = fit


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, str(ROOT))
    if os.environ.get("ZOO_SLOW"):
        model, seconds, marker = os.environ["ZOO_SLOW"].split(":", 2)
        _slow_down(model, float(seconds), Path(marker))
    sys.argv = [str(ROOT / "pipeline.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
