"""A grid sweep over the protocol's folds that reports each fit as it lands, then refits once.

GridSearchCV's contract (``best_params_``, ``best_score_``, ``best_estimator_``, ``n_splits_``,
``cv_results_``, refit on every row, ties to the first candidate) with three differences: each
finished fit advances the model's progress bar (sklearn's sweep is silent until it returns),
fit parameters that hold one value per row (``clf__groups``) are cut to each fold, and the
candidates may be scored with a cheaper estimator than the one refitted (``final``): the RBF
SVM's grid is searched on the bare SVC and only the chosen one is calibrated, 4x fewer SVC fits.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import ParameterGrid
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_is_fitted

from classify import progress
from featcache.common.interrupt import ignore_sigint_in_worker


def _fit_score(estimator, X, y, train, test, params: dict, scorer, fit_params: dict) -> float:
    ignore_sigint_in_worker()  # Ctrl-C is the parent's to handle: it finishes this fit first
    est = clone(estimator).set_params(**params)
    est.fit(X[train], y[train], **_cut(fit_params, train, len(y)))
    return float(scorer(est, X[test], y[test]))


def _cut(fit_params: dict, rows: np.ndarray, n: int) -> dict:
    return {k: (np.asarray(v)[rows] if hasattr(v, "__len__") and len(v) == n else v) for k, v in fit_params.items()}


def _best_has(attr: str):
    return lambda self: hasattr(self.best_estimator_ if hasattr(self, "best_estimator_") else self.estimator, attr)


class Sweep(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    def __init__(self, estimator, param_grid: dict, *, scoring: str = "accuracy", cv=None, n_jobs: int | None = 1,
                 final=None, final_key: str = ""):
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.cv = cv
        self.n_jobs = n_jobs
        self.final = final  # refitted with the chosen params instead of ``estimator`` (None: estimator)
        self.final_key = final_key  # inserted after the step name: "clf__C" -> "clf__estimator__C"

    def final_params(self, params: dict) -> dict:
        """A candidate's params as the refitted estimator names them."""
        if self.final is None or not self.final_key:
            return dict(params)
        return {(f"{k.split('__', 1)[0]}__{self.final_key}{k.split('__', 1)[1]}" if "__" in k else k): v
                for k, v in params.items()}

    def unfitted_final(self, params: dict):  # noqa: ANN201
        """The estimator the sweep refits, unfitted, with ``params`` (search names) set."""
        return clone(self.estimator if self.final is None else self.final).set_params(**self.final_params(params))

    def fit(self, X, y, groups=None, **fit_params) -> Sweep:
        y = np.asarray(y)
        candidates = list(ParameterGrid(self.param_grid))
        folds = list(self.cv.split(X, y, groups))
        scorer = check_scoring(self.estimator, self.scoring)
        progress.set_total(len(candidates) * len(folds) + 1)
        tasks = [(i, f) for i in range(len(candidates)) for f in range(len(folds))]
        out = Parallel(n_jobs=self.n_jobs, return_as="generator")(
            delayed(_fit_score)(self.estimator, X, y, *folds[f], candidates[i], scorer, fit_params) for i, f in tasks)
        scores = np.empty((len(candidates), len(folds)))
        for (i, f), score in zip(tasks, out):
            scores[i, f] = score
            progress.advance()
        mean = scores.mean(axis=1)
        best = int(np.argmax(mean))  # the first of equals: grids run from the most regularized
        self.cv_results_ = {"params": candidates, "mean_test_score": mean, "std_test_score": scores.std(axis=1),
                            "split_scores": scores}
        self.best_index_, self.best_params_, self.best_score_ = best, candidates[best], float(mean[best])
        self.n_splits_ = len(folds)
        self.best_estimator_ = self.unfitted_final(candidates[best]).fit(X, y, **fit_params)
        progress.advance()
        self.classes_ = self.best_estimator_.classes_
        return self

    @available_if(_best_has("predict_proba"))
    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_proba(X)

    @available_if(_best_has("decision_function"))
    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.decision_function(X)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)
