"""How far each runtime and precision moves the features, and what that does to a linear probe.

Reference: torch fp32 on the same images. Per store: cosine of each row to the reference (mean
and min), the largest relative row error, and scikit-learn logistic regression's val accuracy
(standardized, C=0.1, as the earlier bf16 check), with its change in points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from harness import RESULTS, say, section

from featcache.store import read_rows


def logreg_val_accuracy(d: dict) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, va = d["split"] == "train", d["split"] == "val"
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(d["X"][tr], d["y"][tr])
    return float(model.score(d["X"][va], d["y"][va]))


def compare(reference: Path, other: Path) -> dict:
    a, b = read_rows(reference), read_rows(other)
    assert list(a["paths"]) == list(b["paths"])
    cos = (a["X"] * b["X"]).sum(1) / (np.linalg.norm(a["X"], axis=1) * np.linalg.norm(b["X"], axis=1))
    rel = np.linalg.norm(a["X"] - b["X"], axis=1) / np.linalg.norm(a["X"], axis=1)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "relative_max": float(rel.max()),
            "logreg_val_acc": logreg_val_accuracy(b)}


def agreement(stores: dict, model: str = "efficientnet_lite0") -> None:
    """``stores``: (model, runtime, precision) -> store path, from the runtimes section."""
    section(f"3. Features of each runtime and precision against torch fp32 ({model})")
    ref = stores[(model, "torch", "fp32")]
    base = logreg_val_accuracy(read_rows(ref))
    say(f"torch fp32: logreg val accuracy {base:.4f}")
    for (name, runtime, precision), path in stores.items():
        if name != model or (runtime, precision) == ("torch", "fp32"):
            continue
        c = compare(ref, path)
        delta = 100 * (c["logreg_val_acc"] - base)
        warn = "  WARNING: int8 moves the probe by more than 1 point" if precision == "int8" and abs(delta) > 1 else ""
        say(f"{runtime:8s} {precision}: cosine mean {c['cosine_mean']:.7f} (min {c['cosine_min']:.7f}), "
            f"max relative error {c['relative_max']:.1e}; logreg val accuracy {c['logreg_val_acc']:.4f} "
            f"({delta:+.2f} points){warn}")
        RESULTS[f"agreement/{model}/{runtime}/{precision}"] = {**c, "delta_points": delta}
    fp32 = RESULTS.get(f"agreement/{model}/openvino/fp32")
    if fp32:
        say(f"target: OpenVINO fp32 within cosine 0.9999 of torch on every row: min {fp32['cosine_min']:.7f}")
