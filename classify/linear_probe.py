"""Linear classifiers that scale: L2 logistic regression or a squared-hinge SVM, with C chosen
along a warm-started regularization path.

DINOv2's and CLIP_benchmark's linear probes, done on a CPU: full-batch L-BFGS in float32 torch
(:mod:`classify.lbfgs`), preprocessing applied chunk by chunk (:mod:`classify.chunkmap`), C swept
from strong to weak regularization with each fit starting where the previous one stopped, a
coarse grid refined around its best point, the path stopped once the held-out score has fallen
``patience`` times in a row, then one refit on every row. The folds come from ``cv`` (the
protocol's k-fold, repeated k-fold or single holdout); ``groups`` keeps augmented views of an
image on one side.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._available_if import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from classify import progress
from classify.chunkmap import ChunkMap, check_steps
from classify.lbfgs import CHUNK_ROWS, LOSSES, Rows, fit_linear, fold_affine, scores
from classify.splits import SmallDataKFold
from classify.torch_heads import torch_threads
from classify.weights import class_weights
from featcache.common.errors import BadInput

log = logging.getLogger(__name__)

COARSE_CS = tuple(float(c) for c in np.logspace(-4, 4, 9))  # decades, on standardized features


class LinearProbe(ClassifierMixin, BaseEstimator):
    """``loss="log"``: multinomial logistic regression (as sklearn's ``LogisticRegression``, C chosen
    by held-out log loss); ``loss="squared_hinge"``: one-vs-rest linear SVM (as ``LinearSVC``, C
    chosen by accuracy). ``C`` set: no sweep. ``preprocess`` runs inside the solver, chunk by chunk."""

    def __init__(self, *, loss: str = "log", C: float | None = None, Cs: tuple[float, ...] = COARSE_CS,
                 refine: bool = True, patience: int = 2, cv: object | None = None,
                 preprocess: tuple[str, ...] = ("standardize",), max_iter: int = 100, refit_max_iter: int = 500,
                 tol: float = 1e-4, path_tol: float = 2e-5, n_jobs: int | None = 1, chunk_rows: int = CHUNK_ROWS,
                 random_state: int = 0, class_weight: str | None = None):
        self.loss = loss
        self.class_weight = class_weight
        self.C = C
        self.Cs = Cs
        self.refine = refine
        self.patience = patience
        self.cv = cv
        self.preprocess = preprocess
        self.max_iter = max_iter
        self.refit_max_iter = refit_max_iter
        self.tol = tol
        self.path_tol = path_tol
        self.n_jobs = n_jobs
        self.chunk_rows = chunk_rows
        self.random_state = random_state

    @property
    def scoring(self) -> str:
        return "neg_log_loss" if self.loss == "log" else "accuracy"

    def _check_params(self) -> None:
        if self.loss not in LOSSES:
            raise BadInput(f"The 'loss' parameter of LinearProbe must be one of {LOSSES}. Got {self.loss!r} instead.")
        if self.C is not None and not (isinstance(self.C, (int, float)) and self.C > 0):
            raise BadInput(f"The 'C' parameter of LinearProbe must be None or a float > 0. Got {self.C!r} instead.")
        if not self.Cs or any(not (c > 0) for c in self.Cs):
            raise BadInput(f"The 'Cs' parameter of LinearProbe must be positive floats. Got {self.Cs!r} instead.")
        check_steps(self.preprocess)

    def fit(self, X, y, groups=None) -> LinearProbe:
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float16, np.float64], order="C")
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise BadInput(f"LinearProbe needs at least 2 classes in y; got 1 class: {self.classes_.tolist()}")
        self.fit_stats_ = {"path": [], "refit": None}
        self.class_weight_ = class_weights(self.class_weight, self.classes_, codes)
        with torch_threads(self.n_jobs):
            warm = None
            if self.C is None:
                self.best_params_, self.best_score_, warm = self._select(X, codes, groups)
            else:
                self.best_params_, self.best_score_ = {"C": float(self.C)}, math.nan
            C = self.best_params_["C"]
            self.map_ = ChunkMap(self.preprocess, random_state=self.random_state).fit(X, chunk=self.chunk_rows)
            data = Rows(X, codes, None, self.map_, self.chunk_rows, class_weight=self.class_weight_).materialize()
            W, b, info = fit_linear(data, len(self.classes_), C, loss=self.loss, W0=None if warm is None else warm[0],
                                    b0=None if warm is None else warm[1], max_iter=self.refit_max_iter, tol=self.tol)
            progress.advance()
        if not info.converged:
            log.info("LinearProbe(%s): refit at C=%.3g stopped at max_iter=%d", self.loss, C, self.refit_max_iter)
        self.fit_stats_["refit"] = vars(info)
        self.coef_, self.intercept_ = W.numpy(), b.numpy()
        self.n_iter_ = info.n_iter
        self.chosen_params_ = dict(self.best_params_)
        return self

    def _select(self, X: np.ndarray, codes: np.ndarray, groups) -> tuple[dict, float, tuple | None]:
        """Walk the C path on every fold; -> (best params, best mean score, a warm start for the refit)."""
        cv = self.cv if self.cv is not None else SmallDataKFold(5, random_state=self.random_state)
        folds = list(cv.split(X, codes, groups))
        self.n_splits_ = len(folds)
        prepared = []
        for fit_rows, held_rows in folds:
            fmap = ChunkMap(self.preprocess, random_state=self.random_state).fit(X, fit_rows, self.chunk_rows)
            prepared.append((Rows(X, codes[fit_rows], fit_rows, fmap, self.chunk_rows,
                                  class_weight=self.class_weight_).materialize(),
                             Rows(X, codes[held_rows], held_rows, fmap, self.chunk_rows).materialize()))
        coarse = sorted(float(c) for c in self.Cs)
        total = len(folds) * (len(coarse) + (2 if self.refine else 0)) + 1
        progress.set_total(total)
        results: dict[float, float] = {}
        weights: dict[float, list] = {}
        prev: list = [None] * len(folds)
        best, falls, done = -math.inf, 0, 0
        for C in coarse:
            results[C], weights[C] = self._at(C, prepared, prev)
            prev = weights[C]
            done += len(folds)
            falls = 0 if results[C] > best else falls + 1
            best = max(best, results[C])
            if falls >= self.patience:
                break
        evaluated = list(results)
        if self.refine and len(coarse) > 1:
            i = coarse.index(max(evaluated, key=lambda c: (results[c], -c)))
            ratio = math.sqrt(coarse[1] / coarse[0])
            for C in (coarse[i] / ratio, coarse[i] * ratio):
                lower = [c for c in evaluated if c < C]
                start = weights[max(lower)] if lower else [None] * len(folds)
                results[C], weights[C] = self._at(C, prepared, start)
                done += len(folds)
        progress.set_total(done + 1)
        self.cv_results_ = {"C": sorted(results), "mean_score": [results[c] for c in sorted(results)]}
        C = max(results, key=lambda c: (results[c], -c))  # ties: the stronger regularization
        log.debug("LinearProbe(%s): C path %s -> C=%.4g", self.loss,
                  {f"{c:.3g}": round(s, 4) for c, s in sorted(results.items())}, C)
        import torch

        warm = tuple(torch.stack(parts).mean(0) for parts in zip(*weights[C]))  # the folds' mean (W, b)
        return {"C": C}, results[C], warm

    def _at(self, C: float, prepared: list, start: list) -> tuple[float, list]:
        """Mean held-out score at C over the folds, and each fold's (W, b)."""
        values, out = [], []
        for (fit_data, held), w0 in zip(prepared, start):
            W, b, info = fit_linear(fit_data, len(self.classes_), C, loss=self.loss, W0=None if w0 is None else w0[0],
                                 b0=None if w0 is None else w0[1], max_iter=self.max_iter, tol=self.path_tol)
            s = scores(W, b, held)
            yh = np.asarray(held.y)
            if self.loss == "log":
                import torch

                values.append(-float((torch.logsumexp(s, 1) - s[np.arange(len(yh)), yh]).double().mean()))
            else:
                values.append(float((s.argmax(1).numpy() == yh).mean()))
            out.append((W, b))
            self.fit_stats_["path"].append({"C": C, **vars(info)})
            progress.advance()
        return float(np.mean(values)), out

    def raw_linear(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (K, D), b (K,)) in float64 on the raw features: softmax(x @ W.T + b) = predict_proba(x).
        The standardization folds in (W' = W / scale, b' = b - W' . mean); other steps cannot."""
        check_is_fitted(self, "coef_")
        if self.loss != "log" or any(s != "standardize" for s in self.map_.steps):
            raise BadInput(f"a LinearProbe(loss={self.loss!r}, preprocess={self.map_.steps}) is not a softmax "
                             "over a linear map of the raw features")
        W, b = self.coef_.astype(np.float64), self.intercept_.astype(np.float64)
        if not self.map_.params_:
            return W, b
        p = self.map_.params_[0]
        return fold_affine(W, b, (p["mean"].astype(np.float64), p["inv_scale"].astype(np.float64)))

    def _scores(self, X):
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float16, np.float64], order="C")
        import torch

        return scores(torch.from_numpy(self.coef_), torch.from_numpy(self.intercept_),
                      Rows(X, None, None, self.map_, self.chunk_rows))

    def decision_function(self, X) -> np.ndarray:
        s = self._scores(X).numpy()
        return s[:, 1] - s[:, 0] if len(self.classes_) == 2 and self.loss == "squared_hinge" else s

    def _has_proba(self) -> bool:
        return self.loss == "log"

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        import torch

        # float64 softmax: rows must sum to 1 within log_loss's tolerance
        return torch.softmax(self._scores(X).double(), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[self._scores(X).argmax(1).numpy()]
