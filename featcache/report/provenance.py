"""Where each feature set came from: the extraction record of results.json joined with its store.

Shaped as plain rows of text so the Markdown and HTML renderers show the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from classify.leaderboard import Leaderboard
from featcache.report.stores import StoreFacts

SHA_PREFIX = 12
MAX_LISTED_ERRORS = 20


@dataclass(frozen=True)
class Extraction:
    """One backbone's store: how it was made, and how it was obtained this run."""

    backbone: str
    record: dict  # the results.json extraction record
    facts: StoreFacts

    @property
    def features(self) -> dict[str, int]:
        if self.record.get("features"):
            return dict(self.record["features"])
        return dict(self.facts.info.features) if self.facts.info else {}

    @property
    def spec(self) -> dict:
        return self.facts.info.spec if self.facts.info else {}

    @property
    def cache(self) -> str:
        status = self.record.get("status")
        return {"hit": "cache hit", "resume": "resumed", "new": "extracted"}.get(status, status or "?")


def extractions(run: Leaderboard, stores: dict[str, StoreFacts]) -> list[Extraction]:
    """One per extraction record; backbones seen only in results get a bare record."""
    out = [Extraction(str(r.get("backbone", "?")), r, stores.get(str(r.get("store", "")))
                      or StoreFacts(str(r.get("store", "")), None, None, None, "store not named"))
           for r in run.extraction if isinstance(r, dict)]
    known = {e.backbone for e in out}
    for entry in run.rows:
        if entry.backbone not in known:
            known.add(entry.backbone)
            feats = {e.feature: 0 for e in run.rows if e.backbone == entry.backbone}
            out.append(Extraction(entry.backbone, {"store": entry.store, "features": feats},
                                  stores.get(entry.store) or StoreFacts(entry.store, None, None, None, "not found")))
    return out


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("s") else "s")


def weights_text(spec: dict) -> str:
    w = str(spec.get("weights", "?"))
    sha = spec.get("weights_sha256")
    return f"{w} (sha256 {sha[:SHA_PREFIX]})" if sha else w


def transform_text(spec: dict) -> str:
    t = spec.get("transform") or {}
    if not t:
        return "?"
    mean = "/".join(f"{x:.3g}" for x in t.get("mean", []))
    std = "/".join(f"{x:.3g}" for x in t.get("std", []))
    draft = ", draft JPEG" if spec.get("draft") else ""
    return f"resize {t.get('resize')} {t.get('interpolation', '')}, crop {t.get('crop')}, mean {mean}, std {std}{draft}"


def splits_text(ex: Extraction) -> str:
    counts = ex.facts.info.split_counts if ex.facts.info else {}
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "?"


def _num(x: object, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "-"


def feature_rows(exs: list[Extraction]) -> tuple[list[str], list[list[str]]]:
    """The provenance table: one row per feature set (backbone x layer x pooling)."""
    head = ["backbone", "layer", "pooling", "dim", "weights", "transform", "precision on runtime / dtype",
            "images per split",
            "skipped", "extraction s", "img/s", "obtained by"]
    rows = []
    for ex in exs:
        spec = ex.spec
        for key, dim in ex.features.items():
            layer, _, pool = key.rpartition("/")
            rows.append([
                ex.backbone, layer or key, pool, str(dim or "?"), weights_text(spec), transform_text(spec),
                f"{spec.get('precision', '?')} on {runtime_text(ex)} / {spec.get('dtype', '?')}", splits_text(ex),
                str(ex.record.get("skipped", len(ex.facts.info.errors) if ex.facts.info else "?")),
                _num(ex.record.get("seconds"), ".1f"), _num(ex.record.get("images_per_s"), ".1f"), ex.cache,
            ])
    return head, rows


def runtime_text(ex: Extraction) -> str:
    """What ran the network: the store's provenance (stores made before runtimes existed: torch)."""
    p = ex.facts.info.provenance if ex.facts.info else {}
    runtime = p.get("runtime", "torch")
    return f"{runtime} {p['openvino']}" if runtime == "openvino" and p.get("openvino") else runtime


def forward_pass_line(ex: Extraction) -> str:
    """Why comparing layers is free: every feature set of a backbone shares one forward pass."""
    sets, keys = plural(len(ex.features), "feature set"), ", ".join(ex.features)
    passes = ex.record.get("forward_passes")
    if ex.record.get("status") == "hit" or passes == 0:
        return (f"{ex.backbone}: {sets} ({keys}) read from a cached store, 0 forward passes this run; "
                f"they were stored together by ONE forward pass per image when the store was made.")
    p = passes if isinstance(passes, int) else 1
    return (f"{ex.backbone}: {sets} ({keys}) from {plural(p, 'forward pass')} per image "
            f"(one pass hooks every layer and pools it every way), so comparing layers cost no extra backbone passes.")


def environment_line(ex: Extraction) -> str:
    info = ex.facts.info
    if info is None:
        return f"{ex.backbone}: store `{ex.facts.named}`: {ex.facts.problem}"
    p = info.provenance
    parts = [f"store `{info.path}`", f"{info.n_ok} of {info.n_rows} rows usable",
             f"runtime {runtime_text(ex)}", f"torch {p.get('torch', '?')}", f"torchvision {p.get('torchvision', '?')}",
             f"device {p.get('device', '?')}",
             f"created {p.get('created', '?')}", f"cache key {info.cache_key[:SHA_PREFIX]}"]
    return f"{ex.backbone}: " + ", ".join(parts)


def skipped_files(ex: Extraction) -> tuple[list[tuple[str, str]], int]:
    """(path, reason) of unreadable images, up to MAX_LISTED_ERRORS, and how many more there are."""
    errors = ex.facts.info.errors if ex.facts.info else []
    return list(errors[:MAX_LISTED_ERRORS]), max(0, len(errors) - MAX_LISTED_ERRORS)
