"""The server that ``run``'s feature-set workers fork from (:mod:`featcache.driver.classify_sets`).

Its imports (the classify stack, skops, torch and the torch._dynamo that torch's optimizers import
on first use) take ~4 s on one core, and no zoo can start before them. :func:`start` launches it
without waiting, as soon as ``run`` has read its options, so those seconds pass beside this
process's own imports instead of after them. Kept free of heavy imports for that reason.
"""

from __future__ import annotations

import multiprocessing
import os

# skops.io walks every scikit-learn estimator on import (0.5 s), and each worker saves models.
PRELOAD = ("featcache.driver.classify_sets", "classify.models", "classify.head_folds", "skops.io", "tqdm.auto",
           "torch", "torch._dynamo")


def context(torch: bool = True) -> multiprocessing.context.BaseContext:
    """The forkserver context, its preload set (it takes effect only before the server starts)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([m for m in PRELOAD if torch or "torch" not in m])
    return ctx


def start(torch: bool = True) -> None:
    """Launch the server (a no-op when it runs already); it imports on its own while we go on."""
    context(torch)
    from multiprocessing import forkserver

    forkserver.ensure_running()


def likely_needed(sets: int, jobs: int, engine: str) -> bool:
    """Before the stores are planned: a feature set to classify, several cores, local, not --jobs 1
    (one set's models are fitted side by side as well)."""
    return sets >= 1 and (os.cpu_count() or 1) >= 2 and jobs != 1 and engine == "local"
