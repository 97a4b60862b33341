"""Balanced class weights: each class weighs as much as any other in a fit, whatever its rows.

scikit-learn's ``class_weight="balanced"`` rule, ``n / (k * count)``, computed from the rows a fit
sees (a CV fold's own), shared by the estimators of this package that implement it themselves
(the L-BFGS probes, the torch heads, the kNN votes); the forests and the SVM take scikit-learn's.
"""

from __future__ import annotations

import numpy as np

from featcache.common.errors import BadInput


def class_weights(class_weight: object, classes: np.ndarray, codes: np.ndarray) -> np.ndarray | None:
    """scikit-learn's ``class_weight`` contract as a weight per class code: None (unweighted),
    ``"balanced"``, or a dict {class label: weight} (classes it leaves out weigh 1)."""
    if class_weight is None:
        return None
    if class_weight == "balanced":
        return balanced_weights(codes, len(classes))
    if isinstance(class_weight, dict):
        return np.array([float(class_weight.get(c, 1.0)) for c in np.asarray(classes).tolist()])
    raise BadInput(f"class_weight must be None, 'balanced' or a dict of class weights; got {class_weight!r}")


def balanced_weights(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """A weight per class code 0..n_classes-1 (a class absent from ``codes`` weighs 0)."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    out = np.zeros(n_classes, dtype=np.float64)
    out[present] = counts.sum() / (present.sum() * counts[present])
    return out
