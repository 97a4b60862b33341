"""An RBF SVM whose kernel matrix is one BLAS product instead of libsvm's own loops.

libsvm evaluates each kernel entry itself, one row at a time in double precision without BLAS:
on 800 rows x 1280 dims that is most of an exact SVC's fit, and the sweep (C x gamma, each
calibrated on 3 folds, over the selection's folds) pays it hundreds of times. Here the squared
distances come from one matrix product per fit (milliseconds at 10^3 rows) and libsvm gets the
precomputed kernel, so the fit is the same optimization problem, solved by the same solver,
with the same result (``tests/test_models.py`` checks the decision values against ``SVC``).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted, validate_data


def squared_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """||a - b||^2 for every pair of rows, from one matrix product."""
    a2 = np.einsum("ij,ij->i", A, A)[:, None]
    b2 = np.einsum("ij,ij->i", B, B)[None, :]
    return np.maximum(a2 + b2 - 2.0 * (A @ B.T), 0.0)


def rbf_kernel(A: np.ndarray, B: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma ||a - b||^2) for every pair of rows, in float64 (libsvm's precision)."""
    return np.exp(-gamma * squared_distances(A, B))


class RBFSVC(ClassifierMixin, BaseEstimator):
    """``SVC(kernel="rbf", C, gamma)`` on a precomputed kernel; keeps the train rows to predict."""

    def __init__(self, C: float = 1.0, gamma: float = 1.0, random_state: int | None = None,
                 class_weight: str | None = None):
        self.C = C
        self.gamma = gamma
        self.random_state = random_state
        self.class_weight = class_weight

    def fit(self, X, y, groups=None) -> RBFSVC:  # noqa: ANN001
        """``groups`` is accepted (and unused) so that a sweep passes the image groups through to
        the calibrated SVC it refits."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        self.X_fit_ = X
        self.svc_ = SVC(kernel="precomputed", C=self.C, random_state=self.random_state, class_weight=self.class_weight)
        self.svc_.fit(rbf_kernel(X, X, self.gamma), y)
        self.classes_ = self.svc_.classes_
        return self

    def grid_predictions(self, X, y, X_held, params: list[dict], groups=None) -> list[np.ndarray]:  # noqa: ANN001
        """The labels predicted for ``X_held`` by this SVC fitted on (X, y) with each of ``params``
        (C, gamma): the same fits as one :meth:`fit` each, with the fold's distances computed once
        for the whole grid and each gamma's kernel once for all its Cs. ``groups``: as in fit."""
        X = np.asarray(X, dtype=np.float64)
        X_held = np.asarray(X_held, dtype=np.float64)
        d2_fit, d2_held = squared_distances(X, X), squared_distances(X_held, X)
        models = [clone(self).set_params(**p) for p in params]
        out: list[np.ndarray] = [np.empty(0)] * len(models)
        for gamma in dict.fromkeys(m.gamma for m in models):  # one kernel in memory at a time
            K_fit, K_held = np.exp(-gamma * d2_fit), np.exp(-gamma * d2_held)
            for i, m in enumerate(models):
                if m.gamma == gamma:
                    svc = SVC(kernel="precomputed", C=m.C, random_state=m.random_state, class_weight=m.class_weight)
                    out[i] = svc.fit(K_fit, y).predict(K_held)
        return out

    def _kernel(self, X) -> np.ndarray:  # noqa: ANN001
        check_is_fitted(self, "svc_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return rbf_kernel(X, self.X_fit_, self.gamma)

    def decision_function(self, X) -> np.ndarray:  # noqa: ANN001
        K = self._kernel(X)
        return self.svc_.decision_function(K)

    def predict(self, X) -> np.ndarray:  # noqa: ANN001
        K = self._kernel(X)
        return self.svc_.predict(K)
