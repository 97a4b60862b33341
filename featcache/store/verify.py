"""Check a whole store: every chunk against its checksum, the row flags against each other, the blobs.

Feature, view and flip datasets are written with HDF5's fletcher32 filter, so a flipped bit
on disk fails the read of its chunk instead of becoming a wrong feature. Stores written
before the filter have no checksums; for them this checks only that every chunk can be read
and that finished rows hold numbers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from featcache.store.read import bad_chunks, read_blob, read_info
from featcache.store.schema import StoreError, _open_h5, datasets_under

BLOCK_BYTES = 64 << 20  # read this much at once; descend to chunks only where a read fails


@dataclass
class VerifyReport:
    """What ``verify_store`` found; ``ok`` when nothing is wrong."""

    path: Path
    datasets: int = 0
    checksummed: int = 0  # datasets with the fletcher32 filter
    rows: int = 0
    bytes_read: int = 0
    bad: list[tuple[str, int, int]] = field(default_factory=list)  # (dataset, first row, last row + 1)
    nan_rows: dict[str, int] = field(default_factory=dict)  # finished, readable rows that hold NaN
    problems: list[str] = field(default_factory=list)  # flags, errors and blobs that do not agree
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.bad or self.nan_rows or self.problems)


def _check_rows(ds: h5py.Dataset, finished: np.ndarray, report: VerifyReport) -> None:
    """Read ``ds`` in large blocks; a failed block is searched chunk by chunk for the bad ones."""
    row_bytes = max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize)
    step = max(1, BLOCK_BYTES // row_bytes)
    if ds.chunks:
        step = max(ds.chunks[0], step - step % ds.chunks[0])
    nan = 0
    for a in range(0, ds.shape[0], step):
        b = min(a + step, ds.shape[0])
        try:
            block = ds[a:b]
        except OSError:
            report.bad += [(ds.name, lo, hi) for lo, hi in bad_chunks(ds, a, b)]
            continue
        report.bytes_read += block.nbytes
        if finished is not None and np.issubdtype(block.dtype, np.floating):
            rows = finished[a:b]
            flat = block.reshape(len(block), -1)
            nan += int((~np.isfinite(flat[rows])).any(axis=1).sum())
    if nan:
        report.nan_rows[ds.name] = nan


def verify_store(path: str | os.PathLike, allow_partial: bool = True) -> VerifyReport:
    """Read every feature chunk of a store (or its ``.partial``) and check it; nothing is written."""
    t0 = time.perf_counter()
    info = read_info(path, allow_partial=allow_partial)
    report = VerifyReport(path=info.path, rows=info.n_rows)
    with _open_h5(info.path) as f:
        n = len(f["paths"])
        for name in ("labels", "split", "done", "ok"):
            if len(f[name]) != n:
                report.problems.append(f"/{name} has {len(f[name])} rows, /paths {n}")
        done, ok = f["done"][:], f["ok"][:]
        err_rows = f["errors"]["row"][:] if len(f["errors"]) else np.empty(0, np.int64)
        if ((err_rows < 0) | (err_rows >= n)).any():
            report.problems.append(f"/errors names rows outside 0-{n - 1}")
        elif len(err_rows) and ok[err_rows].any():
            report.problems.append(f"{int(ok[err_rows].sum())} rows in /errors are flagged readable")
        if info.complete and not done.all():
            report.problems.append(f"marked complete, but {int((~done).sum())} rows are not written")
        view_rows = f["view_rows"][:] if "view_rows" in f else None
        try:
            datasets = datasets_under(f)
        except Exception as e:  # noqa: BLE001 - a broken chunk index or link table is a finding, not a crash
            report.problems.append(f"the file's structure cannot be read ({' '.join(str(e).split())})")
            datasets = []
        for ds in datasets:
            report.datasets += 1
            report.checksummed += bool(ds.fletcher32)
            if ds.name.startswith("/views/"):
                finished = (done & ok)[view_rows] if view_rows is not None else None
            else:
                finished = done & ok
            if len(finished) != ds.shape[0]:
                report.problems.append(f"{ds.name} has {ds.shape[0]} rows, expected {len(finished)}")
                finished = None
            _check_rows(ds, finished, report)
        blobs = list(f["blobs"]) if "blobs" in f else []
    for name in blobs:
        try:
            read_blob(info.path, name)
        except StoreError as e:
            report.problems.append(str(e).split(": ", 1)[-1])
    report.seconds = time.perf_counter() - t0
    return report


def describe(report: VerifyReport) -> list[str]:
    """The report as lines for the terminal, the verdict first."""
    sums = (f"all {report.datasets} feature datasets checksummed (fletcher32)" if report.checksummed == report.datasets
            else f"{report.checksummed} of {report.datasets} feature datasets checksummed"
            + ("; written before checksums, so only readability and NaN were checked"
               if not report.checksummed else ""))
    verdict = "OK" if report.ok else "CORRUPTED" if report.bad else "PROBLEMS"
    lines = [f"{report.path}: {verdict}: read {report.bytes_read / 1e6:.1f} MB of {report.rows} rows in "
             f"{report.seconds:.1f} s; {sums}"]
    lines += [f"  bad chunk  {name} rows {a}-{b - 1} (fail their checksum or cannot be read)"
              for name, a, b in report.bad]
    lines += [f"  NaN        {name}: {k} finished rows hold NaN or inf" for name, k in report.nan_rows.items()]
    lines += [f"  problem    {p}" for p in report.problems]
    return lines
