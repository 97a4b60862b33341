"""The fixed costs of a run (imports, model build, fold, conversion, compile, first batch), for ``-v``.

A job on a few hundred images is often dominated by what happens before the first image:
this records each such step once per process, so ``pipeline.py -v extract`` can say where
the seconds went.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

_COSTS: dict[str, float] = {}
START = time.perf_counter()


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Add the wall time of the block to ``name`` (steps that repeat add up)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - t)


def add(name: str, seconds: float) -> None:
    _COSTS[name] = _COSTS.get(name, 0.0) + seconds


def since_process_start() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): interpreter start-up and imports."""
    import os

    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after the command name
        uptime = float(open("/proc/uptime").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def snapshot() -> dict[str, float]:
    return dict(_COSTS)


def reset() -> None:
    _COSTS.clear()


def line(costs: dict[str, float] | None = None) -> str:
    costs = snapshot() if costs is None else costs
    return ", ".join(f"{k} {v:.2f} s" for k, v in costs.items()) or "none recorded"
