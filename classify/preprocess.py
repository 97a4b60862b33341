"""Feature preprocessing as composable sklearn steps: ``standardize``, ``l2``, ``pca:<n>``.

A spec such as ``"l2,standardize"`` becomes the leading steps of a model's Pipeline, so
the steps are fitted inside each CV fold (no leakage) and saved with the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from featcache.common.errors import BadInput

STEPS = ("standardize", "l2", "pca:<n>", "none")
_PCA = re.compile(r"pca:(\d+)")


class CappedPCA(TransformerMixin, BaseEstimator):
    """PCA to ``n_components``, or fewer when the (fold's) data has fewer rows or columns.

    A fixed ``pca:64`` must not break a sweep on a tiny fold of 40 rows.
    """

    def __init__(self, n_components: int = 64, *, random_state: int | None = 0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X)
        k = min(self.n_components, X.shape[0], X.shape[1])
        self.pca_ = PCA(n_components=k, random_state=self.random_state).fit(X)
        self.n_components_ = k
        return self

    def transform(self, X):
        check_is_fitted(self, "pca_")
        return self.pca_.transform(validate_data(self, X, reset=False))


def parse_preprocess(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"l2,standardize"`` -> ``("l2", "standardize")``; ``"none"`` or ``""`` -> ``()``."""
    if spec is None:
        return ()
    parts = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    parts = [p for p in parts if p and p != "none"]
    for p in parts:
        if p not in ("standardize", "l2") and not _PCA.fullmatch(p):
            raise BadInput(f"unknown preprocessing step {p!r}; valid: {', '.join(STEPS)} (comma-separated)")
        if _PCA.fullmatch(p) and int(p[4:]) < 1:
            raise BadInput(f"preprocessing step {p!r}: PCA needs at least 1 component")
    kinds = [p.split(":")[0] for p in parts]
    dupes = sorted({k for k in kinds if kinds.count(k) > 1})
    if dupes:
        raise BadInput(f"preprocessing {','.join(parts)!r} repeats {dupes}; give each step once")
    return tuple(parts)


def make_steps(spec: str | Sequence[str] | None, *, seed: int = 0) -> list[tuple[str, BaseEstimator]]:
    """Pipeline steps for a spec, named after the step kind (``standardize``, ``l2``, ``pca``)."""
    steps: list[tuple[str, BaseEstimator]] = []
    for p in parse_preprocess(spec):
        if p == "standardize":
            steps.append(("standardize", StandardScaler()))
        elif p == "l2":
            steps.append(("l2", Normalizer(norm="l2")))
        else:
            steps.append(("pca", CappedPCA(int(p[4:]), random_state=seed)))
    return steps

