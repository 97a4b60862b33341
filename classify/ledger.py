"""The resume ledger: finished zoo results on disk, so that a killed or interrupted run resumes
where it stopped.

Each (feature set, model, variant) that finishes writes ``OUT/finished/<feature>__<model>.json``:
a key (sha256 of every setting that changes its result, :func:`settings`), its rows (one per
TTA mode), and the sha256 of each file it saved. A rerun with the same key reuses the rows
instead of fitting, provided every file it names is still there, unchanged. Anything else (an
unreadable record, other settings, a model file gone or edited) means: fit again.

Reused rows carry no fitted estimator in memory; :func:`classify.persist.load_model` reads it
from their ``model_path``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

from classify.evaluate import to_jsonable
from classify.features import FeatureSet
from classify.persist import sidecar_digest
from classify.plan import ModelPlan
from classify.preprocess import parse_preprocess
from featcache.common.errors import BadInput
from featcache.common.files import atomic_write, safe_name, sha256_file
from featcache.store.rows import ResultRow

log = logging.getLogger(__name__)

# 2: final_fit; 3: models saved as skops; 4: records hold whole result rows; 5: out-of-bag forests, batched
# linear heads, the heads' early-stopping tol. Bump when a result's meaning changes, so older records are refitted.
RESUME_FORMAT = 5
FINISHED_DIR = "finished"


def settings(data: FeatureSet, plan: ModelPlan) -> dict:
    """Everything a (model, variant) result depends on. Not ``jobs`` (results do not depend on
    it) nor the budget (only whether it made the plan approximate)."""
    return to_jsonable({
        "format": RESUME_FORMAT, "cache_key": data.cache_key, "feature": data.feature, "model": plan.name,
        "views": bool(plan.views), "n_views": data.n_views if plan.views else 0,
        "tta": [t or "none" for t in plan.tta], "seed": int(plan.build.seed),
        "preprocess": None if plan.preprocess is None else list(parse_preprocess(plan.preprocess)),
        "protocol": plan.build.protocol.to_dict(), "select": plan.select, "approximate": bool(plan.build.approximate),
        "class_weight": plan.build.class_weight, "repeats": int(plan.repeats),
        "final_fit": plan.final_fit,
        "counts": data.counts(), "val_source": data.val_source, "complete": bool(data.complete),
    })


def settings_key(values: dict) -> str:
    """sha256 of the canonical JSON of ``values`` (sorted keys, no spaces)."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_path(out: Path, feature: str, label: str) -> Path:
    return Path(out) / FINISHED_DIR / f"{safe_name(feature)}__{safe_name(label)}.json"


def _relative(out: Path, path: str | None) -> str | None:
    """``path`` (written under ``out``) relative to ``out``: a moved run folder still resumes."""
    if path is None:
        return None
    p = Path(path)
    try:
        return p.relative_to(out).as_posix()
    except ValueError:
        return p.resolve().relative_to(Path(out).resolve()).as_posix()


def _oof(result: ResultRow) -> str | None:
    return (result.extra.get("cv") or {}).get("oof")


def save(out: Path, label: str, key: str, values: dict, results: list[ResultRow]) -> Path:
    """Record ``results`` (one per TTA mode of one fit) as finished, after their files were saved."""
    entries = []
    for r in results:
        model, oof = _relative(out, r.model_path), _relative(out, _oof(r))
        entries.append({"result": r.to_dict(), "model": model,
                        "sha256": sidecar_digest(out / model) if model else None,
                        "oof": oof, "oof_sha256": sha256_file(out / oof) if oof else None})
    path = record_path(out, results[0].feature, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": RESUME_FORMAT, "key": key, "label": label, "settings": values, "results": entries}
    return atomic_write(path, json.dumps(to_jsonable(record), indent=1) + "\n")


def _same_file(path: Path, digest: str | None, sidecar: bool) -> str:
    """Why ``path`` is not the file recorded ('' when it is)."""
    if not isinstance(digest, str) or len(digest) != 64:
        return f"{path.name}: no sha256 recorded"
    if not path.is_file():
        return f"{path.name} is missing"
    if sidecar:
        try:
            if not hmac.compare_digest(sidecar_digest(path), digest):
                return f"{path.name}: its .sha256 sidecar changed"
        except ValueError as e:
            return str(e)
    if not hmac.compare_digest(sha256_file(path), digest):
        return f"{path.name} changed since it was recorded"
    return ""


def _rebuild(out: Path, entry: dict) -> ResultRow:
    """A finished row as it was recorded, its paths under this run's ``out``."""
    d = dict(entry["result"])
    if entry.get("model"):
        d["model_path"] = str(out / entry["model"])
    if entry.get("oof"):
        d["extra"] = {**d["extra"], "cv": {**d["extra"]["cv"], "oof": str(out / entry["oof"])}}
    return ResultRow.from_dict(d, "finished record")


def _problem(out: Path, entry: dict) -> str:
    if entry.get("model"):
        why = _same_file(out / entry["model"], entry.get("sha256"), sidecar=True)
        if why:
            return why
    if entry.get("oof"):
        return _same_file(out / entry["oof"], entry.get("oof_sha256"), sidecar=False)
    return ""


def load(out: Path, feature: str, label: str, key: str) -> list[ResultRow] | None:
    """The results recorded for ``label`` under ``key``, or None when it must be fitted (no
    record, other settings, a file it names missing or changed, or a record that cannot be read)."""
    path = record_path(out, feature, label)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") != key:
            log.info("%-16s settings changed since %s; fitting it again", label, path)
            return None
        entries = record["results"]
        if not isinstance(entries, list) or not entries:
            raise BadInput("no results")
        for entry in entries:
            why = _problem(out, entry)
            if why:
                log.warning("%-16s not reused: %s; fitting it again", label, why)
                return None
        return [_rebuild(out, entry) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: unreadable finished record (%s: %s); ignoring it, %s is fitted again", path,
                    type(e).__name__, e, label)
        return None
