"""The classifier zoo: a registry of name -> builder, each sized by the selection protocol.

A builder gets a :class:`Build` (seed, jobs, the :class:`~classify.protocol.Protocol` with the
problem's rows, dimensions and classes, and whether the budget asks for a cheaper variant) and
returns the classifier, the grid to sweep over the protocol's folds, and an estimate of its cost.
:func:`build_model` puts the preprocessing in front: as Pipeline steps, or, for the chunked
solvers (``LinearProbe``), inside the solver so no transformed copy of the matrix is made.
Models with their own selection (the linear probes' C path, kNN's one-search sweep, the torch
heads' early stopping) take the protocol's splitter directly.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline

from classify import protocol as protocols
from classify.kernel_svm import RBFSVC
from classify.knn import CosineKNN, SweptKNN  # noqa: F401 - CosineKNN re-exported
from classify.linear_probe import LinearProbe
from classify.preprocess import make_steps, parse_preprocess
from classify.splits import SmallDataKFold
from classify.sweep import Sweep
from classify.torch_heads import TorchHead
from featcache.common.errors import BadInput

CV_FOLDS = 5
EXACT_RBF_ROWS = 3_000  # above: Nystroem features + a linear SVM
NYSTROEM_LANDMARKS = 1024
RBF_GAMMA = 1.0  # on l2-normalized rows squared distances lie in [0, 4]; the middle of the exact grid


@dataclass(frozen=True)
class Build:
    """What a builder sizes its model from."""

    seed: int = 0
    jobs: int = 1
    protocol: protocols.Protocol = field(default_factory=lambda: protocols.choose(250, 1280, 2))
    approximate: bool = False  # the budget asks for the cheap variant
    class_weight: str | None = None  # "balanced": every model weighs each class alike (imbalanced train classes)

    @property
    def threads(self) -> int:
        return max(1, os.cpu_count() or 1) if self.jobs == -1 else self.jobs


@dataclass(frozen=True)
class Candidate:
    """What a builder returns: the classifier, how to tune it and what it will cost."""

    estimator: BaseEstimator
    grid: dict[str, list] = field(default_factory=dict)  # classifier params to sweep; empty: no sweep
    scoring: str = "accuracy"  # sklearn scorer name the sweep maximizes
    cost: float = 0.0  # estimated work, in seconds of a 1-GFLOP/s core (see classify.budget)
    note: str = ""  # what the protocol changed, shown with the chosen params (e.g. "Nystroem 1024")
    chunked: bool = False  # the estimator takes ``preprocess`` itself (LinearProbe)
    fit_cost: float | None = None  # work of ONE fit of the chosen configuration (a CV fold, the refit); None: cost
    search: BaseEstimator | None = None  # scores the grid instead of ``estimator`` (cheaper: no calibration)
    search_key: str = ""  # the grid's params inside ``estimator``: "estimator__" for a calibrated ``search``
    oof_fits: float | None = None  # what its out-of-fold shortcut (classify.oof) costs, in fits of the chosen
    # configuration, its train+val refit included; None: no shortcut (one fit per fold, then the refit)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[[Build], Candidate]
    preprocess: str  # default preprocessing spec, e.g. "standardize"
    default: bool  # part of DEFAULT_MODELS
    uses_torch: bool  # accepts log_dir (TensorBoard)
    summary: str  # one line for --help and the docs
    family: str = ""  # what the default comparison promises one model of: "MLP", "tree ensemble", ...


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, preprocess: str, summary: str, default: bool = True,
                   uses_torch: bool = False, family: str = "") -> Callable:
    """Register a builder under ``name``; ``family`` groups models the default comparison keeps
    one of (the first registered default of each family; default: its own family)."""
    def decorate(builder: Callable[[Build], Candidate]) -> Callable[[Build], Candidate]:
        if name in _REGISTRY:
            raise BadInput(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, builder, preprocess, default, uses_torch, summary, family or name)
        return builder
    return decorate


def family_of(name: str) -> str:
    return get_entry(name).family


def family_models(name: str) -> list[str]:
    """The default models of ``name``'s family, in registration order."""
    fam = family_of(name)
    return [e.name for e in _REGISTRY.values() if e.family == fam and e.default]


def first_of_family(name: str) -> bool:
    """Whether ``name`` is its family's one model in the default comparison (the first registered
    default one; the others are second variants the budget trims first)."""
    return (family_models(name) or [name])[0] == name


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BadInput(f"unknown model {name!r}{hint}; valid: {', '.join(_REGISTRY)}, all, default")
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
        raise BadInput(f"no model given in {spec!r}; valid: {', '.join(_REGISTRY)}, all, default")
    return list(dict.fromkeys(names))


def candidate(name: str, build: Build | None = None) -> Candidate:
    return get_entry(name).builder(build or Build())


def build_model(name: str, *, preprocess: str | Sequence[str] | None = None, seed: int = 0, jobs: int = 1,
                log_dir: str | os.PathLike | None = None, build: Build | None = None) -> BaseEstimator:
    """An unfitted estimator: ``[preprocessing] -> classifier``, wrapped in its sweep if it has one.

    ``preprocess=None`` keeps the model's default; ``"none"`` uses the raw features. ``build``
    sizes the model (default: a small store, 5-fold CV). ``jobs`` runs the sweep's fits in
    parallel (joblib), or the chunked solvers' matmuls on that many threads.
    """
    entry = get_entry(name)
    build = replace(build, seed=seed, jobs=jobs) if build is not None else Build(seed=seed, jobs=jobs)
    cand = entry.builder(build)
    if log_dir is not None:
        if not entry.uses_torch:
            raise BadInput(f"model {name!r} trains no torch head; log_dir (TensorBoard) applies only to "
                             f"{[e.name for e in _REGISTRY.values() if e.uses_torch]}")
        cand.estimator.set_params(log_dir=os.fspath(log_dir))
    spec = entry.preprocess if preprocess is None else preprocess
    if cand.chunked:
        est = cand.estimator
        at = [i for i, s in enumerate(est.preprocess) if s.startswith("nystroem:")]
        kernel = tuple(est.preprocess[at[0]:]) if at else ()  # part of the model, not preprocessing
        est.set_params(preprocess=tuple(parse_preprocess(spec)) + kernel)
        return Pipeline([("clf", est)])
    pipe = Pipeline(make_steps(spec, seed=seed) + [("clf", cand.estimator)])
    if not cand.grid:
        return pipe
    grid = {f"clf__{k}": v for k, v in cand.grid.items()}
    if cand.search is None:
        return Sweep(pipe, grid, scoring=cand.scoring, cv=build.protocol.splitter(seed), n_jobs=jobs)
    search = Pipeline(make_steps(spec, seed=seed) + [("clf", cand.search)])
    return Sweep(search, grid, scoring=cand.scoring, cv=build.protocol.splitter(seed), n_jobs=jobs, final=pipe,
                 final_key=cand.search_key)


class GroupedCalibratedClassifierCV(CalibratedClassifierCV):
    """CalibratedClassifierCV whose calibration folds keep each image's augmented views together.

    sklearn routes ``groups`` to this splitter only under metadata routing; here ``fit`` takes
    them directly (``classify.model_inputs.fit_params`` passes them) and turns ``cv`` (a
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


# --------------------------------------------------------------------------- costs
# Work in GFLOP-seconds of one core (classify.budget divides by the machine's measured rate).
# The constants were fitted to bench/classify_scale.py on the 2-core VM; the report prints each
# estimate beside the measured time.


# Fitted to fit, CV and refit seconds measured on the sample (81 rows), dtd10 (600) and
# imagenette (4,000), Lite0 1280-d, on the 2-core VM (bench/small_n.py prints both):
PROBE_EVAL_S = 1e-3  # torch L-BFGS's fixed cost per function evaluation (op dispatch, the line search), at any size:
# 1.5-1.9 ms an evaluation on 64 rows, 2.1-2.7 ms on 480 (dtd10, 10 classes; bench/family_costs.py, 2026-12-07)
STEP_S = 8e-4  # a torch head's fixed cost per minibatch step (Adam, autograd), besides the matmuls
TREE_S = 1e-3  # a tree's fixed cost, however few rows
SVC_FIT_S = 3e-3  # a libsvm fit's fixed cost (setup, the kernel's copy)
# Out-of-fold shortcuts (classify.oof), in fits of the chosen configuration, the train+val refit
# included (bench/family_costs.py): the batched linear head's 10 folds + refit ran ~LINEAR_OOF_FITS
# fits' time; the out-of-bag forest is one fit on train+val (1.25x train's rows) and its trees'
# out-of-bag votes.
LINEAR_OOF_FITS = 6.0
KNN_SEARCH = 2.0  # a chunked float32 search ran at ~1/2 of machine_gflops' peak (0.3-0.5 s for 5,000-10,000 rows)
FOREST_OOF_FITS = 1.5
GFLOPS_REF = 170.0  # classify.budget.machine_gflops() on that VM: fixed costs are stated in its GFLOP
SMALL_MATMUL = 6.0  # small products on one thread ran at ~1/6 of machine_gflops' peak


def _probe_cost(p: protocols.Protocol, n_cs: int, width: int | None = None, extra: float = 0.0,
                single: bool = False, evals: float = 20.0) -> float:
    """The C path (``evals`` per C per fold, warm-started) and the refit; ``single``: one fit at a
    fixed C from a cold start (a CV fold, ``evals`` evaluations)."""
    n, c, d = p.n_rows, max(p.n_classes, 16), width or p.n_dims
    per_eval = 4.0 * n * d * c / 1e9 * SMALL_MATMUL + extra + PROBE_EVAL_S * GFLOPS_REF
    if single:
        return per_eval * evals
    held_frac = p.holdout if p.selection == "holdout" else 1.0 / p.folds
    return per_eval * ((1 - held_frac) * p.n_fits * n_cs * evals + 60)


def _hinge_evals(p: protocols.Protocol) -> float:
    """A cold squared-hinge fit's evaluations: ~45 at 81 rows, ~100 at 600, ~220 at 4,000."""
    return 8.0 * p.n_rows ** 0.4


def _head_cost(p: protocols.Protocol, hidden: tuple[int, ...], epochs: float, batch: int) -> float:
    sizes = (p.n_dims, *hidden, p.n_classes)
    params = sum(a * b for a, b in zip(sizes, sizes[1:]))
    steps = max(p.n_rows / batch, 1.0)
    # batches of 512 on every core (large stores) ran their matmuls at ~2/3 of peak (10^4 rows, bench/family_costs.py)
    matmuls = 6.0 * p.n_rows * params / 1e9 * (1.5 if batch >= 512 else SMALL_MATMUL * 0.7 if hidden else SMALL_MATMUL)
    return epochs * (matmuls + (steps * STEP_S * (1.5 if hidden else 1.0) + 1e-3) * GFLOPS_REF)


def _small_head_epochs(p: protocols.Protocol, hidden: tuple[int, ...]) -> float:
    """Epochs early stopping ran (patience 10, HEAD_TOL): MLPs ~22 at 100 rows, ~15 at 600, 11 at
    4,000; the linear head ~20-25, 31 at 4,000 (imagenette)."""
    if hidden:
        return float(np.clip(2000 / max(p.n_rows, 1), 12, 40))
    return float(min(20 + p.n_rows / 400, 35))


# --------------------------------------------------------------------------- the zoo
# Grids run from the most to the least regularized: ties go to the first candidate, so an
# undecided sweep picks the simpler model.


def _probe(b: Build, loss: str, cs: Sequence[float], preprocess: tuple[str, ...] = ("standardize",)) -> LinearProbe:
    # Tolerances bound the largest gradient entry (sklearn's tol). Path fits only rank C: for the
    # log loss they still converge further than the refit (2e-5: a stalled weak-C fit misranks).
    # The squared hinge's gradients start ~40x larger and its piecewise-quadratic tail is slow:
    # at 1e-4 its path took 3x longer on 9k x 1280 x 100 and chose the same C.
    hinge = loss == "squared_hinge"
    return LinearProbe(loss=loss, Cs=tuple(float(c) for c in cs), cv=b.protocol.splitter(b.seed), preprocess=preprocess,
                       path_tol=2e-3 if hinge else 2e-5, tol=5e-4 if hinge else 1e-4,
                       max_iter=50 if b.approximate else 100, refine=not b.approximate, n_jobs=b.threads,
                       random_state=b.seed, class_weight=b.class_weight)


@register_model("logreg", preprocess="standardize", family="logistic regression",
                summary="multinomial L2 logistic regression, torch L-BFGS, warm-started C path (log loss)")
def _logreg(b: Build) -> Candidate:
    cs = np.logspace(-3, 3, 4) if b.approximate else np.logspace(-4, 4, 9)
    return Candidate(_probe(b, "log", cs), cost=_probe_cost(b.protocol, len(cs)), chunked=True,
                     fit_cost=_probe_cost(b.protocol, 1, single=True, evals=40))


@register_model("linear", preprocess="standardize", uses_torch=True, family="linear head",
                summary="torch nn.Linear head, Adam, early stopping")
def _linear(b: Build) -> Candidate:
    # One torch thread whatever --jobs says: on a (1280 x classes) head a second thread made
    # training 15x slower on a 2-core machine (synchronization costs more than the matmuls).
    # lr 3e-3: at 1e-3 the head was still improving at epoch 300 on the bundled sample.
    head = _head(b, ())
    epochs = min(head.max_epochs, 60) if b.protocol.large else _small_head_epochs(b.protocol, ())
    # out-of-fold: the folds and the refit as one batched model (classify.head_folds)
    return Candidate(head, cost=_head_cost(b.protocol, (), epochs, head.batch_size), oof_fits=LINEAR_OOF_FITS)


# Early stopping counts an epoch as better only when its val loss is lower by more than this:
# on the bundled sample the heads' val loss crept down ~3e-4 an epoch for 100+ epochs (the linear
# head 129 epochs a fold on Lite2). With it, 10-fold CV on the sample and dtd10 (Lite0, Lite2) ran
# 1.1-4.5x faster (linear) and 1.1-1.7x (MLPs), CV accuracy within 0.4 points (/tmp bench, 2026-12-07).
HEAD_TOL = 1e-3


def _head(b: Build, hidden: tuple[int, ...], **kw: Any) -> TorchHead:
    """Small stores: the tutorials' settings. Large ones: batches of 512 on every core, a higher
    learning rate, less patience and at most 1M (linear) or 2M (MLP) row-passes, 10-100 epochs,
    so the cost grows linearly with rows and stays bounded."""
    if not b.protocol.large:
        # patience 10: on dtd10 every head's best epoch came within 10 of the one before it
        # (linear and mlp at epoch 3, mlp-bn 13); 20 ran twice the epochs for the same weights.
        return TorchHead(hidden, lr=3e-3 if not hidden else 1e-3, patience=10, tol=HEAD_TOL, random_state=b.seed,
                         n_jobs=1, class_weight=b.class_weight, **kw)
    # MLPs peak within ~30 epochs here and overfit after; the linear head creeps on for longer.
    epochs = int(np.clip((1e6 if not hidden else 2e6) / b.protocol.n_rows, 10, 60 if not hidden else 100))
    return TorchHead(hidden, lr=5e-3 if not hidden else 2e-3, batch_size=512,
                     max_epochs=max(epochs // (2 if b.approximate else 1), 5), patience=8 if not hidden else 5,
                     val_fraction=0.1, tol=HEAD_TOL, random_state=b.seed, n_jobs=b.threads, class_weight=b.class_weight,
                     **kw)


@register_model("mlp", preprocess="standardize", uses_torch=True, family="MLP head",
                summary="torch MLP head 512-256, ReLU, dropout 0.5, early stopping")
def _mlp(b: Build) -> Candidate:
    head = _head(b, (512, 256), dropout=0.5)
    epochs = min(head.max_epochs, 20) if b.protocol.large else _small_head_epochs(b.protocol, (512, 256))
    return Candidate(head, cost=_head_cost(b.protocol, (512, 256), epochs, head.batch_size))


@register_model("mlp-bn", preprocess="standardize", uses_torch=True, family="MLP head",
                summary="torch MLP head 512-256 with BatchNorm and dropout 0.5")
def _mlp_bn(b: Build) -> Candidate:
    head = _head(b, (512, 256), dropout=0.5, batchnorm=True)
    epochs = min(head.max_epochs, 20) if b.protocol.large else _small_head_epochs(b.protocol, (512, 256))
    return Candidate(head, cost=_head_cost(b.protocol, (512, 256), epochs, head.batch_size))


@register_model("svm-linear", preprocess="standardize", family="linear SVM",
                summary="linear SVM (squared hinge, one-vs-rest), torch L-BFGS, warm-started C path")
def _svm_linear(b: Build) -> Candidate:
    cs = np.logspace(-4, -1, 2) if b.approximate else np.logspace(-5, 0, 6)
    # The squared hinge's cold fits run long, more so with rows (its piecewise-quadratic tail).
    return Candidate(_probe(b, "squared_hinge", cs), cost=_probe_cost(b.protocol, len(cs), evals=20), chunked=True,
                     fit_cost=_probe_cost(b.protocol, 1, single=True, evals=_hinge_evals(b.protocol)))


@register_model("svm-rbf", preprocess="standardize,l2", family="RBF SVM",
                summary=f"RBF SVC, C and gamma swept, sigmoid-calibrated; above {EXACT_RBF_ROWS:,} rows Nystroem "
                        f"({NYSTROEM_LANDMARKS}) + linear SVM")
def _svm_rbf(b: Build) -> Candidate:
    p = b.protocol
    if p.n_rows <= EXACT_RBF_ROWS and not b.approximate:
        # Rows are unit vectors after l2, so one gamma grid fits any feature dimension.
        # SVC(probability=True) is deprecated in sklearn 1.9.
        svc = RBFSVC(random_state=b.seed, class_weight=b.class_weight)  # SVC(kernel="rbf"), kernel from one BLAS product
        clf = GroupedCalibratedClassifierCV(svc, method="sigmoid", cv=SmallDataKFold(3, random_state=b.seed),
                                            ensemble=False)
        # The grid is searched on the bare SVC (accuracy of its own decision), and only the chosen
        # (C, gamma) is calibrated: 4x fewer SVC fits than calibrating every candidate, which was
        # 6 s of dtd10's 8 s for this model.
        grid = {"C": [0.3, 1.0, 3.0, 10.0, 30.0], "gamma": [0.1, 0.3, 1.0, 3.0]}
        one = _rbf_fit_work(p)  # a calibrated fit (3 calibration folds, the kernel predictions) ran ~8 of them
        # A fold scores the 20 candidates from one distance matrix (RBFSVC.grid_predictions): ~7 fits'
        # time, not 20 (the sweep on the sample's 131 rows: 0.96 -> 0.31 s).
        return Candidate(clf, grid, cost=(7 * p.n_fits + 4) * one, fit_cost=8 * one,
                         search=RBFSVC(random_state=b.seed, class_weight=b.class_weight),
                         search_key="estimator__")
    m = min(NYSTROEM_LANDMARKS // (2 if b.approximate else 1), max(64, p.n_rows // 4))
    cs = np.logspace(-4, -1, 3) if b.approximate else np.logspace(-5, 0, 6)
    # The kernel features are standardized too: raw, their tiny scale needed C=10 and 540 L-BFGS
    # iterations on 9k x 1280 x 100; standardized, 240 and the same accuracy (0.867 vs 0.870).
    probe = _probe(b, "squared_hinge", cs, ("standardize", "l2", f"nystroem:{m}:{RBF_GAMMA}", "standardize"))
    kernel_map = 2 * p.n_rows * m * p.n_dims / 1e9 * SMALL_MATMUL
    cost = _probe_cost(p, len(cs), width=m, evals=40) + kernel_map * (p.n_fits + 1)
    # a cold fit on the kernel features ran ~4x a plain hinge probe's evaluations
    single = _probe_cost(p, 1, width=m, single=True, evals=4 * _hinge_evals(p)) + kernel_map
    return Candidate(probe, cost=cost, chunked=True, fit_cost=single,
                     note=f"Nystroem approximation: {m} landmarks (gamma {RBF_GAMMA}) + linear SVM")


@register_model("knn", preprocess="none", family="kNN",
                summary="k nearest neighbours, cosine, k and weighting from one search per fold")
def _knn(b: Build) -> Candidate:
    p = b.protocol
    held = p.holdout if p.selection == "holdout" else 1.0 / p.folds
    work = 2.0 * p.n_rows ** 2 * held * (1 - held) * p.n_dims * p.n_fits / 1e9 * KNN_SEARCH
    return Candidate(SweptKNN(cv=p.splitter(b.seed), n_jobs=b.threads, random_state=b.seed, class_weight=b.class_weight),
                     cost=work, fit_cost=2.0 * p.n_rows ** 2 * 0.2 * p.n_dims / 1e9 * KNN_SEARCH)


@register_model("knn-dino", preprocess="none", family="kNN",
                summary="DINO's weighted k-NN: cosine, 20 neighbours, votes exp(similarity / 0.07), no sweep")
def _knn_dino(b: Build) -> Candidate:
    p = b.protocol
    # fitting stores the rows; a CV fold's fit and scoring is one search of its held-out rows
    return Candidate(CosineKNN(20, weights="dino", class_weight=b.class_weight), cost=0.0,
                     fit_cost=2.0 * p.n_rows * p.n_rows * 0.2 * p.n_dims / 1e9 * KNN_SEARCH)


def _forest(cls: type, b: Build, **kw: Any) -> Candidate:
    """Small stores: 200 trees, max_features sqrt (sklearn's default, and what the log2|sqrt sweep
    chose on dtd10 and the bundled sample, for 11x the fits). Large: 100 trees (50 approximate), each
    grown on at most ``max_rows`` bootstrap rows, the trees built on every core."""
    p = b.protocol
    if not p.large and not b.approximate:
        clf = cls(n_estimators=200, max_features="sqrt", random_state=b.seed, n_jobs=1, class_weight=b.class_weight, **kw)
        return Candidate(clf, cost=200 * (_tree_work(cls, p.n_rows, p) + TREE_S * GFLOPS_REF),
                         oof_fits=FOREST_OOF_FITS if clf.bootstrap else None)
    max_rows = 1_000 if cls is RandomForestClassifier else 5_000
    trees = (20 if b.approximate else 40) if cls is RandomForestClassifier else (50 if b.approximate else 100)
    rows = min(p.n_rows, max_rows)
    clf = cls(n_estimators=trees, max_features="sqrt", bootstrap=True, max_samples=rows if rows < p.n_rows else None,
              random_state=b.seed, n_jobs=b.threads, class_weight=b.class_weight, **kw)
    work = trees * _tree_work(cls, rows, p) / max(1.0, 0.8 * b.threads)  # the trees on every core
    return Candidate(clf, cost=work, note=f"bounded: {trees} trees on <= {rows:,} rows each",
                     oof_fits=FOREST_OOF_FITS if clf.bootstrap else None)


def _rbf_fit_work(p: protocols.Protocol) -> float:
    """One libsvm fit on the precomputed kernel, the kernel's product included."""
    return (p.n_rows ** 2) * p.n_dims * 1.8e-8 / max(1.0, math.sqrt(p.n_classes)) + SVC_FIT_S * GFLOPS_REF


def _tree_work(cls: type, n: float, p: protocols.Protocol) -> float:
    # Best splits cost rows x classes per feature tried (sklearn's Gini scan); random ones rows.
    # Constants fitted to bench/classify_scale.py's 10k and 50k stores (1280-d, 100 classes).
    per = math.sqrt(p.n_dims) * n * math.log2(max(n, 2))
    return per * (p.n_classes * 0.5 + 2) * 8.5e-7 if cls is RandomForestClassifier else per * 2.4e-6


@register_model("rf", preprocess="none", family="tree ensemble",
                summary="random forest, 200 trees, max_features sqrt (bounded at scale)")
def _rf(b: Build) -> Candidate:
    return _forest(RandomForestClassifier, b)


@register_model("extratrees", preprocess="none", family="tree ensemble",
                summary="extremely randomized trees, 200, max_features sqrt (bounded at scale)")
def _extratrees(b: Build) -> Candidate:
    return _forest(ExtraTreesClassifier, b)


# Not in the default zoo: one tree per class per iteration made it the slowest model on a
# 10-class store (17 s of a 56 s zoo on 250 x 1280), and trees trail linear models on CNN features.
@register_model("hgb", preprocess="pca:64", default=False, family="tree ensemble",
                summary="histogram gradient boosting on 64 PCA components (early stopping at scale)")
def _hgb(b: Build) -> Candidate:
    p = b.protocol
    # one tree per class per iteration: ~0.4 ms each, and 1 us per row (5 and 12 ms an iteration on
    # 80 and 800 rows x 10 classes, bench/family_costs.py)
    work = p.n_classes * (4e-4 + p.n_rows * 1e-6) * GFLOPS_REF
    if not p.large and not b.approximate:
        clf = HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=b.seed,
                                             class_weight=b.class_weight)
        return Candidate(clf, {"learning_rate": [0.05, 0.2]}, cost=work * 200 * (2 * p.n_fits + 1), fit_cost=work * 200)
    iters = 50 if b.approximate else 100
    clf = HistGradientBoostingClassifier(max_iter=iters, learning_rate=0.1, early_stopping=True, validation_fraction=0.1,
                                         n_iter_no_change=5, random_state=b.seed, class_weight=b.class_weight)
    return Candidate(clf, cost=work * iters, note=f"bounded: early stopping, <= {iters} iterations")


DEFAULT_MODELS: tuple[str, ...] = tuple(n for n, e in _REGISTRY.items() if e.default)


def describe_models() -> str:
    """One line per model, for --help."""
    return "\n".join(f"  {e.name:11s} {e.summary} [{e.preprocess}]{'' if e.default else ' (not in default)'}"
                     for e in _REGISTRY.values())


def search_space(name: str, build: Build | None = None) -> dict[str, Any]:
    """The grid a model sweeps with a Sweep (empty for models that select internally), for docs and tests."""
    return dict(candidate(name, build).grid)
