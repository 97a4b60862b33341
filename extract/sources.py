"""Image sources -> a Manifest: which files, in which order, with which labels and splits.

Four kinds: an ImageFolder tree (``train/ val/ test/`` split folders, or one tree of
class folders), a CSV of ``path,label[,split]``, a folder of unlabeled images, or tar
shards in the webdataset layout (``shards/train-{000..009}.tar``: ``extract.tarsource``).
The order is deterministic (sorted relative paths), so row numbers are stable across
runs and a resume lands on the same rows.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path, PurePosixPath

import numpy as np

from extract.images import IMAGE_EXTENSIONS, list_images
from extract.sourcebase import SPLITS, SourceError  # SourceError: also caught as extract.sources.SourceError
from extract.tarsource import from_shards, is_shard_spec
from featcache.store import Manifest
from featcache.store.tar_members import source_stat

PATH_COLUMNS = ("path", "file", "filename", "image", "id")
LABEL_COLUMNS = ("label", "class", "breed", "category", "target")
SPLIT_COLUMNS = ("split", "subset", "fold")


def fingerprint(root: Path, paths: list[str], labels: np.ndarray, splits: list[str]) -> str:
    """Hash what decides the rows: each file's path, size and mtime, its label and split."""
    h = hashlib.sha256()
    for p, y, s in zip(paths, labels.tolist(), splits):
        try:
            st = os.stat(root / p)
            size, mtime = st.st_size, st.st_mtime_ns
        except NotADirectoryError:  # SHARD.tar/member: the member's size and the shard's mtime
            try:
                size, mtime = source_stat(root / p)
            except OSError:
                size, mtime = -1, -1
        except OSError:  # a broken link or unreadable file is still a row; it errors at load
            size, mtime = -1, -1
        h.update(f"{p}\t{size}\t{mtime}\t{y}\t{s}\n".encode())
    return h.hexdigest()


def _class_dirs(d: Path) -> list[str]:
    return sorted(c.name for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))


def _from_split_folders(root: Path, present: list[str]) -> Manifest:
    if "train" not in present:
        raise SourceError(f"{root}: has {'/'.join(present)} folders but no train/ to learn classes from")
    classes = [c for c in _class_dirs(root / "train") if list_images(root / "train" / c)]
    if not classes:
        raise SourceError(f"{root}/train: no class folders with images")
    index = {c: i for i, c in enumerate(classes)}
    paths, labels, splits = [], [], []
    for split in present:
        for c in _class_dirs(root / split):
            files = list_images(root / split / c)
            if not files:
                continue
            if c not in index:
                raise SourceError(f"{root}/{split}/{c}: class {c!r} is in {split}/ but not in train/")
            paths += [f"{split}/{c}/{f}" for f in files]
            labels += [index[c]] * len(files)
            splits += [split] * len(files)
    return _manifest(root, paths, labels, splits, classes)


def _manifest(root: Path, paths: list[str], labels: list[int], splits: list[str], classes: list[str]) -> Manifest:
    if not paths:
        raise SourceError(f"{root}: no images found (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    y = np.asarray(labels, dtype=np.int64)
    return Manifest(str(root.resolve()), paths, y, splits, classes, fingerprint(root, paths, y, splits))


def from_folder(root: str | os.PathLike) -> Manifest:
    root = Path(root)
    if not root.exists():
        raise SourceError(f"--data {root}: no such directory")
    if not root.is_dir():
        raise SourceError(f"--data {root}: not a directory or .csv file")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present:
        return _from_split_folders(root, present)
    classes = [c for c in _class_dirs(root) if list_images(root / c)]
    if classes:  # one tree of class folders: all rows are train; classify holds out a val split
        paths, labels = [], []
        for i, c in enumerate(classes):
            files = list_images(root / c)
            paths += [f"{c}/{f}" for f in files]
            labels += [i] * len(files)
        return _manifest(root, paths, labels, ["train"] * len(paths), classes)
    files = list_images(root)  # unlabeled
    return _manifest(root, files, [-1] * len(files), ["all"] * len(files), [])


def _pick(header: list[str], names: tuple[str, ...]) -> str | None:
    lower = {h.lower(): h for h in header}
    return next((lower[n] for n in names if n in lower), None)


def _resolve_csv_path(root: Path, raw: str, csv_path: Path, line: int, allow_outside: bool) -> str:
    rel = PurePosixPath(raw.replace("\\", "/"))
    full = (root / rel).resolve() if not rel.is_absolute() else Path(rel).resolve()
    if not allow_outside and not full.is_relative_to(root.resolve()):
        raise SourceError(f"{csv_path}:{line}: path {raw!r} escapes the data root {root}; "
                          "pass --allow-outside-root to allow it")
    if not rel.suffix or rel.suffix.lower() not in IMAGE_EXTENSIONS:  # Kaggle-style ids without extension
        for ext in sorted(IMAGE_EXTENSIONS):
            for cand in (full.with_name(full.name + ext), full.with_name(full.name + ext.upper())):
                if cand.exists():
                    full = cand
                    break
            else:
                continue
            break
    if not full.exists() and not full.is_symlink():
        raise SourceError(f"{csv_path}:{line}: file not found: {raw!r} (looked for {full})")
    try:
        return full.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(full)


def from_csv(csv_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
             allow_outside: bool = False) -> Manifest:
    """Rows of ``path,label[,split]``; paths relative to ``image_root`` (default: the CSV's folder)."""
    csv_path = Path(csv_path)
    root = Path(image_root) if image_root else csv_path.parent
    if not root.is_dir():
        raise SourceError(f"--image-root {root}: no such directory")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(f"--data {csv_path}: cannot read CSV: {e}") from None
    pcol, lcol, scol = _pick(header, PATH_COLUMNS), _pick(header, LABEL_COLUMNS), _pick(header, SPLIT_COLUMNS)
    if pcol is None:
        raise SourceError(f"{csv_path}: no path column; header is {header}, expected one of {PATH_COLUMNS}")
    unknown = [h for h in header if h not in (pcol, lcol, scol)]
    if unknown:
        raise SourceError(f"{csv_path}: unknown columns {unknown}; expected path,label[,split]")
    if not rows:
        raise SourceError(f"{csv_path}: no rows")
    paths, names, splits, seen = [], [], [], {}
    for line, row in enumerate(rows, start=2):
        raw = (row.get(pcol) or "").strip()
        if not raw:
            raise SourceError(f"{csv_path}:{line}: empty path")
        p = _resolve_csv_path(root, raw, csv_path, line, allow_outside)
        if p in seen:
            raise SourceError(f"{csv_path}:{line}: duplicate path {raw!r} (first on line {seen[p]})")
        seen[p] = line
        label = (row.get(lcol) or "").strip() if lcol else None
        if lcol and not label:
            raise SourceError(f"{csv_path}:{line}: empty label for {raw!r}")
        split = (row.get(scol) or "").strip().lower() if scol else "train"
        if split not in (*SPLITS, "all"):
            raise SourceError(f"{csv_path}:{line}: split {split!r} is not one of {SPLITS}")
        paths.append(p)
        names.append(label)
        splits.append(split)
    if lcol is None:
        return _manifest(root, paths, [-1] * len(paths), ["all"] * len(paths), [])
    classes = sorted({n for n, s in zip(names, splits) if s == "train"})
    extra = sorted({n for n in names} - set(classes))
    if extra:
        raise SourceError(f"{csv_path}: class {extra[0]!r} appears in val/test but has no train rows")
    index = {c: i for i, c in enumerate(classes)}
    order = sorted(range(len(paths)), key=lambda i: (SPLITS.index(splits[i]) if splits[i] in SPLITS else 3, paths[i]))
    return _manifest(root, [paths[i] for i in order], [index[names[i]] for i in order],
                     [splits[i] for i in order], classes)


def from_files(files: list[str | os.PathLike]) -> Manifest:
    """Loose files and folders (``predict IMAGES...|DIR``): unlabeled, root = their common folder."""
    expanded: list[Path] = []
    for item in map(Path, files):
        if item.is_dir():
            expanded += [item / p for p in list_images(item)]
        elif item.exists() or item.is_symlink():
            expanded.append(item)
        else:
            raise SourceError(f"{item}: no such file or directory")
    if not expanded:
        raise SourceError(f"no images in {', '.join(map(str, files))}")
    absolute = [p.absolute() for p in expanded]
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    rel = [p.relative_to(root).as_posix() for p in absolute]
    return _manifest(root, rel, [-1] * len(rel), ["all"] * len(rel), [])


def build_manifest(data: str | os.PathLike, image_root: str | os.PathLike | None = None,
                   allow_outside: bool = False) -> Manifest:
    """The Manifest of ``--data``: a CSV, tar shards (a spec ending in .tar, braces and globs allowed), or a folder."""
    if is_shard_spec(data) and not Path(data).is_dir():
        return from_shards(data)
    data = Path(data)
    if data.suffix.lower() == ".csv":
        if not data.is_file():
            raise SourceError(f"--data {data}: no such CSV file")
        return from_csv(data, image_root, allow_outside)
    return from_folder(data)
