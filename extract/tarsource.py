"""Tar shards in the webdataset layout as an image source: ``--data 'shards/train-{000..009}.tar'``.

A shard holds samples as consecutive members sharing a key: ``train/ants/0013.jpg`` with
``train/ants/0013.cls`` (the label as text) or ``.json`` (``{"label": ..., "split": ...}``). The
Manifest's rows are the image members, in shard order then tar order, with paths
``<shard relative to the root>/<member>`` that ``store.tar_members`` reads by offset; so extraction,
resume, error rows and the cache key work as for a folder, and nothing is unpacked.

Building it reads only tar headers and the small label members (10^6 images in thousands of shards).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np

from extract.images import IMAGE_EXTENSIONS
from extract.sourcebase import SPLITS, SourceError
from featcache.store import Manifest
from featcache.store.tar_members import Member, ShardError, members

COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tar.lz4")
LABEL_KEYS = ("label", "class", "cls", "target", "category")
_IMAGE_EXTS = frozenset(e.lstrip(".") for e in IMAGE_EXTENSIONS)
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?")
_SPLIT_PREFIX = re.compile(r"(train|val|test)(?![a-z0-9])", re.IGNORECASE)
_GLOB = re.compile(r"[*?[]")
_INT = re.compile(r"[+-]?\d+")
_COMPRESSED_HINT = ("compressed shards cannot be read by offset; use uncompressed .tar shards "
                    "(webdataset's default)")


def _brace_alternatives(inner: str) -> list[str] | None:
    """The items of ``{inner}``: a comma list (top level only) or a numeric range; None if neither."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    if parts:
        return parts + [inner[start:]]
    m = _RANGE.fullmatch(inner)
    if not m:
        return None
    a, b, step = int(m[1]), int(m[2]), abs(int(m[3] or 1)) or 1
    padded = any(re.fullmatch(r"-?0\d+", t) for t in (m[1], m[2]))  # bash: a leading zero pads to the wider end
    width = max(len(m[1]), len(m[2])) if padded else 0
    values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
    return [f"{v:0{width}d}" for v in values]


def expand_braces(text: str) -> list[str]:
    """Bash brace expansion: ``{000..009}`` (zero padding kept), ``{a,b}``, nested and several, in order."""
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        depth = 0
        for j in range(i, len(text)):
            depth += (text[j] == "{") - (text[j] == "}")
            if depth == 0:
                break
        else:
            return [text]  # unbalanced: the rest is literal
        items = _brace_alternatives(text[i + 1:j])
        if items is None:
            continue  # literal braces, e.g. "{x}"; look for the next "{" (maybe inside)
        return [out for item in items for out in expand_braces(text[:i] + item + text[j + 1:])]
    return [text]


def is_shard_spec(data: str | os.PathLike) -> bool:
    """True when ``--data`` names tar shards: every brace expansion ends in .tar (or a compressed tar)."""
    items = expand_braces(os.fspath(data))
    return all(it.lower().endswith((".tar", *COMPRESSED_SUFFIXES)) for it in items)


def expand_spec(spec: str | os.PathLike) -> list[Path]:
    """The shards of a spec: braces expanded, then each item globbed (sorted); order kept, duplicates dropped."""
    spec = os.fspath(spec)
    shards: list[Path] = []
    seen: set[str] = set()
    for item in expand_braces(spec):
        if item.lower().endswith(COMPRESSED_SUFFIXES):
            raise SourceError(f"--data {spec}: {item} is compressed; {_COMPRESSED_HINT}")
        if _GLOB.search(item):
            found = sorted(glob.glob(item))
            if not found:
                raise SourceError(f"--data {spec}: no file matches {item}")
        elif not os.path.exists(item):
            raise SourceError(f"--data {spec}: shard not found: {item}")
        else:
            found = [item]
        for f in found:
            key = os.path.realpath(f)
            if key not in seen:
                seen.add(key)
                shards.append(Path(f))
    for shard in shards:
        if not shard.is_file():
            raise SourceError(f"--data {spec}: {shard} is not a file")
    return shards


class _Sample:
    __slots__ = ("image", "size", "mtime", "label", "split", "at")

    def __init__(self) -> None:
        self.image: str | None = None
        self.size = self.mtime = 0
        self.label: str | None = None
        self.split: str | None = None
        self.at = 0  # tar order of the image member


def _split_key(name: str) -> tuple[str, str] | None:
    """webdataset's key and extension: ``a/b.seg.png`` -> (``a/b``, ``seg.png``); None without a dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext


def _label_from(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SourceError(f"{where}: label {value!r} is not an integer or a class name")
    if isinstance(value, float):
        if not value.is_integer():
            raise SourceError(f"{where}: label {value!r} is not an integer or a class name")
        value = int(value)
    text = str(value).strip()
    if not text:
        raise SourceError(f"{where}: empty label")
    return str(int(text)) if _INT.fullmatch(text) else text


def _read_text(f: BinaryIO, m: Member, where: str) -> str:
    f.seek(m.offset)
    try:
        return f.read(m.size).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{where}: not UTF-8 text") from None


def _read_json(f: BinaryIO, m: Member, where: str) -> tuple[str | None, str | None]:
    try:
        obj = json.loads(_read_text(f, m, where))
    except json.JSONDecodeError as e:
        raise SourceError(f"{where}: invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise SourceError(f"{where}: JSON is a {type(obj).__name__}, expected an object with a label")
    key = next((k for k in LABEL_KEYS if obj.get(k) is not None), None)
    label = _label_from(obj[key], where) if key else None
    split = obj.get("split")
    if split is not None:
        split = str(split).strip().lower()
        if split not in SPLITS:
            raise SourceError(f"{where}: split {obj['split']!r} is not one of {SPLITS}")
    return label, split


def _scan_shard(shard: Path, spec: str) -> dict[str, _Sample]:
    """Samples by key, in the tar order of their image members; reads headers and label members only."""
    samples: dict[str, _Sample] = {}
    seen: set[str] = set()
    try:
        entries = members(shard)
        with open(shard, "rb") as f:
            for at, (name, m) in enumerate(entries):
                if name in seen:
                    raise SourceError(f"{shard}: member {name} appears twice")
                seen.add(name)
                if name.startswith("/") or ".." in name.split("/"):
                    raise SourceError(f"{shard}: member {name!r} names a path outside the shard "
                                      "(absolute or '..'); webdataset keys are relative")
                if name.startswith(".") or "/." in name:
                    continue  # hidden, as folders skip them (macOS ._* files, .cache/)
                parts = _split_key(name)
                if parts is None:
                    continue
                key, ext = parts[0], parts[1].lower()
                where = f"{shard}:{name}"
                if ext in _IMAGE_EXTS:
                    s = samples.setdefault(key, _Sample())
                    if s.image is None:  # several images under one key: the first in tar order
                        s.image, s.size, s.mtime, s.at = name, m.size, m.mtime, at
                elif ext == "cls":
                    samples.setdefault(key, _Sample()).label = _label_from(_read_text(f, m, where), where)
                elif ext == "json":
                    label, split = _read_json(f, m, where)
                    s = samples.setdefault(key, _Sample())
                    s.label = s.label if s.label is not None else label  # a .cls wins over the json's label
                    s.split = split
    except ShardError as e:  # not a tar, or a compressed one
        raise SourceError(f"--data {spec}: {e}") from None
    except OSError as e:
        raise SourceError(f"--data {spec}: cannot read {shard}: {e.strerror or e}") from None
    ordered = sorted(((k, s) for k, s in samples.items() if s.image is not None), key=lambda ks: ks[1].at)
    return dict(ordered)


def _split_of(sample: _Sample, shard: Path) -> str:
    if sample.split:
        return sample.split
    m = _SPLIT_PREFIX.match(shard.name)
    if m:
        return m[1].lower()
    top = sample.image.split("/", 1)[0] if "/" in sample.image else ""
    return top if top in SPLITS else "train"


def from_shards(spec: str | os.PathLike) -> Manifest:
    """A Manifest over the image members of the shards a spec names (see the module docstring)."""
    spec = os.fspath(spec)
    shards = expand_spec(spec)
    absolute = [Path(os.path.abspath(s)) for s in shards]
    common = Path(os.path.commonpath([p.parent for p in absolute]))
    h = hashlib.sha256()
    owner: dict[str, Path] = {}
    rows: list[tuple[str, _Sample, str, str]] = []  # (path, sample, split, "shard:key")
    for shard, full in zip(shards, absolute):
        rel = full.relative_to(common).as_posix()
        st = os.stat(full)
        h.update(f"shard\t{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        for key, s in _scan_shard(shard, spec).items():
            if key in owner:
                raise SourceError(f"--data {spec}: key {key} is in both {owner[key]} and {shard}")
            owner[key] = shard
            rows.append((f"{rel}/{s.image}", s, _split_of(s, shard), f"{shard}:{key}"))
    if not rows:
        raise SourceError(f"--data {spec}: no image members in {len(shards)} shard(s) "
                          f"(extensions: {', '.join(sorted(_IMAGE_EXTS))})")
    labeled = [r for r in rows if r[1].label is not None]
    if not labeled:
        paths, labels, splits, classes = [r[0] for r in rows], [-1] * len(rows), ["all"] * len(rows), []
    else:
        if len(labeled) < len(rows):
            first = next(r for r in rows if r[1].label is None)
            raise SourceError(f"--data {spec}: {first[3]} has no label (.cls, or .json with one of "
                              f"{LABEL_KEYS}) while other samples have one")
        names = {r[1].label for r in rows if r[2] == "train"}
        numeric = all(_INT.fullmatch(r[1].label) for r in rows)
        classes = sorted(names, key=int) if numeric else sorted(names)
        index = {c: i for i, c in enumerate(classes)}
        extra = next((r for r in rows if r[1].label not in index), None)
        if extra:
            raise SourceError(f"--data {spec}: class {extra[1].label!r} ({extra[3]}) appears in "
                              f"{extra[2]} but has no train rows")
        paths, labels, splits = [r[0] for r in rows], [index[r[1].label] for r in rows], [r[2] for r in rows]
    for p, (_, s, _, _), y, sp in zip(paths, rows, labels, splits):
        h.update(f"{p}\t{s.size}\t{s.mtime}\t{y}\t{sp}\n".encode())
    return Manifest(str(common.resolve()), paths, np.asarray(labels, dtype=np.int64), splits, classes, h.hexdigest())
