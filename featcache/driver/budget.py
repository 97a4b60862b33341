"""``run --budget``: one time for the whole run, spent backbone by backbone in the order given.

The order of ``--backbones`` is the order of expected gain (the default's Lite0, Lite1, Lite2:
bench/heldout_study.py), so a budget keeps the first backbones whole and drops the last ones,
rather than thinning every backbone's zoo. The run goes in two passes. The first
gives each backbone, in order, its extraction and the fast models (:data:`FIRST_PASS`); before
each later backbone its cost is estimated from what this run has measured (extraction seconds
per image of the last fresh extraction, scaled by the backbone's relative cost; first-pass
classify seconds per feature set so far), and it is skipped, with the reason in the report,
when the estimate does not fit in what is left. The first backbone always runs. The second
pass runs the whole zoo on every feature set, reusing the first pass's fits, each feature set
an equal share of what is left (``classify --budget``: slow models are approximated or skipped
inside the share). The budget is a target, not a hard stop: the ensembles and the
report (seconds) come after it.

``--budget auto`` (run's default) keeps every backbone and sizes each feature set's zoo to
its extraction, the rule that at 10^2-10^4 images the classify stage costs less than the
extraction before it: one model of every classifier family unless it alone is estimated to cost
more than the feature set's whole extraction (the dearest scored by one CV repeat while together
they cost more than it), then the second variants, cheapest first, while
their estimated cost (fit, out-of-fold predictions and refit, at the reference machine's rate)
stays within :data:`AUTO_SHARE` of it (:func:`classify.plan.auto_zoo`). Estimates, not clocks,
decide (at the reference machine's rate and cores), so the same data gives the same
leaderboard on a busy machine or an idle one. It sizes the default zoo only: models named
with ``--models`` all run. ``--budget none`` runs everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from classify.budget import (  # noqa: F401 - the budget constants are re-exported here, where run applies them
    AUTO_SHARE,
    DEFAULT_S_PER_IMAGE,
    FIRST_PASS,
    RELATIVE_COST,
    auto_allowance,
    fmt_seconds,
    parse_budget,
)
from classify.models import resolve_models


@dataclass
class RunBudget:
    """What a run may spend and what it has measured so far."""

    total_s: float | None
    auto: bool = False  # --budget auto: each feature set's zoo sized to its backbone's extraction
    start: float = field(default_factory=time.perf_counter)
    s_per_image: float | None = None  # of the last fresh extraction, per unit of RELATIVE_COST
    classify_s: list[float] = field(default_factory=list)  # one per feature set classified

    @classmethod
    def parse(cls, text: str | None) -> RunBudget:
        if isinstance(text, str) and text.strip().lower() == "auto":
            return cls(None, auto=True)
        return cls(parse_budget(text))

    allowance = staticmethod(auto_allowance)

    def left(self) -> float | None:
        return None if self.total_s is None else self.total_s - (time.perf_counter() - self.start)

    def record_extraction(self, backbone: str, images: int, seconds: float, fresh: bool) -> None:
        if fresh and images > 0:
            self.s_per_image = seconds / images / RELATIVE_COST.get(backbone, 1.0)

    def estimate(self, backbone: str, images: int, cached: bool, feature_sets: int) -> tuple[float, float]:
        """(extraction s, classify s) of a backbone not run yet."""
        ext = 0.0 if cached else images * (self.s_per_image or DEFAULT_S_PER_IMAGE) * RELATIVE_COST.get(backbone, 1.0)
        per_set = sum(self.classify_s) / len(self.classify_s) if self.classify_s else 0.0
        return ext, per_set * feature_sets

    def skip_reason(self, backbone: str, images: int, cached: bool, feature_sets: int) -> str | None:
        """Why ``backbone`` does not fit in what is left, or None when it does (or there is no budget)."""
        left = self.left()
        if left is None:
            return None
        ext, cls = self.estimate(backbone, images, cached, feature_sets)
        if ext + cls <= left:
            return None
        return (f"estimated {fmt_seconds(ext + cls)} (extraction {fmt_seconds(ext)}, classifiers {fmt_seconds(cls)}) "
                f"> {fmt_seconds(max(left, 0.0))} left of the run's --budget {fmt_seconds(self.total_s)}")

    def share(self, feature_sets_left: int) -> float | None:
        """The classify budget of the next feature set: an equal part of what is left."""
        left = self.left()
        if left is None:
            return None
        return max(left, 1.0) / max(feature_sets_left, 1)


def first_pass(models: tuple[str, ...]) -> list[str]:
    """The fast models among ``models`` (names or "default"/"all"), in the zoo's order."""
    chosen = resolve_models(list(models))
    return [m for m in chosen if m in FIRST_PASS] or chosen[:1]
