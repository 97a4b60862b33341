#!/usr/bin/env python3
"""The script a user writes from the seed tutorials, end to end: the baseline ``bench/small_n.py`` times.

    python bench/tutorial_script.py DATA [--backbone efficientnet_lite0]

The seed loop (``bench/seed_loop.py``: ImageFolder per split folder, DataLoader batch 32 with no
workers, ``torch.no_grad``, a forward hook on the classifier collecting its input), then twelve
scikit-learn classifiers with their default settings behind a ``StandardScaler``, each fitted on
the train split and scored on the test split (val when there is no test split), as the seeds'
"export the features for SVMs or trees" step and scikit-learn's classifier comparison do. The
backbone and preprocessing are the product's (same weights, same transform), so only the
workflow differs. Prints one line per classifier and a JSON line with the timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def classifiers(seed: int = 0) -> dict:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import AdaBoostClassifier, ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    return {
        "logistic regression": LogisticRegression(max_iter=1000),
        "ridge": RidgeClassifier(),
        "lda": LinearDiscriminantAnalysis(),
        "linear svm": LinearSVC(random_state=seed),
        "rbf svm": SVC(random_state=seed),
        "knn": KNeighborsClassifier(),
        "naive bayes": GaussianNB(),
        "decision tree": DecisionTreeClassifier(random_state=seed),
        "random forest": RandomForestClassifier(random_state=seed),
        "extra trees": ExtraTreesClassifier(random_state=seed),
        "adaboost": AdaBoostClassifier(random_state=seed),
        "mlp": MLPClassifier(max_iter=500, random_state=seed),
    }


def main() -> None:
    start = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("--backbone", default="efficientnet_lite0")
    args = p.parse_args()

    import warnings

    import numpy as np
    import torch
    from seed_loop import tutorial_backbone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from torchvision import datasets

    bb, tf, layer = tutorial_backbone(args.backbone)
    batch: list = []
    layer.register_forward_hook(lambda m, i, o: batch.append(i[0].numpy().copy()))
    split_x, split_y = {}, {}
    t_ext = time.perf_counter()
    with torch.no_grad():
        for split in sorted(d.name for d in args.data.iterdir() if d.is_dir()):
            feats, labels = [], []
            loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(args.data / split), tf), batch_size=32,
                                                 num_workers=0)
            for x, y in loader:
                batch.clear()
                bb.model(x)
                feats.append(batch[0])
                labels.append(y.numpy())
            split_x[split], split_y[split] = np.concatenate(feats), np.concatenate(labels)
    extraction_s = time.perf_counter() - t_ext
    held = "test" if "test" in split_x else "val"
    Xtr, ytr, Xte, yte = split_x["train"], split_y["train"], split_x[held], split_y[held]
    scores, fit_s = {}, {}
    t_fit = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, clf in classifiers().items():
            t = time.perf_counter()
            model = make_pipeline(StandardScaler(), clf).fit(Xtr, ytr)
            scores[name] = float(model.score(Xte, yte))
            fit_s[name] = time.perf_counter() - t
            print(f"{name:20s} {held} accuracy {scores[name]:.3f}  ({fit_s[name]:.1f} s)", flush=True)
    classifiers_s = time.perf_counter() - t_fit
    best = max(scores, key=scores.get)
    print(json.dumps({"extraction_s": extraction_s, "classifiers_s": classifiers_s, "fit_s": fit_s, "scores": scores,
                      "best": best, "held_out": held, "rows": {k: len(v) for k, v in split_y.items()},
                      "seconds_in_process": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
