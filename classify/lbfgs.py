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
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

LOSSES = ("log", "squared_hinge")
CHUNK_ROWS = 8192
# Fit rows are copied, transformed, into one float32 block when it is at most this big: every
# L-BFGS evaluation then reads them without gathering or transforming again.
MATERIALIZE_BYTES = 256 * 2**20

ChunkMap = Callable[["object"], "object"]  # torch (m, d) float32 -> torch (m, d') float32


@dataclass
class Rows:
    """The rows a fit or a score reads: ``X[index]`` (all of ``X`` when ``index`` is None), mapped
    chunk by chunk through ``fmap`` into float32 torch tensors, or held in one block once small."""

    X: np.ndarray
    y: np.ndarray | None  # class codes 0..c-1, or None to only score
    index: np.ndarray | None = None
    fmap: ChunkMap | None = None
    chunk: int = CHUNK_ROWS
    block: object | None = None  # torch tensor of every mapped row, when materialized

    def __len__(self) -> int:
        return len(self.X) if self.index is None else len(self.index)

    def chunks(self) -> Iterator[tuple[slice, object]]:
        """(slice into these rows, mapped float32 chunk)."""
        import torch

        n = len(self)
        if self.block is not None:
            for start in range(0, n, self.chunk):
                sl = slice(start, min(start + self.chunk, n))
                yield sl, self.block[sl]
            return
        for start in range(0, n, self.chunk):
            sl = slice(start, min(start + self.chunk, n))
            raw = self.X[sl] if self.index is None else self.X[self.index[sl]]
            x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
            yield sl, (self.fmap(x) if self.fmap is not None else x)

    def materialize(self, limit: int = MATERIALIZE_BYTES) -> "Rows":
        """These rows in one mapped block when it fits in ``limit`` bytes (else unchanged)."""
        if self.block is not None or len(self) == 0:
            return self
        import torch

        first = next(self.chunks())[1]
        if len(self) * first.shape[1] * 4 > limit:
            return self
        block = torch.cat([x for _, x in self.chunks()]) if len(self) > self.chunk else first
        return Rows(self.X, self.y, self.index, self.fmap, self.chunk, block.contiguous())


def _chunk_loss(torch, s, yc, loss: str):
    """(sum of losses as a Python float, d loss / d scores) for one chunk of scores ``s``."""
    rows = torch.arange(len(yc))
    if loss == "log":
        lse = torch.logsumexp(s, 1)
        value = float((lse - s[rows, yc]).double().sum())
        g = torch.softmax(s, 1)
        g[rows, yc] -= 1.0
        return value, g
    sign = torch.full_like(s, -1.0)
    sign[rows, yc] = 1.0
    margin = (1.0 - sign * s).clamp_min_(0.0)
    value = float((margin * margin).double().sum())
    return value, -2.0 * sign * margin


def objective(W, b, data: Rows, lam: float, loss: str) -> tuple[float, object, object]:
    """(value, dW, db) of ``mean loss + lam/2 ||W||^2`` over ``data``'s rows."""
    import torch

    gW, gb = torch.zeros_like(W), torch.zeros_like(b)
    total = 0.0
    y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    for sl, x in data.chunks():
        value, g = _chunk_loss(torch, torch.addmm(b, x, W.T), y[sl], loss)
        total += value
        gW.addmm_(g.T, x)
        gb += g.sum(0)
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

    ``tol`` bounds the largest gradient entry relative to its size at W = 0, so one setting
    serves any number of rows, dimensions and classes.
    """
    import torch

    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
    first = next(data.chunks())[1]
    d = first.shape[1]
    W = (torch.zeros(n_classes, d) if W0 is None else W0.clone()).requires_grad_(True)
    b = (torch.zeros(n_classes) if b0 is None else b0.clone()).requires_grad_(True)
    lam = 1.0 / (C * len(data))
    with torch.no_grad():
        _, g0W, g0b = objective(torch.zeros_like(W), torch.zeros_like(b), data, lam, loss)
        scale = max(float(g0W.abs().max()), float(g0b.abs().max()), 1e-12)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.5),
                            tolerance_grad=tol * scale, tolerance_change=1e-9, history_size=20,
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

    out = torch.empty(len(data), W.shape[0])
    with torch.no_grad():
        for sl, x in data.chunks():
            out[sl] = torch.addmm(b, x, W.T)
    return out
