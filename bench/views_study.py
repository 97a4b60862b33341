#!/usr/bin/env python3
"""Do augmented views help? Val accuracy of heads trained on 0..K cached views per train image.

    python pipeline.py extract --data ../shared/datasets/hymenoptera --backbone efficientnet_lite0 \\
        --views 8 --out /tmp/h8.h5
    python bench/views_study.py /tmp/h8.h5 --models logreg,linear,mlp --views 0,2,4,8 --seeds 5

Every row uses the same store: k views means the first k of the stored K, so the rows differ
only in how many views the head saw. Each cell is the mean (and spread) over seeds, which move
the CV folds, the early-stopping fold and the torch heads' initialisation; on a val split of a
few hundred images one image is worth several tenths of a point, so single runs mislead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from threadpoolctl import threadpool_limits  # noqa: E402

from classify.evaluate import evaluate  # noqa: E402
from classify.features import load_features  # noqa: E402
from classify.model_inputs import fit_params, training_arrays  # noqa: E402
from classify.models import build_model, resolve_models  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="a store extracted with --views K")
    p.add_argument("--models", default="logreg,linear,mlp")
    p.add_argument("--views", type=_ints, default=[0, 2, 4, 8], help="view counts to compare (each <= K)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()

    data = load_features(args.store, views=True, flip=True)
    if max(args.views) > data.n_views:
        p.error(f"--views {max(args.views)}: {args.store} holds {data.n_views} views per image")
    print(f"{args.store}: {data.feature}, train {len(data.train)} images x {data.n_views} views, "
          f"val {len(data.val)} ({data.val_source}); {args.seeds} seeds\n")
    print("| model | views | samples | val acc (center) | val acc (+flip TTA) | val log loss | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name in resolve_models(args.models):
        for k in args.views:
            d = replace(data, train=replace(data.train, views=data.train.views[:, :k]))
            accs, flips, losses, secs = [], [], [], []
            for seed in range(args.seeds):
                model = build_model(name, seed=seed, jobs=args.jobs)
                X, y, groups = training_arrays(d.train, views=k > 0)
                with threadpool_limits(limits=1):
                    t = time.perf_counter()
                    model.fit(X, y, **fit_params(model, groups))
                    secs.append(time.perf_counter() - t)
                    center = evaluate(model, d.val.X, d.val.y, class_names=d.class_names)
                    flipped = evaluate(model, d.val.X, d.val.y, class_names=d.class_names, X_flip=d.val.flip)
                accs.append(center["accuracy"])
                flips.append(flipped["accuracy"])
                losses.append(center["log_loss"] if center["log_loss"] is not None else float("nan"))

            def cell(v: list[float]) -> str:
                return f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}"

            print(f"| {name} | {k} | {len(y)} | {cell(accs)} | {cell(flips)} | {cell(losses)} | "
                  f"{statistics.mean(secs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
