"""The comparison report of a run: leaderboard, plots and provenance, rebuilt from results.json.

    from featcache.report import build_report, excerpt
    paths = build_report("runs/demo")   # runs/demo/report/report.html, report.md, leaderboard.*

Names are imported on first use, so ``pipeline.py`` registering ``report.cli`` does not
pay for matplotlib on every command.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"build_report": "featcache.report.build", "excerpt": "featcache.report.build",
            "ReportError": "featcache.report.results",
            "log_misclassified": "featcache.report.tb"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'report' has no attribute {name!r}")
