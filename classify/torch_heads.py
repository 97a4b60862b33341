"""Linear and MLP heads trained in torch on cached features, behind the sklearn estimator API.

The tutorials put a new ``nn.Linear`` (or a 512-256 MLP) on a frozen backbone; on cached
features that head trains in seconds on a CPU. torch is imported inside ``fit`` and
``predict_proba`` only, so ``import classify`` and the sklearn models never load it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from classify.splits import group_centers, grouped, stratified_holdout
from classify.weights import class_weights
from featcache.common.errors import BadInput

log = logging.getLogger(__name__)


def _positive_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and v >= 0


# Constraints as data: (check, what the value must be); one standard message in _check_params.
_CONSTRAINTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "hidden": (lambda v: isinstance(v, (tuple, list)) and all(_positive_int(h) for h in v),
               "a tuple of positive ints"),
    "dropout": (lambda v: _non_negative(v) and v < 1, "a float in [0, 1)"),
    "batchnorm": (lambda v: isinstance(v, bool), "a bool"),
    "lr": (lambda v: _non_negative(v) and v > 0, "a float > 0"),
    "weight_decay": (_non_negative, "a float >= 0"),
    "batch_size": (_positive_int, "an int >= 1"),
    "max_epochs": (_positive_int, "an int >= 1"),
    "patience": (_positive_int, "an int >= 1"),
    "tol": (_non_negative, "a float >= 0"),
    "val_fraction": (lambda v: _non_negative(v) and 0 < v < 1, "a float in (0, 1)"),
    "random_state": (lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool), "an int"),
    "n_jobs": (lambda v: v is None or (isinstance(v, int) and (v >= 1 or v == -1)), "None, -1 or an int >= 1"),
    "log_dir": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "None or a directory path"),
    "class_weight": (lambda v: v is None or v == "balanced" or isinstance(v, dict), "None, 'balanced' or a dict"),
}


class TorchHead(ClassifierMixin, BaseEstimator):
    """Softmax head (``hidden=()``) or MLP, Adam on minibatches, early stopping on a val fold.

    The val fold (``val_fraction`` of each class, seeded) is carved from the training rows;
    training stops ``patience`` epochs after the best val loss (an epoch beats it by more than
    ``tol``, as scikit-learn's MLP counts) and that epoch's weights are restored. ``log_dir`` writes TensorBoard scalars per epoch.
    """

    def __init__(self, hidden: tuple[int, ...] = (), *, dropout: float = 0.0, batchnorm: bool = False,
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64, max_epochs: int = 300,
                 patience: int = 20, val_fraction: float = 0.15, random_state: int = 0, n_jobs: int | None = 1,
                 log_dir: str | os.PathLike | None = None, class_weight: str | None = None, tol: float = 0.0):
        self.hidden = hidden
        self.class_weight = class_weight  # "balanced": a weighted cross-entropy, each class weighing alike
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.tol = tol  # an epoch improves on the best only when its val loss is lower by more than this
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.log_dir = log_dir

    def _check_params(self) -> None:
        for name, (ok, what) in _CONSTRAINTS.items():
            value = getattr(self, name)
            if not ok(value):
                raise BadInput(f"The {name!r} parameter of {type(self).__name__} must be {what}. "
                                 f"Got {value!r} instead.")

    def fit(self, X, y, groups=None) -> TorchHead:
        """``groups`` (one id per source image, its center crop first) keeps an image's augmented
        views out of the early-stopping fold, which then holds center crops only."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise BadInput(f"{type(self).__name__} needs at least 2 classes in y; got 1 class: {self.classes_.tolist()}")
        if groups is None:
            train, val = stratified_holdout(codes, self.val_fraction, self.random_state)
        else:
            if len(groups) != len(y):
                raise BadInput(f"groups has {len(groups)} entries for {len(y)} samples")
            centers = group_centers(groups)
            train, val = grouped(groups, stratified_holdout(codes[centers], self.val_fraction, self.random_state),
                                 centers)
        if len(val) == 0:
            raise BadInput(f"{type(self).__name__}: {len(y)} rows are too few to carve an early-stopping fold")
        import torch

        with torch.random.fork_rng(devices=[]), torch_threads(self.n_jobs):
            torch.manual_seed(self.random_state)
            net = _build_net(torch, X.shape[1], len(self.classes_), tuple(self.hidden), self.dropout, self.batchnorm)
            self.history_ = self._train(torch, net, X, codes.astype(np.int64), train, val)
        self.module_ = net.eval()
        best = min(self.history_, key=lambda h: (h["val_loss"], h["epoch"]))
        self.best_epoch_ = best["epoch"]
        self.n_epochs_ = len(self.history_)
        self.chosen_params_ = {"best_epoch": self.best_epoch_, "epochs_run": self.n_epochs_,
                               "best_val_loss": round(best["val_loss"], 6)}
        return self

    def _train(self, torch, net, X: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray) -> list[dict]:
        F = torch.nn.functional
        Xt, yt = torch.from_numpy(X[train]), torch.from_numpy(y[train])
        Xv, yv = torch.from_numpy(X[val]), torch.from_numpy(y[val])
        cw = class_weights(self.class_weight, self.classes_, y[train])
        weight = None if cw is None else torch.from_numpy(cw.astype(np.float32))
        # fused: one kernel for every parameter's update instead of a Python loop of ~10 ops per
        # tensor, which was 40% of a small MLP's fit (dtd10, 600 rows: mlp + mlp-bn + linear 3.1 s ->
        # 2.1 s; probabilities within 1e-5 of the loop's, the same best epochs).
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)
        gen = torch.Generator().manual_seed(self.random_state)
        history: list[dict] = []
        best_loss, best_epoch, best_state = float("inf"), -1, None
        with _summary_writer(self.log_dir) as writer:
            for epoch in range(self.max_epochs):
                net.train()
                total = 0.0
                for idx in _batches(torch, len(yt), self.batch_size, gen):
                    opt.zero_grad()
                    loss = F.cross_entropy(net(Xt[idx]), yt[idx], weight=weight)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                net.eval()
                with torch.no_grad():
                    logits = net(Xv)
                    val_loss = F.cross_entropy(logits, yv, weight=weight).item()
                    val_acc = (logits.argmax(1) == yv).double().mean().item()
                row = {"epoch": epoch, "train_loss": total / len(yt), "val_loss": val_loss, "val_accuracy": val_acc}
                history.append(row)
                if writer is not None:
                    for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"),
                                     ("accuracy/val", "val_accuracy")):
                        writer.add_scalar(tag, row[key], epoch)
                if val_loss < best_loss - self.tol:
                    best_loss, best_epoch = val_loss, epoch
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                elif epoch - best_epoch >= self.patience:
                    break
        if best_state is None:
            raise BadInput(f"{type(self).__name__}: training diverged (val loss {val_loss}); lower lr")
        net.load_state_dict(best_state)
        if len(history) == self.max_epochs and best_epoch == self.max_epochs - 1:
            log.info("%s: val loss still falling at max_epochs=%d; raise it or lr",
                     type(self).__name__, self.max_epochs)
        log.debug("%s: best epoch %d of %d (val loss %.4f)", type(self).__name__, best_epoch, len(history), best_loss)
        return history

    def __getstate__(self) -> dict:
        """The fitted module as a state dict of numpy arrays: a model file then holds arrays only
        (classify.persist writes it with skops, which builds no torch object from a file)."""
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns the live __dict__
        module = state.pop("module_", None)
        if module is not None:
            state["weights_"] = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        weights = state.pop("weights_", None)
        super().__setstate__(state)
        if weights is not None:
            import torch

            net = _build_net(torch, int(self.n_features_in_), len(self.classes_), tuple(self.hidden), self.dropout,
                             self.batchnorm)
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
            self.module_ = net.eval()

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        import torch

        with torch.inference_mode():
            # float64 softmax: rows must sum to 1 within log_loss's tolerance (float32 misses it)
            return torch.softmax(self.module_(torch.from_numpy(X)).double(), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]


def _build_net(torch, n_in: int, n_out: int, hidden: tuple[int, ...], dropout: float, batchnorm: bool):
    """Linear -> [BatchNorm] -> ReLU -> Dropout per hidden layer, then a Linear to the classes."""
    nn = torch.nn
    layers: list = []
    width = n_in
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    if not hidden and dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def _batches(torch, n: int, size: int, gen) -> list:
    """Shuffled minibatch indices; a trailing batch of one row joins the previous one
    (BatchNorm cannot train on a single row)."""
    parts = list(torch.randperm(n, generator=gen).split(size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


@contextmanager
def torch_threads(n_jobs: int | None) -> Iterator[None]:
    """torch's intra-op threads for this fit only (``n_jobs=-1``: all cores; None: as they are),
    restored after. Needed inside ``threadpool_limits(1)``, which also pins torch to one thread."""
    import torch

    old = torch.get_num_threads()
    if n_jobs is not None:
        torch.set_num_threads((os.cpu_count() or 1) if n_jobs == -1 else n_jobs)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def _summary_writer(log_dir: str | os.PathLike | None) -> Iterator[Any]:
    if log_dir is None:
        yield None
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        yield writer
    finally:
        writer.close()
