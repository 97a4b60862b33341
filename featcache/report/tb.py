"""The best model's mistakes in TensorBoard, next to the torch heads' training curves."""

from __future__ import annotations

import os
from pathlib import Path

from classify.leaderboard import Leaderboard
from featcache.report import plots as P
from featcache.report.build import misclassified_tiles
from featcache.report.results import as_run
from featcache.report.stores import load_store


def log_misclassified(run_dir_or_results: str | os.PathLike | dict | Leaderboard, log_dir: str | os.PathLike,
                      tag: str = "misclassified/best") -> int:
    """Write the captioned montage of the best model's misclassified val images with ``add_image``.

    Returns how many images it shows (0 writes nothing). torch is imported here only, so the
    report itself works without it.
    """
    run = as_run(run_dir_or_results if isinstance(run_dir_or_results, (dict, Leaderboard)) else Path(run_dir_or_results))
    best = run.top
    if best is None:
        return 0
    tiles = misclassified_tiles(best, load_store(best.store, run.dir))
    fig = P.montage_figure(P.grid(tiles, P.n_cols(len(tiles))), f"Misclassified by {best.label}")
    if fig is None:
        return 0
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        writer.add_image(tag, P.to_rgb(fig), global_step=0, dataformats="HWC")
        lines = [f"{m.get('path')}: pred {m.get('predicted')}, true {m.get('true')}"
                 for m in best.val.get("misclassified") or []]
        writer.add_text(tag, f"{best.label}\n\n" + "\n".join(f"    {line}" for line in lines), global_step=0)
    finally:
        writer.close()
    return len(tiles)
