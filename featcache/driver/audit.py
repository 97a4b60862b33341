"""The audit a ``run`` writes beside its report: the best model's feature set, checked for leaks.

The best single model's feature set is the one whose scores the report leads with, so its
near-duplicates across splits are the leaks that inflate the leaderboard; its mistakes get
their nearest train images. The report (report/audit.py) reads ``RUN_DIR/report/audit.json``
and drops the leaked images from every row's score using the per-image correctness bits.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from classify.audit import audit, write_audit
from classify.ranking import best_single, rank_rows

log = logging.getLogger(__name__)



def audit_best(rows: list[dict], config: dict, out: Path) -> dict | None:
    """The audit of the best single row's store and feature set (None when no row has one)."""
    best = best_single(rank_rows(rows, config.get("metric") or "accuracy"))
    if best is None or not best.store or not Path(best.store).is_file():
        return None
    scored = best.test if best.test and best.test.get("n") else best.val
    t = time.perf_counter()
    result = audit(best.store, best.feature, misclassified=list(scored.get("misclassified") or []))
    result["model"] = {"backbone": best.backbone, "feature": best.feature, "model": best.model,
                       "scored_on": "test" if scored is best.test else "val"}
    c = result["counts"]
    log.info("audit of %s %s (%d rows, %.1f s): %d duplicate pairs, %d across splits, %d label-issue candidates",
             best.backbone, best.feature, result["rows"], time.perf_counter() - t, c["duplicate_pairs"],
             c["cross_split"], len(result["label_issues"]))
    return result


def write_run_audit(audits: dict[str, dict], out: Path) -> Path | None:
    """``RUN_DIR/report/audit.json``: one audit, or ``{"datasets": {name: audit}}`` for several."""
    if not audits:
        return None
    body = audits[""] if list(audits) == [""] else {"datasets": audits}
    return write_audit(body, out / "report")
