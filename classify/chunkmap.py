"""Preprocessing fitted and applied a chunk of rows at a time, for the scalable solvers.

A Pipeline's ``StandardScaler`` makes a transformed copy of the whole matrix; at 200k x 1280
that is another gigabyte. Here the statistics are accumulated over chunks (in float64) and each
chunk is transformed only when a solver reads it. Steps: ``standardize`` (as StandardScaler),
``l2`` (as Normalizer), ``pca:N`` (exact PCA from the chunked covariance), and
``nystroem:M:GAMMA`` (sklearn's Nystroem RBF map on M landmark rows), in the order given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from classify.lbfgs import CHUNK_ROWS
from featcache.common.errors import BadInput

_NYSTROEM = re.compile(r"nystroem:(\d+):([0-9.eE+-]+)")
_PCA = re.compile(r"pca:(\d+)")


def check_steps(steps: Sequence[str]) -> tuple[str, ...]:
    for s in steps:
        if s not in ("standardize", "l2") and not _PCA.fullmatch(s) and not _NYSTROEM.fullmatch(s):
            raise BadInput(f"unknown chunked preprocessing step {s!r}; valid: standardize, l2, pca:N, "
                             "nystroem:M:GAMMA")
    return tuple(steps)


class ChunkMap:
    """Fitted preprocessing as a callable on torch float32 chunks; arrays kept in numpy so a saved
    model pickles without torch tensors."""

    def __init__(self, steps: Sequence[str] = (), *, random_state: int = 0):
        self.steps = check_steps(steps)
        self.random_state = random_state
        self.params_: list[dict] = []
        self._cache: list[dict] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None}

    def fit(self, X: np.ndarray, index: np.ndarray | None = None, chunk: int = CHUNK_ROWS) -> ChunkMap:
        """Fit each step on the rows ``X[index]`` as the previous steps leave them (one pass a step)."""
        import torch

        self.params_, self._cache = [], None
        rows = np.arange(len(X)) if index is None else np.asarray(index)
        def mapped():  # the rows as the steps fitted so far leave them
            for start in range(0, len(rows), chunk):
                x = torch.from_numpy(np.ascontiguousarray(X[rows[start:start + chunk]], dtype=np.float32))
                yield self._apply(x).double()

        for step in self.steps:
            self._cache = None  # a step was added: _apply must see it

            if step == "standardize":
                n, s1, s2 = 0, 0.0, 0.0
                for x in mapped():
                    n, s1, s2 = n + len(x), s1 + x.sum(0), s2 + (x * x).sum(0)
                mean = s1 / n
                var = (s2 / n - mean * mean).clamp_min(0.0)
                scale = torch.sqrt(var)
                scale[scale < 10 * torch.finfo(torch.float64).eps] = 1.0  # StandardScaler's rule for constants
                self.params_.append({"mean": mean.float().numpy(), "inv_scale": (1.0 / scale).float().numpy()})
            elif step == "l2":
                self.params_.append({})
            elif m := _PCA.fullmatch(step):
                n, s1, cov = 0, 0.0, 0.0
                for x in mapped():
                    n, s1, cov = n + len(x), s1 + x.sum(0), cov + x.T @ x
                mean = s1 / n
                cov = cov / n - torch.outer(mean, mean)
                k = min(int(m.group(1)), cov.shape[0], n)
                vals, vecs = torch.linalg.eigh(cov)
                comps = vecs[:, torch.argsort(vals, descending=True)[:k]]
                self.params_.append({"mean": mean.float().numpy(), "components": comps.float().numpy(), "out_dim": k})
            else:
                m = _NYSTROEM.fullmatch(step)
                n_land, gamma = int(m.group(1)), float(m.group(2))
                rng = np.random.default_rng(self.random_state)
                pick = np.sort(rng.choice(len(rows), size=min(n_land, len(rows)), replace=False))
                x = torch.from_numpy(np.ascontiguousarray(X[rows[pick]], dtype=np.float32))
                land = self._apply(x).double()
                K = torch.exp(-gamma * torch.cdist(land, land).pow(2))
                vals, vecs = torch.linalg.eigh(K)
                norm = vecs @ torch.diag(1.0 / torch.sqrt(vals.clamp_min(1e-12))) @ vecs.T  # sklearn's K^-1/2
                self.params_.append({"landmarks": land.float().numpy(), "gamma": gamma,
                                     "normalization": norm.float().numpy(), "out_dim": len(land)})
        self._cache = None
        return self

    def _tensors(self) -> list[dict]:
        import torch

        if self._cache is None:
            self._cache = [{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in p.items()}
                           for p in self.params_]
        return self._cache

    def _apply(self, x):
        """The steps fitted so far (all of them once fitted)."""
        import torch

        for step, p in zip(self.steps, self._tensors()):
            if step == "standardize":
                x = (x - p["mean"]) * p["inv_scale"]
            elif step == "l2":
                x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
            elif step.startswith("pca:"):
                x = (x - p["mean"]) @ p["components"]
            else:
                land = p["landmarks"]
                d2 = (x * x).sum(1, keepdim=True) + (land * land).sum(1) - 2.0 * x @ land.T
                x = torch.exp(-p["gamma"] * d2.clamp_min_(0.0)) @ p["normalization"].T
        return x

    def __call__(self, x):
        if len(self.params_) != len(self.steps):
            raise RuntimeError("ChunkMap is not fitted")
        return self._apply(x)
