"""K torch heads trained as one batched model: a K-fold CV of a head at about one fit's cost.

A small head's fit is mostly fixed costs per minibatch step (Python, autograd, the optimizer's
dispatch), not arithmetic, so ten fold fits one after another cost ten times one. Here every
layer's weights are stacked along a leading fold axis and each step multiplies all folds' batches
at once (``baddbmm``). Each fold keeps everything :meth:`TorchHead.fit` does on its own rows: its
early-stopping holdout carved the same way, its own shuffles, its class weights, its BatchNorm
statistics, its best epoch, and its stop ``patience`` epochs after that; Adam's update is
elementwise, so one optimizer over the stacked weights is K independent ones. It is the same
procedure as K separate fits (an exact equivalent of K-fold CV), with different random draws.

Folds hold different row counts; each epoch every fold draws ``max(rows)`` rows, its own rows
shuffled and topped up with a few of them drawn again, so all folds step together. A fold that
has stopped leaves the steps (its best weights are restored at the end, whatever Adam's moments
do to it after), so the run costs the sum of the folds' epochs, not K times the longest.
"""

from __future__ import annotations

import math

import numpy as np

from classify.splits import stratified_holdout
from classify.torch_heads import TorchHead, _build_net, torch_threads
from classify.weights import class_weights


def fit_folds(head: TorchHead, Xs: list[np.ndarray], ys: list[np.ndarray], n_jobs: int | None = 1
              ) -> list[TorchHead] | None:
    """``head`` (unfitted, its parameters) fitted on each (``Xs[k]``, ``ys[k]``) -> K fitted heads,
    or None when the folds' classes differ (the caller fits them one by one)."""
    classes = np.unique(ys[0])
    if len(classes) < 2 or any(not np.array_equal(np.unique(y), classes) for y in ys[1:]):
        return None
    head._check_params()
    import torch

    codes = [np.searchsorted(classes, y).astype(np.int64) for y in ys]
    parts = [stratified_holdout(c, head.val_fraction, head.random_state) for c in codes]
    if any(len(val) == 0 or len(train) == 0 for train, val in parts):
        return None
    with torch.random.fork_rng(devices=[]), torch_threads(n_jobs):
        torch.manual_seed(head.random_state)
        net = _Stacked(torch, len(Xs), Xs[0].shape[1], len(classes), tuple(head.hidden), head.dropout, head.batchnorm)
        histories = _train(torch, head, net, Xs, codes, parts, classes)
    return [_fitted_copy(head, net.module(torch, k), classes, history, Xs[k].shape[1])
            for k, history in enumerate(histories)]


class _Stacked:
    """K copies of ``_build_net``'s layers, weights stacked on a leading fold axis."""

    def __init__(self, torch, k: int, n_in: int, n_out: int, hidden: tuple[int, ...], dropout: float,
                 batchnorm: bool):
        self.k, self.hidden, self.dropout, self.batchnorm = k, hidden, dropout, batchnorm
        self.W, self.b, self.gamma, self.beta, self.mean, self.var = [], [], [], [], [], []
        sizes = (n_in, *hidden, n_out)
        for a, b in zip(sizes, sizes[1:]):
            bound = 1 / math.sqrt(a)  # nn.Linear's default initialization
            self.W.append(torch.empty(k, a, b).uniform_(-bound, bound).requires_grad_())
            self.b.append(torch.empty(k, 1, b).uniform_(-bound, bound).requires_grad_())
        if batchnorm:
            for h in hidden:
                self.gamma.append(torch.ones(k, 1, h, requires_grad=True))
                self.beta.append(torch.zeros(k, 1, h, requires_grad=True))
                self.mean.append(torch.zeros(k, 1, h))
                self.var.append(torch.ones(k, 1, h))
        self.batches_tracked = 0

    def parameters(self) -> list:
        return [*self.W, *self.b, *self.gamma, *self.beta]

    def state(self) -> list:
        """Everything a fold's best epoch restores."""
        return [*self.parameters(), *self.mean, *self.var]

    def forward(self, torch, x, train: bool, folds=None):
        """(K, B, d) -> (K, B, classes); ``folds``: the indices of the folds ``x`` holds (None: all),
        so that stopped folds cost nothing (they get no gradient, and their best weights are kept)."""
        F = torch.nn.functional

        def of(t):  # noqa: ANN001, ANN202
            return t if folds is None else t[folds]

        for i in range(len(self.hidden)):
            x = torch.baddbmm(of(self.b[i]), x, of(self.W[i]))
            if self.batchnorm:
                if train:
                    mu = x.mean(dim=1, keepdim=True)
                    var = x.var(dim=1, unbiased=False, keepdim=True)
                    with torch.no_grad():  # BatchNorm1d's running statistics (momentum 0.1, unbiased variance)
                        n = x.shape[1]
                        at = slice(None) if folds is None else folds
                        self.mean[i][at] = 0.9 * self.mean[i][at] + 0.1 * mu
                        self.var[i][at] = 0.9 * self.var[i][at] + 0.1 * var * n / max(n - 1, 1)
                else:
                    mu, var = of(self.mean[i]), of(self.var[i])
                x = (x - mu) / torch.sqrt(var + 1e-5) * of(self.gamma[i]) + of(self.beta[i])
            x = torch.relu(x)
            if self.dropout:
                x = F.dropout(x, self.dropout, training=train)
        if not self.hidden and self.dropout:
            x = F.dropout(x, self.dropout, training=train)
        return torch.baddbmm(of(self.b[-1]), x, of(self.W[-1]))

    def module(self, torch, k: int):
        """Fold ``k``'s weights as the ``nn.Sequential`` a :class:`TorchHead` holds."""
        net = _build_net(torch, self.W[0].shape[1], self.W[-1].shape[2], self.hidden, self.dropout, self.batchnorm)
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        norms = [m for m in net if isinstance(m, torch.nn.BatchNorm1d)]
        with torch.no_grad():
            for m, W, b in zip(linears, self.W, self.b):
                m.weight.copy_(W[k].T)
                m.bias.copy_(b[k, 0])
            for i, m in enumerate(norms):
                m.weight.copy_(self.gamma[i][k, 0])
                m.bias.copy_(self.beta[i][k, 0])
                m.running_mean.copy_(self.mean[i][k, 0])
                m.running_var.copy_(self.var[i][k, 0])
        return net.eval()


def _padded(torch, arrays: list[np.ndarray], rows: list[np.ndarray]):
    """(K, max rows, ...) tensor of ``arrays[k][rows[k]]``, zero-padded, and the (K, max) mask of real rows."""
    m = max(len(r) for r in rows)
    first = arrays[0]
    out = np.zeros((len(arrays), m, *first.shape[1:]), dtype=first.dtype)
    mask = np.zeros((len(arrays), m), dtype=bool)
    for k, (a, r) in enumerate(zip(arrays, rows)):
        out[k, :len(r)] = a[r]
        mask[k, :len(r)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def _weighted_ce(torch, logits, y, weight, mask=None):
    """Each fold's cross-entropy (weighted mean over its rows, as ``F.cross_entropy(weight=)``) -> (K,)."""
    nll = -torch.log_softmax(logits, dim=2).gather(2, y.unsqueeze(2)).squeeze(2)
    w = weight.gather(1, y)
    if mask is not None:
        w = w * mask
    return (w * nll).sum(1) / w.sum(1).clamp_min(1e-12)


def _train(torch, head: TorchHead, net: _Stacked, Xs: list[np.ndarray], codes: list[np.ndarray], parts: list,
           classes: np.ndarray) -> list[list[dict]]:
    k = len(Xs)
    X, _ = _padded(torch, [np.asarray(x, np.float32) for x in Xs], [np.arange(len(x)) for x in Xs])
    Y, _ = _padded(torch, codes, [np.arange(len(c)) for c in codes])
    train = [p[0] for p in parts]
    Xv, mask_v = _padded(torch, [np.asarray(x, np.float32) for x in Xs], [p[1] for p in parts])
    Yv, _ = _padded(torch, codes, [p[1] for p in parts])
    weight = torch.ones(k, len(classes))
    for f in range(k):
        cw = class_weights(head.class_weight, classes, codes[f][train[f]])
        if cw is not None:
            weight[f] = torch.from_numpy(cw.astype(np.float32))
    opt = torch.optim.Adam(net.parameters(), lr=head.lr, weight_decay=head.weight_decay, fused=True)
    gen = torch.Generator().manual_seed(head.random_state)
    rows = max(len(t) for t in train)
    fold = torch.arange(k)[:, None]
    histories: list[list[dict]] = [[] for _ in range(k)]
    best_loss = np.full(k, np.inf)
    best_epoch = np.full(k, -1)
    active = np.ones(k, dtype=bool)
    best_state = [s.detach().clone() for s in net.state()]
    for epoch in range(head.max_epochs):
        live = np.flatnonzero(active)
        folds = None if active.all() else torch.from_numpy(live)
        on = fold if folds is None else folds[:, None]
        order = torch.stack([_epoch_rows(torch, torch.from_numpy(train[f]), rows, gen) for f in live])
        total = torch.zeros(k)
        for idx in _steps(rows, head.batch_size):
            at = order[:, idx]
            opt.zero_grad()
            loss = _weighted_ce(torch, net.forward(torch, X[on, at], True, folds), Y[on, at], weight[live])
            loss.sum().backward()
            opt.step()
            total[live] += loss.detach() * (idx.stop - idx.start)
        val_loss, hit = np.full(k, np.inf), np.zeros(k)
        with torch.no_grad():
            logits = net.forward(torch, Xv[live], False, folds)
            val_loss[live] = _weighted_ce(torch, logits, Yv[live], weight[live], mask_v[live]).numpy()
            hit[live] = ((logits.argmax(2) == Yv[live]) & mask_v[live]).sum(1).numpy() / mask_v[live].sum(1).numpy()
        improved = active & (val_loss < best_loss - head.tol)
        for f in np.flatnonzero(active):
            histories[f].append({"epoch": epoch, "train_loss": float(total[f]) / rows, "val_loss": float(val_loss[f]),
                                 "val_accuracy": float(hit[f])})
        if improved.any():
            sel = torch.from_numpy(improved)
            with torch.no_grad():
                for b, s in zip(best_state, net.state()):
                    b[sel] = s.detach()[sel]
            best_loss[improved], best_epoch[improved] = val_loss[improved], epoch
        active &= ~((epoch - best_epoch >= head.patience) & ~improved)
        if not active.any():
            break
    with torch.no_grad():
        for s, b in zip(net.state(), best_state):
            s.copy_(b)
    return histories


def _epoch_rows(torch, rows, n: int, gen):
    """A fold's rows shuffled, topped up to ``n`` with some of them drawn again."""
    order = rows[torch.randperm(len(rows), generator=gen)]
    if len(order) < n:
        order = torch.cat([order, rows[torch.randint(len(rows), (n - len(order),), generator=gen)]])
    return order


def _steps(n: int, size: int) -> list[slice]:
    """Minibatch slices of ``n`` rows; a trailing batch of one row joins the previous one (BatchNorm)."""
    cuts = list(range(0, n, size)) + [n]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] == 1:
        del cuts[-2]
    return [slice(a, b) for a, b in zip(cuts, cuts[1:])]


def _fitted_copy(head: TorchHead, module: object, classes: np.ndarray, history: list[dict], n_in: int) -> TorchHead:
    h = TorchHead(**head.get_params())
    h.classes_, h.n_features_in_, h.module_, h.history_ = classes, n_in, module, history
    best = min(history, key=lambda r: (r["val_loss"], r["epoch"]))
    h.best_epoch_, h.n_epochs_ = best["epoch"], len(history)
    h.chosen_params_ = {"best_epoch": h.best_epoch_, "epochs_run": h.n_epochs_,
                        "best_val_loss": round(best["val_loss"], 6)}
    return h
