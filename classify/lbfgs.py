"""Full-batch L-BFGS for linear classifiers on cached features, in float32 torch, chunk by chunk.

The objective is scikit-learn's, scaled by ``1 / (C n)`` so its size does not grow with rows:
``mean_i loss_i + ||W||^2 / (2 C n)`` (the intercept is not penalized). ``loss="log"`` is the
multinomial logistic loss of ``LogisticRegression``; ``loss="squared_hinge"`` the one-vs-rest
squared hinge of ``LinearSVC``. Scores and gradients are computed a chunk of rows at a time, so
memory is ``chunk x classes`` whatever the number of rows, and rows are gathered from the
caller's matrix by index (a float16 store stays float16 until its chunk is used). Gradients are
written by hand (no autograd graph) and handed to ``torch.optim.LBFGS`` with a strong-Wolfe
line search.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from featcache.common.errors import BadInput

LOSSES = ("log", "squared_hinge")
CHUNK_ROWS = 8192
# Fit rows are copied, transformed, into one float32 block when it is at most this big: every
# L-BFGS evaluation then reads them without gathering or transforming again.
MATERIALIZE_BYTES = 256 * 2**20

FeatureMap = Callable[["object"], "object"]  # classify.chunkmap.ChunkMap: torch (m, d) -> (m, d') float32


@dataclass
class Rows:
    """The rows a fit or a score reads: ``X[index]`` (all of ``X`` when ``index`` is None), mapped
    chunk by chunk through ``fmap`` into float32 torch tensors, or held in one block once small.

    Two savings at scale. A plain standardization is not applied to the rows at all: it is folded
    into the weights (``x @ (W s).T + b - (W s) m``), so chunks go from the store's array to the
    matmul untouched. And when ``index`` selects most of ``X`` (a fold's fit rows), chunks are
    contiguous slices of ``X`` with a 0/1 row weight instead of a gather: 10% wasted matmul rows
    are cheaper than copying the other 90%.
    """

    X: np.ndarray
    y: np.ndarray | None  # class codes 0..c-1 of the selected rows, or None to only score
    index: np.ndarray | None = None
    fmap: FeatureMap | None = None
    chunk: int = CHUNK_ROWS
    block: object | None = None  # torch tensor of every mapped row, when materialized
    class_weight: np.ndarray | None = None  # a weight per class code (balanced classes), or None

    def __post_init__(self) -> None:
        self.affine = None
        steps = getattr(self.fmap, "steps", None)
        if steps == ("standardize",) and self.block is None:
            p = self.fmap.params_[0]
            import torch

            self.affine = (torch.from_numpy(p["mean"]), torch.from_numpy(p["inv_scale"]))
        self.masked = self.index is not None and self.block is None and len(self.index) > 0.5 * len(self.X)
        if self.masked:
            self.weight = np.zeros(len(self.X), dtype=np.float32)
            self.weight[self.index] = 1.0
            if self.y is not None:
                self.y_full = np.zeros(len(self.X), dtype=np.int64)
                self.y_full[self.index] = self.y

    def __len__(self) -> int:
        return len(self.X) if self.index is None else len(self.index)

    def _map(self, raw: np.ndarray):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
        return self.fmap(x) if self.fmap is not None and self.affine is None else x

    def chunks(self) -> Iterator[tuple[slice, object]]:
        """(slice into these rows, mapped float32 chunk) over exactly these rows, in order."""
        n = len(self)
        for start in range(0, n, self.chunk):
            sl = slice(start, min(start + self.chunk, n))
            if self.block is not None:
                yield sl, self.block[sl]
            else:
                yield sl, self._map(self.X[sl] if self.index is None else self.X[self.index[sl]])

    def labelled_chunks(self) -> Iterator[tuple[np.ndarray, object, np.ndarray | None]]:
        """(class codes, chunk, 0/1 row weights or None) covering these rows, for the objective."""
        if not self.masked:
            y = np.asarray(self.y)
            for sl, x in self.chunks():
                yield y[sl], x, None
            return
        for start in range(0, len(self.X), self.chunk):
            sl = slice(start, min(start + self.chunk, len(self.X)))
            w = self.weight[sl]
            if w.any():
                yield self.y_full[sl], self._map(self.X[sl]), w

    def materialize(self, limit: int | None = None) -> Rows:
        """These rows in one mapped block when it fits in ``limit`` bytes (else unchanged). A plain
        standardization is never materialized: folded into the weights it costs nothing, and a
        held-out fold is scored once per C, so gathering it then is cheap too."""
        limit = MATERIALIZE_BYTES if limit is None else limit
        if self.block is not None or len(self) == 0 or self.affine is not None:
            return self
        import torch

        width = next(self.chunks())[1].shape[1]
        if len(self) * width * 4 > limit:
            return self
        block = torch.cat([x for _, x in self.chunks()])  # chunks() gathers and maps: never masked or folded
        return Rows(self.X, self.y, self.index, self.fmap, self.chunk, block.contiguous(), self.class_weight)


def fold_affine(W, b, affine):
    """Weights and bias acting on raw rows when a standardization (mean m, 1/scale s) is folded in
    (torch tensors or numpy arrays alike)."""
    if affine is None:
        return W, b
    m, s = affine
    We = W * s
    return We, b - We @ m


def _chunk_loss(torch, s, yc, loss: str, w: np.ndarray | None = None):
    """(sum of losses as a Python float, d loss / d scores) for one chunk of scores ``s``;
    ``w`` (0/1 per row) leaves rows out."""
    rows = torch.arange(len(yc))
    if loss == "log":
        per_row = torch.logsumexp(s, 1) - s[rows, yc]
        g = torch.softmax(s, 1)
        g[rows, yc] -= 1.0
    else:
        sign = torch.full_like(s, -1.0)
        sign[rows, yc] = 1.0
        margin = (1.0 - sign * s).clamp_min_(0.0)
        per_row = (margin * margin).sum(1)
        g = -2.0 * sign * margin
    if w is not None:
        wt = torch.from_numpy(w)
        per_row = per_row * wt
        g.mul_(wt[:, None])
    return float(per_row.double().sum()), g


def objective(W, b, data: Rows, lam: float, loss: str) -> tuple[float, object, object]:
    """(value, dW, db) of ``mean loss + lam/2 ||W||^2`` over ``data``'s rows."""
    import torch

    We, be = fold_affine(W, b, data.affine)
    gW, gb = torch.zeros_like(W), torch.zeros_like(b)
    total = 0.0
    for y, x, w in data.labelled_chunks():
        if data.class_weight is not None:  # each row weighs its class's weight (mean 1 over balanced rows)
            cw = data.class_weight[y].astype(np.float32)
            w = cw if w is None else w * cw
        value, g = _chunk_loss(torch, torch.addmm(be, x, We.T), torch.from_numpy(y), loss, w)
        total += value
        gW.addmm_(g.T, x)
        gb += g.sum(0)
    if data.affine is not None:  # back through the fold: dW = (dWe - db m) s
        m, s_ = data.affine
        gW.sub_(torch.outer(gb, m)).mul_(s_)
    n = max(len(data), 1)
    gW.div_(n).add_(W, alpha=lam)
    gb.div_(n)
    return total / n + 0.5 * lam * float((W.double() ** 2).sum()), gW, gb


@dataclass
class FitInfo:
    n_iter: int
    n_eval: int
    value: float
    converged: bool
    seconds: float = 0.0


def fit_linear(data: Rows, n_classes: int, C: float, *, loss: str = "log", W0=None, b0=None,
               max_iter: int = 200, tol: float = 1e-4) -> tuple[object, object, FitInfo]:
    """Minimize the objective at one ``C`` from (W0, b0) (zeros if None) -> (W, b, info).

    ``tol`` bounds the largest entry of the objective's gradient, as scikit-learn's ``tol`` does
    for its L-BFGS (the objectives have the same scale), so the two stop at the same point.
    """
    import torch

    if loss not in LOSSES:
        raise BadInput(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
    d = next(data.chunks())[1].shape[1]
    W = (torch.zeros(n_classes, d) if W0 is None else W0.clone()).requires_grad_(True)
    b = (torch.zeros(n_classes) if b0 is None else b0.clone()).requires_grad_(True)
    lam = 1.0 / (C * len(data))
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.5),
                            tolerance_grad=tol, tolerance_change=1e-9, history_size=20,
                            line_search_fn="strong_wolfe")
    evals = [0]
    last = [math.inf]
    start = time.perf_counter()

    def closure() -> object:
        with torch.no_grad():
            value, gW, gb = objective(W.detach(), b.detach(), data, lam, loss)
        W.grad, b.grad = gW, gb
        evals[0] += 1
        last[0] = value
        return torch.tensor(value)

    opt.step(closure)
    state = opt.state[opt._params[0]]
    n_iter = int(state.get("n_iter", 0))
    return W.detach(), b.detach(), FitInfo(n_iter, evals[0], last[0], n_iter < max_iter, time.perf_counter() - start)


def scores(W, b, data: Rows):
    """(n, c) float32 decision scores, chunk by chunk."""
    import torch

    We, be = fold_affine(W, b, data.affine)
    out = torch.empty(len(data), W.shape[0])
    with torch.no_grad():
        for sl, x in data.chunks():
            out[sl] = torch.addmm(be, x, We.T)
    return out
