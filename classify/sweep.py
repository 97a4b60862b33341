"""A grid sweep over the protocol's folds that reports each fit as it lands, then refits once.

GridSearchCV's contract (``best_params_``, ``best_score_``, ``best_estimator_``, ``n_splits_``,
``cv_results_``, refit on every row, ties to the first candidate) with three differences: each
finished fit advances the model's progress bar (sklearn's sweep is silent until it returns),
fit parameters that hold one value per row (``clf__groups``) are cut to each fold, and the
candidates may be scored with a cheaper estimator than the one refitted (``final``): the RBF
SVM's grid is searched on the bare SVC and only the chosen one is calibrated, 4x fewer SVC fits.

When the grid sets only the pipeline's last step, the preprocessing before it is fitted once per
fold instead of once per candidate, and a last step with ``grid_predictions`` predicts for the
whole grid from one fold's work (:class:`~classify.kernel_svm.RBFSVC` computes the fold's
distances once for every C and gamma). The scores are the same: each candidate still sees the
fold's own preprocessing, and the same kernel values.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, check_scoring
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


# Scorers of the predicted labels alone: with these a grid_predictions step scores without refitting.
LABEL_SCORES = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score}


def _step_params(params: dict, step: str) -> dict | None:
    """``params`` with the ``step__`` prefix taken off, or None when one of them sets another step."""
    head = f"{step}__"
    if not all(k.startswith(head) for k in params):
        return None
    return {k[len(head):]: v for k, v in params.items()}


def _fold_scores(estimator, X, y, train, test, candidates: list[dict], scoring: str, fit_params: dict) -> list[float]:
    """Every candidate scored on one fold, the steps before the last fitted once (the grid sets
    only the last step: :func:`_last_step_grid`)."""
    ignore_sigint_in_worker()
    name, last = estimator.steps[-1]
    fp = _cut(fit_params, train, len(y))
    step_fp = _step_params(fp, name)
    X_fit, X_held = X[train], X[test]
    if len(estimator.steps) > 1:
        pre = clone(estimator[:-1])
        X_fit = pre.fit_transform(X_fit)
        X_held = pre.transform(X_held)
    params = [_step_params(c, name) for c in candidates]
    if hasattr(last, "grid_predictions") and scoring in LABEL_SCORES:
        score = LABEL_SCORES[scoring]
        return [float(score(y[test], pred))
                for pred in last.grid_predictions(X_fit, y[train], X_held, params, **step_fp)]
    scorer, out = check_scoring(estimator, scoring), []
    for c in params:
        est = clone(last).set_params(**c).fit(X_fit, y[train], **step_fp)
        out.append(float(scorer(est, X_held, y[test])))
    return out


def _last_step_grid(estimator, candidates: list[dict], fit_params: dict) -> bool:
    if not hasattr(estimator, "steps") or not estimator.steps:
        return False
    name = estimator.steps[-1][0]
    return all(_step_params(c, name) is not None for c in candidates) and _step_params(fit_params, name) is not None


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
        scores = np.empty((len(candidates), len(folds)))
        if _last_step_grid(self.estimator, candidates, fit_params):
            out = Parallel(n_jobs=self.n_jobs, return_as="generator")(
                delayed(_fold_scores)(self.estimator, X, y, *fold, candidates, self.scoring, fit_params)
                for fold in folds)
            for f, column in enumerate(out):
                scores[:, f] = column
                progress.advance(len(candidates))
        else:
            tasks = [(i, f) for i in range(len(candidates)) for f in range(len(folds))]
            out = Parallel(n_jobs=self.n_jobs, return_as="generator")(
                delayed(_fit_score)(self.estimator, X, y, *folds[f], candidates[i], scorer, fit_params)
                for i, f in tasks)
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
