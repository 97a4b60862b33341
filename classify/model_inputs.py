"""What a model is fed: the training arrays (views and their groups), the dtype of its input, where groups go.

A model's fit (``classify.fit``) and cross-validation (``classify.selection``) feed the same
models the same arrays, so both import these from here.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import numpy as np

from classify.linear_probe import LinearProbe
from featcache.common.errors import BadInput

if TYPE_CHECKING:
    from classify.features import Split


def final_step(model: object) -> object:
    """The classifier at the end of a Pipeline (a Sweep stays a Sweep: it holds the scores)."""
    return model.steps[-1][1] if hasattr(model, "steps") else model


def model_input(model: object, X: np.ndarray | None) -> np.ndarray | None:
    """Float32 for every model but the chunked probe, which reads float16 rows a chunk at a time."""
    if X is None or X.dtype == np.float32 or isinstance(final_step(model), LinearProbe):
        return X
    return np.asarray(X, dtype=np.float32)


def training_arrays(train: Split, views: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(X, y, groups): the center crops, then with ``views`` every image's K views after them;
    groups name each sample's source image (centers first, as the grouped splitters expect)."""
    if not views:
        return train.X, train.y, None
    if train.views is None:
        raise BadInput("training on views needs a FeatureSet loaded with views=True")
    n, k, d = train.views.shape
    X = np.concatenate([train.X, train.views.reshape(n * k, d)])
    y = np.concatenate([train.y, np.repeat(train.y, k)])
    groups = np.concatenate([np.arange(n), np.repeat(np.arange(n), k)])
    return X, y, groups


def fit_params(model: object, groups: np.ndarray | None) -> dict:
    """Where ``groups`` must go: the sweep's CV splitter, and a final step whose fit takes groups."""
    if groups is None:
        return {}
    params: dict = {"groups": groups} if hasattr(model, "cv") else {}
    pipe = getattr(model, "estimator", model)
    final = pipe.steps[-1] if hasattr(pipe, "steps") else None
    if final is not None and "groups" in inspect.signature(final[1].fit).parameters:
        params[f"{final[0]}__groups"] = groups
    return params
