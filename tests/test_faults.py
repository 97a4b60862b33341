"""Faults of long jobs on big stores: a full disk, corrupted chunks, a store read while written, too little memory.

Full disks are real where the machine allows it: a tmpfs of a few MB is mounted (root only;
those tests skip elsewhere) and filled by the job itself. The other faults need no privilege:
bytes flipped at a chunk's offset, a writer process racing the reader, an address-space limit.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

import pipeline
from featcache.common.errors import DiskFull
from featcache.common.files import replace_atomically
from featcache.store import StoreError, partial_path, read_rows, write_lock
from featcache.store.errors import StoreCorrupted
from featcache.store.verify import verify_store
from tests import slow_writer
from tests.samples import copy_sample

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = [sys.executable, str(ROOT / "pipeline.py")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMEOUT = 180


def run(args: list[str], *, script: str | None = None) -> subprocess.CompletedProcess:
    """``pipeline.py ARGS`` in a fresh process; ``script``: Python run before it (a fault injected)."""
    cmd = [sys.executable, "-c", script + "\nimport pipeline, sys\nsys.exit(pipeline.main(sys.argv[1:]))", *args] \
        if script else [*PIPELINE, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=ENV, cwd=ROOT)


def stderr_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.strip().splitlines() if line.strip()]


# --------------------------------------------------------------------------- a full disk


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    d = tempfile.mkdtemp()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d], capture_output=True)
        return ok
    finally:
        os.rmdir(d)


CAN_MOUNT = _can_mount()
needs_tmpfs = pytest.mark.skipif(not CAN_MOUNT, reason="mounting a tmpfs (a small disk to fill) needs root")


@contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "3m"); ``resize(d, size)`` grows it, as a user freeing space would."""
    d = Path(tempfile.mkdtemp(prefix="fulldisk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)
        d.rmdir()


def resize(d: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(d)], check=True)


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("the old report")

    def write(f):
        f.write(b"x" * 5000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull, match=r"metrics.json: no space left on device writing metrics.json "
                                       r"\(needs about 5.0 kB more, .* free\); free some space and rerun"):
        replace_atomically(path, write)
    assert path.read_text() == "the old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # the temp file is gone


def test_any_full_disk_is_one_line_and_exit_3(monkeypatch, capsys):
    """h5py reports a full disk as an OSError or RuntimeError with no errno, the reason in its text."""
    import extract.cli

    def fails(args):
        raise RuntimeError("Unable to synchronously flush file (file write failed: time = ..., "
                           "filename = '/x/s.h5.partial', errno = 28, error message = 'No space left on device')")

    monkeypatch.setattr(extract.cli, "main_info", fails)
    assert pipeline.main(["info", "s.h5"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no space left on device" in err[0], err


def test_preflight_refuses_an_extraction_that_cannot_fit(tmp_path, monkeypatch, capsys):
    import featcache.store.write as store_write

    images = copy_sample(tmp_path / "images", 2)
    out = tmp_path / "s.h5"
    monkeypatch.setattr(store_write, "free_bytes", lambda path: 10_000)
    args = ["extract", "--data", str(images), "--backbone", "efficientnet_lite0", "--out", str(out), "-q"]
    assert pipeline.main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{out}: the store (8 rows x 1280 features, float32) needs about" in err[0]
    assert "10.0 kB free" in err[0] and "--force" in err[0]
    assert not out.exists() and not partial_path(out).exists()  # refused before anything was written


@needs_tmpfs
def test_store_writer_meets_a_full_disk_between_batches_and_resumes(tmp_path):
    """8 chunks of 1 MiB into a 3 MB disk: the writer stops cleanly between batches, the rows it
    wrote survive, and once the disk grows the same job resumes to the right store."""
    n, dim, batch = 8192, 256, 256
    feat = slow_writer.feature(dim)

    def open_store(out):
        from featcache.store import open_for_write

        return open_for_write(out, slow_writer.manifest(n), [feat], cache_key="full", spec={"backbone": "full"},
                              provenance={}, default_feature=feat.key)

    with small_disk("3m") as disk:
        out = disk / "s.h5"
        with write_lock(out):
            w = open_store(out)
            with pytest.raises(DiskFull, match=r"s.h5.partial: no space left on device writing the feature store "
                                               r"\((\d+) rows left\) \(needs about .* more, .* free\)") as e:
                for a in range(0, n, batch):
                    w.write(np.arange(a, a + batch), {feat.key: slow_writer.values(np.arange(a, a + batch), dim)})
            w.close()
        written = int(h5py.File(partial_path(out), "r")["done"][:].sum())
        assert 0 < written < n, written
        assert f"({n - written} rows left)" in str(e.value)
        resize(disk, "16m")
        with write_lock(out):
            w = open_store(out)
            assert w.status == "resume" and len(w.pending) == n - written
            for a in range(written, n, batch):
                rows = np.arange(a, min(a + batch, n))
                w.write(rows, {feat.key: slow_writer.values(rows, dim)})
            w.finish()
        data = read_rows(out)
        np.testing.assert_array_equal(data["X"], slow_writer.values(np.arange(n), dim))
        assert verify_store(out).ok


@needs_tmpfs
def test_extraction_on_a_full_disk_exits_3_and_resumes(tmp_path):
    """The real job: one line and exit 3, whether the writer's check or HDF5 itself meets the full
    disk (that one used to end in a segfault); after space is freed the store equals a clean run's."""
    images = copy_sample(tmp_path / "images", 6)
    ref = tmp_path / "ref.h5"
    common = ["--backbone", "efficientnet_lite0", "--layers", "default,_bn1", "--pools", "avg,max", "--batch-size",
              "4", "-q"]
    assert run(["extract", "--data", str(images), "--out", str(ref), *common]).returncode == 0
    hdf5_itself = "import featcache.store.write as w; w.free_bytes = lambda path: 1 << 40"  # the check sees room
    for fault, script in (("checked", None), ("hdf5", hdf5_itself)):
        with small_disk("250k") as disk:
            out = disk / "s.h5"
            r = run(["extract", "--data", str(images), "--out", str(out), *common, "--force"], script=script)
            lines = [x for x in stderr_lines(r) if "starting anyway (--force)" not in x]
            assert r.returncode == 3, (fault, r.returncode, r.stderr)
            assert len(lines) == 1 and lines[0].startswith(f"error: {out}.partial: no space left on device"), \
                (fault, r.stderr)
            assert not out.exists()
            resize(disk, "8m")
            r = run(["extract", "--data", str(images), "--out", str(out), *common])
            assert r.returncode == 0, (fault, r.stderr)
            from tests.test_reliability import assert_same_store

            assert_same_store(ref, out)
            assert verify_store(out).ok


@needs_tmpfs
def test_classify_on_a_full_disk_exits_3_and_keeps_the_store(make_store, tmp_path):
    store = make_store(20, 3, 16)
    before = store.read_bytes()
    with small_disk("12k") as disk:
        r = run(["classify", "--features", str(store), "--models", "logreg,knn-dino", "--select", "val",
                 "--out", str(disk / "run"), "-q"])
        lines = stderr_lines(r)
        assert r.returncode == 3, r.stderr
        assert len(lines) == 1 and f"{disk / 'run'}" in lines[0] and "no space left on device" in lines[0], r.stderr
    assert store.read_bytes() == before


# --------------------------------------------------------------------------- corrupted chunks


def _store(tmp_path: Path, n: int = 5000, dim: int = 512) -> Path:
    """Rows r hold r; 512-d float32 rows give chunks of 512 rows, so 10 chunks."""
    out = tmp_path / "s.h5"
    subprocess.run([sys.executable, str(ROOT / "tests" / "slow_writer.py"), str(out), str(n), str(dim), "1000", "0"],
                   check=True, timeout=TIMEOUT)
    return out


def flip_byte(path: Path, dataset: str, chunk: int, at: int = 100) -> tuple[int, int]:
    """XOR one byte inside chunk number ``chunk`` of ``dataset``; returns that chunk's rows [a, b)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        info = ds.id.get_chunk_info(chunk)
        a = info.chunk_offset[0]
        rows = (a, min(a + ds.chunks[0], ds.shape[0]))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + at)
        b = fh.read(1)
        fh.seek(info.byte_offset + at)
        fh.write(bytes([b[0] ^ 0x5A]))
    return rows


def test_flipped_bytes_fail_the_read_and_name_the_rows(tmp_path, capsys):
    store = _store(tmp_path)
    assert all(ds.fletcher32 for ds in [h5py.File(store, "r")["features/fc:in/none"]])
    assert pipeline.main(["info", "--verify", str(store)]) == 0
    assert ": OK: " in capsys.readouterr().out
    a, b = flip_byte(store, "features/fc:in/none", 3)
    assert (a, b) == (1536, 2048)
    with pytest.raises(StoreCorrupted, match=r"s.h5: /features/fc:in/none rows 1536-2047 fail their fletcher32 "
                                             r"checksum .*info --verify"):
        read_rows(store)
    from featcache.store import read_features

    ok_rows = np.arange(0, 1536)  # rows of good chunks still read, right
    np.testing.assert_array_equal(read_features(store, "fc:in/none", ok_rows), slow_writer.values(ok_rows, 512))
    assert pipeline.main(["info", "--verify", str(store)]) == 4
    out, err = capsys.readouterr()
    assert "CORRUPTED" in out and "bad chunk  /features/fc:in/none rows 1536-2047" in out
    assert err.strip().splitlines() == [f"error: {store}: failed verification; extract again with --overwrite "
                                        "to rewrite it"]


def test_a_corrupted_store_stops_classify_with_exit_4(tmp_path, capsys):
    store = _store(tmp_path, n=2000, dim=512)
    flip_byte(store, "features/fc:in/none", 1)
    assert pipeline.main(["classify", "--features", str(store), "--models", "knn-dino", "--select", "val",
                          "--out", str(tmp_path / "run"), "-q"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rows 512-1023 fail their fletcher32 checksum" in err[0], err


def test_stores_written_before_checksums_still_read_and_verify(tmp_path, capsys):
    store = _store(tmp_path, n=1000, dim=8)
    with h5py.File(store, "r+") as f:  # as a store of schema 1 before the filter: same data, no fletcher32
        x = f["features/fc:in/none"][:]
        attrs = dict(f["features/fc:in/none"].attrs)
        del f["features/fc:in/none"]
        ds = f.create_dataset("features/fc:in/none", data=x, chunks=(256, 8))
        ds.attrs.update(attrs)
        assert not ds.fletcher32
    np.testing.assert_array_equal(read_rows(store)["X"], slow_writer.values(np.arange(1000), 8))
    assert pipeline.main(["info", "--verify", str(store)]) == 0
    assert "written before checksums, so only readability and NaN were checked" in capsys.readouterr().out


def test_verify_finds_nan_in_finished_rows_and_a_bad_blob(tmp_path):
    store = _store(tmp_path, n=1000, dim=8)
    with h5py.File(store, "r+") as f:
        f["features/fc:in/none"][7] = np.nan
        f.create_dataset("blobs/net.bin", data=np.frombuffer(b"abc", np.uint8)).attrs["sha256"] = "0" * 64
    report = verify_store(store)
    assert not report.ok and report.nan_rows == {"/features/fc:in/none": 1}
    assert any("blob 'net.bin' does not match its sha256" in p for p in report.problems)


# --------------------------------------------------------------------------- a store read while written


def test_a_store_being_written_is_read_with_allow_partial_and_never_blocks_the_writer(tmp_path, capsys):
    out = tmp_path / "s.h5"
    n, dim = 6000, 64
    writer = subprocess.Popen([sys.executable, str(ROOT / "tests" / "slow_writer.py"), str(out), str(n), str(dim),
                               "60", "0.01"], stderr=subprocess.PIPE, text=True)
    seen, reads = [], 0
    try:
        deadline = time.monotonic() + TIMEOUT
        while not partial_path(out).exists():
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(StoreError, match=r"s.h5: only an incomplete store exists \(s.h5.partial\); rerun the "
                                             r"extraction to finish it, or pass --allow-partial"):
            read_rows(out)
        while writer.poll() is None:
            data = read_rows(out, allow_partial=True)
            rows = np.char.replace(data["paths"].astype(str), "img", "")
            rows = np.char.replace(rows, ".jpg", "").astype(int)
            np.testing.assert_array_equal(data["X"], slow_writer.values(rows, dim))  # every row read is right
            seen.append(len(rows))
            reads += 1
    finally:
        assert writer.wait(timeout=TIMEOUT) == 0, writer.stderr.read()  # the writer finished, unblocked
    assert reads >= 5 and seen == sorted(seen) and 0 < seen[0] < n, seen
    assert out.exists() and verify_store(out).ok
    assert len(read_rows(out)["X"]) == n


def test_classify_refuses_a_partial_store_unless_asked(make_store, tmp_path, capsys):
    store = make_store(20, 3, 16, finish=False)
    assert pipeline.main(["classify", "--features", str(store), "--models", "knn-dino", "--select", "val",
                          "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only an incomplete store exists" in err[0] and "--allow-partial" in err[0], err
    assert pipeline.main(["classify", "--features", str(store), "--models", "knn-dino", "--select", "val",
                          "--allow-partial", "--out", str(tmp_path / "run"), "-q"]) == 0


# --------------------------------------------------------------------------- memory


def test_a_store_that_cannot_fit_in_memory_is_refused_in_one_line(tmp_path):
    """Under an address-space limit 150 MB above what the process maps, a 123 MB feature set (246 MB
    read and copied to float32) is refused before it is read, with exit 5."""
    store = _store(tmp_path, n=60000, dim=512)
    limit = textwrap.dedent("""
        import resource
        import classify.job, classify.cli, sklearn.linear_model, torch  # what classify imports, mapped first
        vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 150 * 2**20, resource.RLIM_INFINITY))
    """)
    r = run(["classify", "--features", str(store), "--models", "knn-dino", "--select", "val", "--out",
             str(tmp_path / "run"), "-q"], script=limit)
    lines = stderr_lines(r)
    assert r.returncode == 5, r.stderr
    assert len(lines) == 1 and f"error: {store}: fc:in/none needs about 245.8 MB of memory (60000 rows x 512 " \
                                "values" in lines[0] and "the address-space limit (ulimit -v) leaves" in lines[0], \
        r.stderr


def test_available_memory_reads_the_address_space_limit():
    from classify.memory import available_bytes

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    free, what = available_bytes()
    assert free is not None and free > 0 and what
    if soft == resource.RLIM_INFINITY:
        assert what != "the address-space limit (ulimit -v)"


def test_a_bare_memory_error_is_one_line_and_exit_5(monkeypatch, capsys):
    import extract.cli

    def fails(args):
        raise MemoryError()

    monkeypatch.setattr(extract.cli, "main_info", fails)
    assert pipeline.main(["info", "s.h5"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: out of memory during `info` (MemoryError); use a smaller feature set or a machine with "
                   "more memory"]


def test_a_full_disk_in_the_converted_network_cache_costs_only_time(tmp_path, monkeypatch, caplog):
    """OpenVINO's converter reports a full disk as a RuntimeError; the cache is skipped, not the job."""
    from extract import modelcache

    monkeypatch.setenv("FEATCACHE_HOME", str(tmp_path / "home"))

    def write(folder: Path) -> None:
        (folder / "model.xml").write_bytes(b"<net/>")
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp: No space left on device")

    assert modelcache.save_network("lite0", "k" * 40, write, {}) is None
    assert "model cache: cannot write" in caplog.text and "No space left on device" in caplog.text
    assert not any((tmp_path / "home" / "openvino").iterdir())  # the half-written entry is gone


def test_a_live_writer_is_seen_through_its_lock_without_taking_it(tmp_path):
    """A torn read is retried for as long as the writer holds the store's lock (a starved writer may
    not touch the file for seconds); the check reads /proc/locks, so a starting writer never fails."""
    from featcache.store.read import _writer_holds_lock
    from featcache.store.write import write_lock

    out = tmp_path / "s.h5"
    assert not _writer_holds_lock(partial_path(out))
    with write_lock(out):
        assert _writer_holds_lock(partial_path(out)) and _writer_holds_lock(out)
        with write_lock(tmp_path / "other.h5"):  # another store's lock is not this one's
            pass
    assert not _writer_holds_lock(out)
