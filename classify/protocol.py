"""How models are selected, chosen from the size of the problem (rows, dimensions, classes).

A 245-row store can afford 5-fold CV of every grid point; a 200k-row store cannot afford even
one fold of some of them. The protocol is decided once per feature set, logged, written into
the report, and handed to every model builder, which sizes its grid and solver from it:

- fewer than ``REPEAT_BELOW`` train rows: 5-fold CV repeated twice (one k-fold's score moves
  with the draw at this size);
- fewer than ``CV_BELOW``: 5-fold stratified CV (today's protocol for small stores);
- fewer than ``HOLDOUT_FROM``: 3-fold CV;
- otherwise one stratified holdout of train (20%, 10% from 20k rows), then one refit on all
  rows, as DINOv2's linear probe does.

``--protocol`` overrides it: ``auto``, ``cv``, ``cv:K``, ``repeated-cv``, ``repeated-cv:KxR``,
``holdout``, ``holdout:F``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from classify.splits import RepeatedSmallDataKFold, SmallDataKFold, StratifiedHoldout
from featcache.common.errors import BadInput

REPEAT_BELOW = 100
CV_BELOW = 2_000
HOLDOUT_FROM = 5_000
SELECTIONS = ("cv", "repeated-cv", "holdout")
_SPEC = re.compile(r"(auto)|(cv)(?::(\d+))?|(repeated-cv)(?::(\d+)x(\d+))?|(holdout)(?::([0-9.]+))?")


@dataclass(frozen=True)
class Protocol:
    selection: str  # cv | repeated-cv | holdout
    folds: int  # k of the k-fold (1 for a holdout)
    repeats: int  # k-fold repeats
    holdout: float  # fraction held out (holdout only)
    n_rows: int  # training rows (augmented views included)
    n_dims: int
    n_classes: int
    reason: str  # why this protocol: "auto: 8,003 train rows >= 5,000" or "--protocol holdout"

    @property
    def large(self) -> bool:
        """Big enough that builders bound their cost (no grids for trees, approximate kernels...)."""
        return self.n_rows >= HOLDOUT_FROM

    @property
    def n_fits(self) -> int:
        """Fits per grid point."""
        return self.folds * self.repeats

    def splitter(self, seed: int) -> SmallDataKFold:
        if self.selection == "holdout":
            return StratifiedHoldout(self.holdout, random_state=seed)
        if self.selection == "repeated-cv":
            return RepeatedSmallDataKFold(self.folds, self.repeats, random_state=seed)
        return SmallDataKFold(self.folds, random_state=seed)

    def describe(self) -> str:
        what = {"cv": f"{self.folds}-fold stratified CV",
                "repeated-cv": f"{self.folds}-fold stratified CV x {self.repeats} repeats",
                "holdout": f"one stratified {self.holdout:.0%} holdout of train, then one refit"}[self.selection]
        return f"{what} ({self.reason}; {self.n_rows:,} x {self.n_dims} features, {self.n_classes} classes)"

    def to_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}


def check_spec(spec: str | None) -> str:
    """Validate a ``--protocol`` value early, before any data is read."""
    spec = (spec or "auto").strip().lower()
    m = _SPEC.fullmatch(spec)
    if not m:
        raise BadInput(f"--protocol {spec!r}: expected auto, cv, cv:K, repeated-cv, repeated-cv:KxR, holdout "
                         "or holdout:F (e.g. cv:5, repeated-cv:5x3, holdout:0.1)")
    if m.group(3) is not None and int(m.group(3)) < 2:
        raise BadInput(f"--protocol {spec!r}: a k-fold needs k >= 2")
    if m.group(5) is not None and (int(m.group(5)) < 2 or int(m.group(6)) < 1):
        raise BadInput(f"--protocol {spec!r}: repeated-cv:KxR needs K >= 2 and R >= 1")
    if m.group(8) is not None and not 0 < float(m.group(8)) < 1:
        raise BadInput(f"--protocol {spec!r}: the holdout fraction must be in (0, 1)")
    return spec


def choose(n_rows: int, n_dims: int, n_classes: int, spec: str | None = "auto") -> Protocol:
    """The protocol for a training set of this size (``spec`` overrides the automatic choice)."""
    spec = check_spec(spec)
    m = _SPEC.fullmatch(spec)
    size = dict(n_rows=int(n_rows), n_dims=int(n_dims), n_classes=int(n_classes))
    default_holdout = 0.2 if n_rows < 20_000 else 0.1
    if m.group(2):
        return Protocol("cv", int(m.group(3) or 5), 1, 0.0, **size, reason=f"--protocol {spec}")
    if m.group(4):
        return Protocol("repeated-cv", int(m.group(5) or 5), int(m.group(6) or 2), 0.0, **size,
                        reason=f"--protocol {spec}")
    if m.group(7):
        return Protocol("holdout", 1, 1, float(m.group(8) or default_holdout), **size, reason=f"--protocol {spec}")
    if n_rows < REPEAT_BELOW:
        return Protocol("repeated-cv", 5, 2, 0.0, **size, reason=f"auto: {n_rows:,} train rows < {REPEAT_BELOW:,}")
    if n_rows < CV_BELOW:
        return Protocol("cv", 5, 1, 0.0, **size, reason=f"auto: {n_rows:,} train rows < {CV_BELOW:,}")
    if n_rows < HOLDOUT_FROM:
        return Protocol("cv", 3, 1, 0.0, **size, reason=f"auto: {n_rows:,} train rows < {HOLDOUT_FROM:,}")
    return Protocol("holdout", 1, 1, default_holdout, **size, reason=f"auto: {n_rows:,} train rows >= {HOLDOUT_FROM:,}")
