"""The classifier zoo: a registry of name -> builder, each a Pipeline with its own sweep.

A builder returns the bare classifier and the grid to sweep; :func:`build_model` puts the
preprocessing steps in front and wraps the Pipeline in a GridSearchCV over a seeded,
stratified k-fold of the training rows (refit on all of them). The torch heads choose
their epoch count by early stopping instead of a grid.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from classify.preprocess import make_steps
from classify.splits import SmallDataKFold
from classify.torch_heads import TorchHead

CV_FOLDS = 5


@dataclass(frozen=True)
class Candidate:
    """What a builder returns: the classifier and how to tune it."""

    estimator: BaseEstimator
    grid: dict[str, list] = field(default_factory=dict)  # classifier params to sweep; empty: no sweep
    scoring: str = "accuracy"  # sklearn scorer name the sweep maximizes


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[[int], Candidate]  # seed -> Candidate
    preprocess: str  # default preprocessing spec, e.g. "standardize"
    default: bool  # part of DEFAULT_MODELS
    uses_torch: bool  # accepts log_dir (TensorBoard)
    summary: str  # one line for --help and the docs


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, preprocess: str, summary: str, default: bool = True,
                   uses_torch: bool = False) -> Callable:
    def decorate(builder: Callable[[int], Candidate]) -> Callable[[int], Candidate]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, builder, preprocess, default, uses_torch, summary)
        return builder
    return decorate


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; valid: {', '.join(_REGISTRY)}, all, default")
    return _REGISTRY[name]


def resolve_models(spec: str | Sequence[str] | None) -> list[str]:
    """``"logreg,svm-rbf"``, ``"all"``, ``"default"`` or None (default) -> registered names, in order."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec or ["default"])
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        group = {"all": list(_REGISTRY), "default": list(DEFAULT_MODELS)}.get(part)
        names += group if group is not None else [get_entry(part).name]
    if not names:
        raise ValueError(f"no model given in {spec!r}; valid: {', '.join(_REGISTRY)}, all, default")
    return list(dict.fromkeys(names))


def build_model(name: str, *, preprocess: str | Sequence[str] | None = None, seed: int = 0, jobs: int = 1,
                log_dir: str | os.PathLike | None = None) -> BaseEstimator:
    """An unfitted estimator: ``[preprocessing] -> classifier``, wrapped in its sweep if it has one.

    ``preprocess=None`` keeps the model's default; ``"none"`` uses the raw features. ``jobs``
    runs the sweep's fits in parallel (joblib); each fit, and each torch head, uses one thread.
    """
    entry = get_entry(name)
    cand = entry.builder(seed)
    if log_dir is not None:
        if not entry.uses_torch:
            raise ValueError(f"model {name!r} trains no torch head; log_dir (TensorBoard) applies only to "
                             f"{[e.name for e in _REGISTRY.values() if e.uses_torch]}")
        cand.estimator.set_params(log_dir=os.fspath(log_dir))
    steps = make_steps(entry.preprocess if preprocess is None else preprocess, seed=seed)
    pipe = Pipeline(steps + [("clf", cand.estimator)])
    if not cand.grid:
        return pipe
    grid = {f"clf__{k}": v for k, v in cand.grid.items()}
    return GridSearchCV(pipe, grid, scoring=cand.scoring, cv=SmallDataKFold(CV_FOLDS, random_state=seed),
                        n_jobs=jobs, refit=True, error_score="raise")


class GroupedCalibratedClassifierCV(CalibratedClassifierCV):
    """CalibratedClassifierCV whose calibration folds keep each image's augmented views together.

    sklearn routes ``groups`` to this splitter only under metadata routing; here ``fit`` takes
    them directly (``classify.train.fit_params`` passes them) and turns ``cv`` (a
    :class:`SmallDataKFold`) into its grouped folds for this fit only.
    """

    def fit(self, X, y, sample_weight=None, groups=None, **fit_params):  # noqa: ANN001, ANN201
        if groups is None:
            return super().fit(X, y, sample_weight=sample_weight, **fit_params)
        cv = self.cv
        self.cv = list(SmallDataKFold(cv.n_splits, random_state=cv.random_state, held_views=True).split(X, y, groups))
        try:
            return super().fit(X, y, sample_weight=sample_weight, **fit_params)
        finally:
            self.cv = cv


class CosineKNN(ClassifierMixin, BaseEstimator):
    """k nearest neighbours by cosine distance, k capped at the number of training rows.

    The cap lets one k grid serve a 40-row CV fold and a 10,000-row store alike.
    """

    def __init__(self, n_neighbors: int = 5, *, weights: str = "distance"):
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X, y) -> "CosineKNN":
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.n_neighbors_ = int(min(self.n_neighbors, len(y)))
        self.knn_ = KNeighborsClassifier(self.n_neighbors_, weights=self.weights, metric="cosine",
                                         algorithm="brute").fit(X, y)
        self.classes_ = self.knn_.classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "knn_")
        return self.knn_.predict_proba(validate_data(self, X, reset=False))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "knn_")
        return self.knn_.predict(validate_data(self, X, reset=False))


# --------------------------------------------------------------------------- the zoo
# Grids run from the most to the least regularized: GridSearchCV breaks ties by the first
# candidate, so an undecided sweep picks the simpler model.


@register_model("logreg", preprocess="standardize", summary="L-BFGS logistic regression, C by 5-fold CV log loss")
def _logreg(seed: int) -> Candidate:
    clf = LogisticRegression(solver="lbfgs", max_iter=1000, random_state=seed)
    return Candidate(clf, {"C": [float(c) for c in np.logspace(-4, 4, 15)]}, scoring="neg_log_loss")


@register_model("linear", preprocess="standardize", uses_torch=True,
                summary="torch nn.Linear head, Adam, early stopping")
def _linear(seed: int) -> Candidate:
    # One torch thread whatever --jobs says: on a (1280 x classes) head a second thread made
    # training 15x slower on a 2-core machine (synchronization costs more than the matmuls).
    # lr 3e-3: at 1e-3 the head was still improving at epoch 300 on the bundled sample.
    return Candidate(TorchHead((), lr=3e-3, random_state=seed, n_jobs=1))


@register_model("mlp", preprocess="standardize", uses_torch=True,
                summary="torch MLP head 512-256, ReLU, dropout 0.5, early stopping")
def _mlp(seed: int) -> Candidate:
    return Candidate(TorchHead((512, 256), dropout=0.5, random_state=seed, n_jobs=1))


@register_model("mlp-bn", preprocess="standardize", uses_torch=True,
                summary="torch MLP head 512-256 with BatchNorm and dropout 0.5")
def _mlp_bn(seed: int) -> Candidate:
    return Candidate(TorchHead((512, 256), dropout=0.5, batchnorm=True, random_state=seed, n_jobs=1))


@register_model("svm-linear", preprocess="standardize", summary="LinearSVC, C swept (no probabilities)")
def _svm_linear(seed: int) -> Candidate:
    clf = LinearSVC(C=1.0, max_iter=5000, random_state=seed)
    return Candidate(clf, {"C": [float(c) for c in np.logspace(-5, 0, 6)]})


@register_model("svm-rbf", preprocess="standardize,l2",
                summary="RBF SVC, C and gamma swept, sigmoid-calibrated probabilities")
def _svm_rbf(seed: int) -> Candidate:
    # Rows are unit vectors after l2, so squared distances lie in [0, 4] and one gamma grid
    # fits any feature dimension. SVC(probability=True) is deprecated in sklearn 1.9.
    svc = SVC(kernel="rbf", random_state=seed)
    clf = GroupedCalibratedClassifierCV(svc, method="sigmoid", cv=SmallDataKFold(3, random_state=seed),
                                        ensemble=False)
    return Candidate(clf, {"estimator__C": [0.3, 1.0, 3.0, 10.0, 30.0], "estimator__gamma": [0.1, 0.3, 1.0, 3.0]})


@register_model("knn", preprocess="none", summary="k nearest neighbours, cosine distance, k and weighting swept")
def _knn(seed: int) -> Candidate:
    return Candidate(CosineKNN(), {"n_neighbors": [21, 15, 11, 7, 5, 3, 1], "weights": ["uniform", "distance"]})


@register_model("rf", preprocess="none", summary="random forest, 200 trees, max_features log2|sqrt")
def _rf(seed: int) -> Candidate:
    clf = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    return Candidate(clf, {"max_features": ["log2", "sqrt"]})


@register_model("extratrees", preprocess="none", summary="extremely randomized trees, 200, max_features log2|sqrt")
def _extratrees(seed: int) -> Candidate:
    clf = ExtraTreesClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    return Candidate(clf, {"max_features": ["log2", "sqrt"]})


# Not in the default zoo: one tree per class per iteration made it the slowest model on a
# 10-class store (17 s of a 56 s zoo on 250 x 1280), and trees trail linear models on CNN features.
@register_model("hgb", preprocess="pca:64", default=False,
                summary="histogram gradient boosting on 64 PCA components")
def _hgb(seed: int) -> Candidate:
    clf = HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=seed)
    return Candidate(clf, {"learning_rate": [0.05, 0.2]})


DEFAULT_MODELS: tuple[str, ...] = tuple(n for n, e in _REGISTRY.items() if e.default)


def describe_models() -> str:
    """One line per model, for --help."""
    return "\n".join(f"  {e.name:11s} {e.summary} [{e.preprocess}]{'' if e.default else ' (not in default)'}"
                     for e in _REGISTRY.values())


def search_space(name: str) -> dict[str, Any]:
    """The grid a model sweeps (empty for early-stopped heads), for docs and tests."""
    entry = get_entry(name)
    return dict(entry.builder(0).grid)
