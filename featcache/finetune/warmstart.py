"""Warm start: the new head takes the weights of a logistic regression fitted on the cached features.

"Linear probe, then fine-tune" costs seconds instead of head epochs: classify's ``logreg``
already found the best linear head on exactly these features. Its StandardScaler folds
into the Linear layer (W' = W / scale, b' = b - W' . mean), so the fresh network gives
the probe's predictions before its first step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from classify.features import load_features
from classify.linear_probe import LinearProbe
from classify.persist import load_model
from classify.selection import frozen
from extract.backbones import Backbone
from featcache.common.errors import BadInput

log = logging.getLogger(__name__)


def _unwrap(model: object, path: str) -> tuple[list[object], LogisticRegression | LinearProbe]:
    """The preprocessing steps and the final logistic regression of a saved (searched) pipeline:
    classify's LinearProbe, or the LogisticRegression of models saved before it."""
    est = getattr(model, "best_estimator_", model)  # older models: a refit GridSearchCV
    steps = [s for _, s in est.steps] if isinstance(est, Pipeline) else [est]
    *pre, final = [s for s in steps if s is not None and s != "passthrough"]
    if isinstance(final, LinearProbe) and not pre:
        return pre, final
    if not isinstance(final, LogisticRegression):
        raise BadInput(f"--warm-start {path}: holds a {type(final).__name__}; a warm start needs a "
                         "LogisticRegression (classify's 'logreg' model)")
    odd = [type(s).__name__ for s in pre if not isinstance(s, StandardScaler)]
    if odd:
        raise BadInput(f"--warm-start {path}: preprocessing {odd} cannot fold into a linear head; "
                         "train the logreg with standardize or no preprocessing")
    return pre, final


def linear_weights(model: object, path: str = "model") -> tuple[np.ndarray, np.ndarray]:
    """(W (K, D), b (K,)) in float64 such that softmax(x @ W.T + b) is the model's predict_proba(x).

    Scalers fold in; two classes (one sigmoid row w) become the logits [-z/2, z/2], whose
    softmax is sigmoid(z) for the second class, exactly as LogisticRegression predicts.
    """
    pre, clf = _unwrap(model, path)
    if isinstance(clf, LinearProbe):
        try:
            return clf.raw_linear()
        except ValueError as e:
            raise BadInput(f"--warm-start {path}: {e}; train the logreg with standardize or no preprocessing") from None
    W = np.asarray(clf.coef_, dtype=np.float64)
    b = np.asarray(clf.intercept_, dtype=np.float64)
    if W.shape[0] > 1 and getattr(clf, "multi_class", "auto") == "ovr":
        raise BadInput(f"--warm-start {path}: a one-vs-rest LogisticRegression is not a softmax head; "
                         "refit it multinomial (the default)")
    for scaler in reversed(pre):  # x -> s1 -> s2 -> clf: fold s2 into the classifier first, then s1
        scale = scaler.scale_ if scaler.scale_ is not None else 1.0
        mean = scaler.mean_ if scaler.mean_ is not None else 0.0
        W = W / scale
        b = b - W @ np.broadcast_to(mean, W.shape[1:])
    if W.shape[0] == 1:
        W, b = np.concatenate([-W / 2, W / 2]), np.concatenate([-b / 2, b / 2])
    return W, b


def check_spec(saved_spec: dict, feature: str, backbone: Backbone, path: str) -> None:
    """The probe must have been fitted on this backbone's default-layer features, made the same way."""
    want = {"backbone": backbone.name, "weights": backbone.weights, "weights_sha256": backbone.weights_sha256,
            "transform": backbone.transform.to_dict()}
    for key, value in want.items():
        if key == "weights_sha256" and (value is None or saved_spec.get(key) is None):
            continue
        if saved_spec.get(key) != value:
            raise BadInput(f"--warm-start {path}: fitted on features with {key} {saved_spec.get(key)!r}, "
                             f"but this fine-tune uses {value!r}; extract and classify with the same backbone")
    layer = feature.rsplit("/", 1)[0]
    if layer != backbone.default_layer:
        raise BadInput(f"--warm-start {path}: fitted on feature {feature!r}; a warm start needs the "
                         f"classifier's input {backbone.default_layer!r}")
    if saved_spec.get("precision", "fp32") != "fp32" or saved_spec.get("draft"):
        log.warning("%s: features were extracted with precision %s%s; the warm start is approximate",
                    path, saved_spec.get("precision"), ", draft JPEG" if saved_spec.get("draft") else "")


def load_warm_start(path: str | Path, backbone: Backbone, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Verify a saved classify model against this job, then return its folded (W, b)."""
    saved = load_model(path)
    path = str(path)
    check_spec(saved.spec, saved.feature, backbone, path)
    if list(saved.class_names) != list(class_names):
        raise BadInput(f"--warm-start {path}: classes {saved.class_names} differ from the data's {class_names}")
    if getattr(saved, "fitted_on", "train") != "train":
        saved.model = refit_on_train(saved, path)
    _, clf = _unwrap(saved.model, path)
    if not np.array_equal(np.asarray(clf.classes_), np.arange(len(class_names))):
        raise BadInput(f"--warm-start {path}: the model knows classes {list(clf.classes_)}, "
                         f"not all {len(class_names)} of {class_names}")
    return linear_weights(saved.model, path)


def refit_on_train(saved: object, path: str) -> object:
    """The same configuration fitted on train alone: the fine-tune keeps its best epoch by val, so
    a head that saw val (``--final-fit train+val``) would make every val score optimistic."""
    try:
        data = load_features(saved.store, saved.feature)
    except (OSError, ValueError) as e:
        raise BadInput(f"--warm-start {path}: fitted on train+val, and its store {saved.store} cannot be read to "
                         f"refit it on train alone ({e}); save one with classify --final-fit train") from None
    log.info("--warm-start %s: fitted on train+val; refitting the same configuration on train (%d images) so that "
             "val stays unseen", path, len(data.train))
    return frozen(saved.model).fit(np.asarray(data.train.X, np.float32), data.train.y)  # its chosen C, no sweep


@torch.no_grad()
def init_head(head: nn.Linear, W: np.ndarray, b: np.ndarray) -> None:
    if tuple(W.shape) != tuple(head.weight.shape):
        raise BadInput(f"warm start weights are {W.shape[0]} x {W.shape[1]}, the head is "
                         f"{head.out_features} x {head.in_features}")
    head.weight.copy_(torch.as_tensor(W, dtype=head.weight.dtype))
    head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype))
