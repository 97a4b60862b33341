"""Reliability: kills and Ctrl-C with resume, concurrent writers, corrupt stores, bad arguments, unsafe input.

Every check of the CLI runs ``pipeline.py`` in a separate process. A fresh interpreter
pays ~4 s of imports (torch, torchvision, every stage's CLI module), so:
- kills, Ctrl-C, the second writer and ``info`` start ``python pipeline.py ...`` for real;
- the ~30 bad-argument runs are forked, two at a time, from one process that imported
  all that once (tests/cli_zygote.py), each running ``pipeline.py`` as ``__main__``.
When the module starts, a background pool begins the reference extraction and that batch
of bad-argument runs; they overlap with the interruption tests, which mostly wait.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featcache.store import FeatureSpec, Manifest, StoreError, open_for_write, partial_path, write_lock
from tests.samples import copy_sample

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
PIPELINE = [sys.executable, str(ROOT / "pipeline.py")]
N_IMAGES = 25  # 24 sample photos and one broken file
TIMEOUT = 180  # seconds; a run that takes longer has hung
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # several runs share the cores: no oversubscribed thread pools


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([*PIPELINE, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def extract_args(data: Path, out: Path, workers: int = 0, loader: str = "auto") -> list[str]:
    return ["extract", "--data", str(data), "--backbone", "efficientnet_lite0", "--out", str(out),
            "--batch-size", "2", "--workers", str(workers), "--loader", loader]


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (exit 2)."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, f"exit {r.returncode}, stderr:\n{r.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    return lines[0]


def make_images(root: Path) -> Path:
    """24 sample photos in train/ and val/ class folders, plus one broken file (so the error table is not empty)."""
    return copy_sample(root, 6, broken="train/bees/zz_broken.jpg")


def small_store(path: Path, n: int = 6) -> Path:
    """A small finished store written through the store API (no torch)."""
    feat = FeatureSpec("fc", "input", "none", 3)
    m = Manifest("/data", [f"img{i}.jpg" for i in range(n)], np.zeros(n, np.int64), ["train"] * n, ["a"], "fp")
    with write_lock(path):
        w = open_for_write(path, m, [feat], cache_key="k", spec={"backbone": "k"}, provenance={},
                           default_feature=feat.key)
        w.write(np.arange(n), {feat.key: np.ones((n, 3), "f4")})
        w.finish()
    return path


class Evil:
    """Unpickling this runs os.mkdir(path): stands for any code a malicious checkpoint would run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def bad_cases(d: Path, images: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (extract options that override the good ones, substrings the error line must hold)."""
    import torch

    ants = sorted((images / "train" / "ants").glob("*.jpg"))
    (d / "csv").mkdir()
    a, b = ants[0].name, ants[1].name
    for f in ants[:2]:
        shutil.copy(f, d / "csv" / f.name)
    shutil.copy(ants[2], d / "outside.jpg")
    for sub in ("train/ants", "val/wasps"):  # a val class that train lacks
        (d / "wasps" / sub).mkdir(parents=True)
        shutil.copy(ants[0], d / "wasps" / sub / a)
    (d / "empty").mkdir()
    (d / "somefile.txt").write_text("a file, not a folder")
    (d / "notes.pth").write_text("not a checkpoint")
    torch.save({"weight": Evil(d / "pwned")}, d / "evil.pt")
    (d / "corrupt.h5").write_bytes(b"this is not an HDF5 file")
    truncated = small_store(d / "truncated.h5")
    truncated.write_bytes(truncated.read_bytes()[:1000])

    def csv(name: str, text: str) -> str:
        (d / "csv" / name).write_text(text)
        return str(d / "csv" / name)

    cases = {
        "unknown_backbone": (["--backbone", "resnet5O"], ["resnet5O", "closest: resnet50"]),
        "unknown_layer": (["--layers", "_blocks.99"], ["_blocks.99", "_blocks.9"]),
        "unknown_pool": (["--pools", "avg,bogus"], ["--pools avg,bogus: unknown 'bogus'", "avgmax"]),
        "missing_data_dir": (["--data", d / "missing"], ["missing", "no such directory"]),
        "empty_data_dir": (["--data", d / "empty"], ["empty", "no images"]),
        "csv_missing_file": (["--data", csv("missing.csv", f"path,label\n{a},ants\nnope.jpg,bees\n")],
                             ["missing.csv:3", "nope.jpg"]),
        "csv_unknown_column": (["--data", csv("cols.csv", f"path,label,weight\n{a},ants,1\n")],
                               ["cols.csv", "weight"]),
        "csv_empty_label": (["--data", csv("nolabel.csv", f"path,label\n{a},ants\n{b},\n")],
                            ["nolabel.csv:3", "empty label"]),
        "csv_duplicate_path": (["--data", csv("dup.csv", f"path,label\n{a},ants\n./{a},bees\n")],
                               ["dup.csv:3", "duplicate", a]),
        "csv_class_not_in_train": (["--data", csv("split.csv", f"path,label,split\n{a},ants,train\n{b},wasps,val\n")],
                                   ["split.csv", "wasps"]),
        "folder_class_not_in_train": (["--data", d / "wasps"], ["wasps", "train/"]),
        "out_under_a_file": (["--out", d / "somefile.txt" / "x.h5"], ["somefile.txt"]),
        "out_in_proc": (["--out", "/proc/featcache-test.h5"], ["/proc/featcache-test.h5"]),
        "out_is_a_directory": (["--out", d / "empty"], [str(d / "empty"), "directory"]),
        "out_not_hdf5": (["--out", d / "corrupt.h5"], ["corrupt.h5", "--overwrite"]),
        "out_truncated_store": (["--out", truncated], ["truncated.h5", "--overwrite"]),
        "batch_size_0": (["--batch-size", "0"], ["--batch-size 0"]),
        "workers_negative": (["--workers", "-1"], ["--workers -1"]),
        "max_pixels_negative": (["--max-pixels", "-5"], ["--max-pixels -5"]),
        "device_unknown": (["--device", "tpu"], ["--device 'tpu'", "cuda:N"]),
        "device_cuda": (["--device", "cuda"], ["--device cuda"]),
        "device_cuda_index": (["--device", "cuda:7"], ["--device cuda:7"]),
        "device_mps": (["--device", "mps"], ["--device mps"]),
        "weights_missing_file": (["--weights", d / "nope.pth"], ["nope.pth", "no such file"]),
        "weights_not_a_checkpoint": (["--weights", d / "notes.pth"], ["notes.pth"]),
        "weights_pickled_code": (["--weights", d / "evil.pt"], ["evil.pt"]),
        "csv_path_escapes_root": (["--data", csv("escape.csv", "path,label\n../outside.jpg,ants\n")],
                                  ["escape.csv:2", "../outside.jpg", "--allow-outside-root"]),
        "csv_absolute_path": (["--data", csv("absolute.csv", f"path,label\n{d / 'outside.jpg'},ants\n")],
                              ["absolute.csv:2", str(d / "outside.jpg"), "--allow-outside-root"]),
    }
    if torch.cuda.is_available():
        del cases["device_cuda"]
    if torch.cuda.device_count() > 7:
        del cases["device_cuda_index"]
    if torch.backends.mps.is_available():
        del cases["device_mps"]
    if not Path("/proc/self").is_dir():
        del cases["out_in_proc"]
    return {name: ([str(x) for x in opts], expect) for name, (opts, expect) in cases.items()}


BAD_CASE_NAMES = [
    "unknown_backbone", "unknown_layer", "unknown_pool", "missing_data_dir", "empty_data_dir", "csv_missing_file",
    "csv_unknown_column", "csv_empty_label", "csv_duplicate_path", "csv_class_not_in_train",
    "folder_class_not_in_train", "out_under_a_file", "out_in_proc", "out_is_a_directory", "out_not_hdf5",
    "out_truncated_store", "batch_size_0", "workers_negative", "max_pixels_negative", "device_unknown",
    "device_cuda", "device_cuda_index", "device_mps", "weights_missing_file", "weights_not_a_checkpoint",
    "weights_pickled_code", "csv_path_escapes_root", "csv_absolute_path",
]


def run_many(cases: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    """``python pipeline.py ARGS`` for each case, as processes forked after one import (tests/cli_zygote.py)."""
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "cli_zygote.py")], input=json.dumps(cases),
                       capture_output=True, text=True, timeout=TIMEOUT * 2, env=ENV)
    assert r.returncode == 0, r.stderr
    return {name: subprocess.CompletedProcess(cases[name], v["returncode"], v["stdout"], v["stderr"])
            for name, v in json.loads(r.stdout).items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module", autouse=True)
def background(request, images, tmp_path_factory):
    """As the module starts, begin the reference run and the selected CLI-only cases in the background."""
    module_tests = [i for i in request.session.items if getattr(i, "module", None) is request.module]
    wanted = {i.callspec.params["case"] for i in module_tests if i.originalname == "test_bad_argument"}
    jobs: dict[str, object] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        if any("reference" in i.fixturenames for i in module_tests):
            out = tmp_path_factory.mktemp("reference") / "ref.h5"
            jobs["reference"] = (pool.submit(run, *extract_args(images, out)), out)
        d = tmp_path_factory.mktemp("cli")
        cases, argv = (bad_cases(d, images) if wanted else {}), {}
        store = small_store(d / "existing.h5")  # a finished store at --out: a refused run must leave it alone
        for name in sorted(wanted & set(cases)):
            out = d / f"{name}.h5"
            shutil.copy(store, out)
            argv[name] = [*extract_args(images, out), *cases[name][0]]  # argparse: a later option wins
        if any(i.originalname == "test_outside_root_accepted_with_flag" for i in module_tests):
            (d / "csv").mkdir(exist_ok=True)
            shutil.copy(next((images / "train" / "ants").glob("*.jpg")), d / "outside_ok.jpg")
            (d / "csv" / "allowed.csv").write_text("path,label\n../outside_ok.jpg,ants\n")
            argv["outside_allowed"] = [*extract_args(d / "csv" / "allowed.csv", d / "allowed.h5"),
                                       "--allow-outside-root"]
        jobs.update(dir=d, cases=cases, before=store.read_bytes())
        jobs["cli"] = pool.submit(run_many, argv) if argv else None
        yield jobs
        pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def reference(background) -> Path:
    """The store an uninterrupted run of the same command writes."""
    fut, out = background["reference"]
    r = fut.result(timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return out


def store_content(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {
            "complete": bool(f.attrs["complete"]), "cache_key": str(f.attrs["cache_key"]),
            "paths": list(f["paths"].asstr()[:]), "labels": f["labels"][:].tolist(),
            "split": list(f["split"].asstr()[:]), "done": f["done"][:], "ok": f["ok"][:],
            "errors": [(int(r), m.decode()) for r, m in f["errors"][:]],
            "features": {f"{layer}/{pool}": ds[:] for layer, g in f["features"].items() for pool, ds in g.items()},
        }


def assert_same_store(expected: Path, got: Path) -> None:
    """Same rows in the same order, every row written once, features within 1e-5, same error table."""
    a, b = store_content(expected), store_content(got)
    assert b["complete"] and b["done"].all()
    for key in ("cache_key", "paths", "labels", "split"):
        assert a[key] == b[key], key
    assert np.array_equal(a["ok"], b["ok"])
    assert b["errors"] == a["errors"] and len({r for r, _ in b["errors"]}) == len(b["errors"])
    assert a["features"].keys() == b["features"].keys()
    for key, x in a["features"].items():
        np.testing.assert_allclose(b["features"][key], x, rtol=0, atol=1e-5, err_msg=key)  # NaN rows must match


def done_rows(partial: Path) -> int:
    """Rows flushed so far, read without HDF5's file lock (the writer holds it); 0 while unreadable."""
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return int(f["done"][:].sum())
    except Exception:  # noqa: BLE001 - not created yet, or caught mid-flush: poll again
        return 0


def start_and_freeze(args: list[str], out: Path, min_rows: int = 2) -> subprocess.Popen:
    """Start an extraction, wait until ``min_rows`` rows are flushed, then SIGSTOP it and its workers.

    Freezing makes the test deterministic: whatever signal comes next finds the job mid-run.
    """
    proc = subprocess.Popen([*PIPELINE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)  # its own process group, like a shell job
    deadline = time.monotonic() + TIMEOUT
    while done_rows(partial_path(out)) < min_rows:
        if proc.poll() is not None:
            pytest.fail(f"extract ended (exit {proc.returncode}) before {min_rows} rows were flushed: "
                        f"{proc.communicate()[1]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no rows flushed in time")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGSTOP)
    assert not out.exists(), "the job finished before it could be interrupted"
    return proc


# --------------------------------------------------------------------------- kill, Ctrl-C, resume


@pytest.mark.parametrize("sig,workers,loader", [("SIGKILL", 0, "auto"), ("SIGINT", 0, "auto"),
                                               ("SIGINT", 1, "process"), ("SIGINT", 1, "thread"),
                                               ("SIGINT", 2, "inline")])
def test_interrupt_then_resume_is_identical(images, reference, tmp_path, sig, workers, loader):
    """Kill or Ctrl-C (to the whole process group, as a terminal sends it) mid-run, rerun: same store."""
    out = tmp_path / "f.h5"
    args = extract_args(images, out, workers, loader)
    proc = start_and_freeze(args, out)
    os.killpg(proc.pid, getattr(signal, sig))
    os.killpg(proc.pid, signal.SIGCONT)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{sig} with {workers} {loader} workers: the process hung")
    if sig == "SIGINT":
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr and stderr.count("interrupted") == 1, stderr
        last = stderr.strip().splitlines()[-1]  # pipeline.main's one line: "interrupted: ... rerun ..."
        assert last.startswith("interrupted:") and "rerun" in last, stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and partial_path(out).exists()
    kept = done_rows(partial_path(out))  # 0 only where a kill caught HDF5 mid-flush: the rerun starts over
    assert 2 <= kept < N_IMAGES or kept == 0 and sig == "SIGKILL"

    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert (f"resumed {N_IMAGES - kept} rows of {N_IMAGES}" if kept else f"wrote {N_IMAGES} rows") in r.stdout
    assert not partial_path(out).exists() and not Path(f"{out}.lock").exists()
    assert_same_store(reference, out)


def test_ctrl_c_stops_at_a_batch_boundary(images, tmp_path, monkeypatch):
    """A Ctrl-C that lands inside a batch write lets that batch finish, then stops (deterministic, in-process)."""
    from extract.runner import ExtractConfig, extract
    from featcache import store

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler in this test process")
    real_write, calls = store.StoreWriter.write, []

    def write_with_ctrl_c(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # delivered before the write below runs
        return real_write(self, *a, **k)

    monkeypatch.setattr(store.StoreWriter, "write", write_with_ctrl_c)
    out = tmp_path / "f.h5"
    with pytest.raises(KeyboardInterrupt):
        extract(ExtractConfig(data=str(images / "val" / "ants"), backbone="efficientnet_lite0", out=str(out),
                              batch_size=2, workers=0, progress=False))  # 6 images, 3 batches
    assert len(calls) == 2 and done_rows(partial_path(out)) == 4  # the interrupted batch was written whole
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_second_writer_waits_for_a_frozen_first_then_reuses_its_store(images, reference, tmp_path):
    """A second extract to a store mid-write waits (it neither fails nor touches the partial file);
    once the first finishes, the second finds the store a hit and both exit 0."""
    out = tmp_path / "f.h5"
    args = extract_args(images, out)
    first = start_and_freeze(args, out)  # holds the lock, frozen mid-run
    log = tmp_path / "second.err"
    try:
        with open(log, "w") as err:
            second = subprocess.Popen([*PIPELINE, *args], stdout=subprocess.PIPE, stderr=err, text=True, env=ENV)
        partial_before = partial_path(out).stat().st_mtime_ns
        deadline = time.monotonic() + TIMEOUT
        while "another process is writing this store; waiting for it" not in log.read_text():
            assert second.poll() is None, f"the second writer ended (exit {second.returncode}): {log.read_text()}"
            assert time.monotonic() < deadline, "the second writer never said it was waiting"
            time.sleep(0.1)
        time.sleep(0.5)  # it is blocked now: nothing of the first job's may change
        assert second.poll() is None and not out.exists()
        assert partial_path(out).stat().st_mtime_ns == partial_before
        assert Path(f"{out}.lock").exists(), "the waiting writer removed the lock the first one holds"
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0, stderr
    stdout, _ = second.communicate(timeout=TIMEOUT)
    assert second.returncode == 0, log.read_text()
    assert "cache hit" in stdout, stdout
    assert_same_store(reference, out)
    assert not Path(f"{out}.lock").exists()


def test_refused_lock_attempt_leaves_the_lock_in_place(tmp_path):
    out = tmp_path / "s.h5"
    with write_lock(out):
        for _ in range(2):  # the second try must fail as the first did
            with pytest.raises(StoreError, match="another process"):
                with write_lock(out):
                    pass
    with write_lock(out):  # released on exit
        pass
    assert not Path(f"{out}.lock").exists()


# --------------------------------------------------------------------------- corrupt stores


@pytest.mark.parametrize("kind", ["truncated", "not_hdf5", "empty", "directory"])
def test_info_on_a_broken_store(tmp_path, kind):
    path = tmp_path / "s.h5"
    if kind == "truncated":
        small_store(path)
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "not_hdf5":
        path.write_text("id,label\n1,ants\n")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.mkdir()
    before = path.read_bytes() if path.is_file() else None
    line = one_line_error(run("info", path, timeout=60))
    assert str(path) in line
    assert (path.read_bytes() if path.is_file() else None) == before


# --------------------------------------------------------------------------- crash consistency of one batch


def test_kill_at_any_point_of_a_batch_write(tmp_path):
    """Die (os._exit, like SIGKILL) before each HDF5 call of one batch write: rows marked done are always
    right, and a resume ends in the same store as an uninterrupted write."""
    from tests import crash_writer as cw

    ref = tmp_path / "ref.h5"
    w = cw.open_store(ref)
    w.write(np.arange(cw.N_ROWS), cw.features(np.arange(cw.N_ROWS), cw.BAD), errors=dict(cw.BAD))
    w.finish()
    helper = str(ROOT / "tests" / "crash_writer.py")
    n_calls = int(subprocess.run([sys.executable, helper, str(tmp_path / "probe.h5"), "1000"], capture_output=True,
                                 text=True, check=True).stdout)
    for k in range(n_calls + 1):
        out = tmp_path / f"k{k}.h5"
        r = subprocess.run([sys.executable, helper, str(out), str(k)], capture_output=True, text=True)
        assert r.returncode == (137 if k < n_calls else 0), r.stderr
        with h5py.File(partial_path(out), "r") as f:
            done, ok = f["done"][:], f["ok"][:]
            errors = {int(r): m.decode() for r, m in f["errors"][:]}
            feats = {key: f[f"features/{key}"][:] for key in cw.features(np.arange(1))}
        expected = cw.features(np.arange(cw.N_ROWS), cw.BAD)
        for row in np.flatnonzero(done):
            for key, x in feats.items():
                np.testing.assert_array_equal(x[row], expected[key][row], err_msg=f"k={k} row {row} {key}")
            assert ok[row] == (row not in cw.BAD) and errors.get(row) == cw.BAD.get(row), f"k={k} row {row}"
        w = cw.open_store(out)
        assert w.status == "resume"
        rest = w.pending
        bad = {r: m for r, m in cw.BAD.items() if r in rest}
        if len(rest):
            w.write(rest, cw.features(rest, bad), errors=bad)
        w.finish()
        assert_same_store(ref, out)


# --------------------------------------------------------------------------- property: interrupt/resume == one write

P_FEATS = [FeatureSpec("fc", "input", "none", 3), FeatureSpec("layer4", "output", "avg", 17_000)]  # 16-row chunks


def _p_features(rows: np.ndarray, bad: set[int]) -> dict[str, np.ndarray]:
    out = {}
    for j, f in enumerate(P_FEATS):
        v = (np.asarray(rows, "f4")[:, None] * 10 + j + np.arange(f.dim, dtype="f4")[None, :] / f.dim)
        v[np.isin(rows, list(bad))] = np.nan
        out[f.key] = v
    return out


def _p_write(w, rows: np.ndarray, bad: set[int]) -> None:
    """One batch as the runner writes it: unreadable rows are NaN, a batch of only those writes no features."""
    errors = {int(r): f"cannot read row {r}" for r in rows if r in bad}
    feats = {} if len(errors) == len(rows) else _p_features(rows, bad)
    w.write(rows, feats, errors)


@contextmanager
def _interrupt_at_hdf5_call(k: int):
    """Raise KeyboardInterrupt instead of the k-th HDF5 write, resize or flush (a Ctrl-C landing there)."""
    calls = [0]

    def wrap(method):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                raise KeyboardInterrupt
            return method(*args, **kwargs)
        return wrapped

    with mock.patch.object(h5py.Dataset, "__setitem__", wrap(h5py.Dataset.__setitem__)), \
            mock.patch.object(h5py.Dataset, "resize", wrap(h5py.Dataset.resize)), \
            mock.patch.object(h5py.File, "flush", wrap(h5py.File.flush)):
        yield


def _p_open(path: Path, n: int):
    m = Manifest("/data", [f"img{i}.jpg" for i in range(n)], np.arange(n) % 2, ["train"] * n, ["a", "b"], "fp")
    return open_for_write(path, m, P_FEATS, cache_key="p", spec={"backbone": "p"}, provenance={},
                          default_feature=P_FEATS[0].key)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_interrupted_writes_and_resumes_equal_one_write(data):
    n = data.draw(st.integers(1, 40), label="rows")
    bad = data.draw(st.sets(st.integers(0, n - 1)), label="unreadable rows")
    with tempfile.TemporaryDirectory() as d:
        ref, out = Path(d) / "ref.h5", Path(d) / "out.h5"
        with write_lock(ref):
            w = _p_open(ref, n)
            _p_write(w, np.arange(n), bad)
            w.finish()
        with write_lock(out):
            w = _p_open(out, n)
            pending = set(range(n))  # what the writer has not yet been given
            for _ in range(data.draw(st.integers(0, 8), label="steps")):
                if not pending:
                    break
                action = data.draw(st.sampled_from(["write", "interrupt", "interrupt_mid_write"]), label="action")
                if action == "interrupt":  # close without finishing, then resume
                    w.close()
                    w = _p_open(out, n)
                    assert w.status == "resume" and set(w.pending.tolist()) == pending
                    continue
                order = data.draw(st.permutations(sorted(pending)), label="order")
                rows = np.array(order[: data.draw(st.integers(1, len(order)), label="batch size")])
                if action == "write":
                    _p_write(w, rows, bad)
                    pending -= set(rows.tolist())
                    continue
                with _interrupt_at_hdf5_call(data.draw(st.integers(1, 8), label="interrupted call")):
                    try:
                        _p_write(w, rows, bad)
                    except KeyboardInterrupt:
                        pass
                w.close()
                w = _p_open(out, n)
                assert w.status == "resume"
                assert set(w.pending.tolist()) in (pending, pending - set(rows.tolist()))  # a batch is all or nothing
                pending = set(w.pending.tolist())
            w.close()
            w = _p_open(out, n)  # the final resume writes what is left
            if len(w.pending):
                _p_write(w, w.pending, bad)
            w.finish()
        a, b = store_content(ref), store_content(out)
        assert b["complete"] and b["done"].all()
        assert np.array_equal(a["ok"], b["ok"])
        assert sorted(b["errors"]) == sorted(a["errors"])  # the same set, and no row recorded twice
        for key, x in a["features"].items():
            np.testing.assert_array_equal(b["features"][key], x, err_msg=key)


# --------------------------------------------------------------------------- bad arguments: one line, exit 2


@pytest.mark.parametrize("case", BAD_CASE_NAMES)
def test_bad_argument(case, background):
    """``pipeline.py extract`` with one bad option: exit 2, one stderr line naming the culprit, nothing written."""
    if case not in background["cases"]:
        pytest.skip(f"{case} does not apply on this machine")
    r = background["cli"].result(timeout=TIMEOUT * 2)[case]
    line = one_line_error(r)
    for text in background["cases"][case][1]:
        assert text in line, f"{text!r} not in {line!r}"
    d = background["dir"]
    assert (d / f"{case}.h5").read_bytes() == background["before"]  # the store already at --out
    assert not list(d.rglob("*.partial")) and not list(d.rglob("*.lock"))
    assert (d / "corrupt.h5").read_bytes() == b"this is not an HDF5 file"  # culprits are left as they were
    assert (d / "truncated.h5").stat().st_size == 1000
    if case == "weights_pickled_code":
        assert not (d / "pwned").exists(), "loading the weights file ran the code pickled in it"


# --------------------------------------------------------------------------- unsafe input


def test_pickled_code_payload_is_live(tmp_path):
    """weights_pickled_code means something: the same file loaded without weights_only runs its code."""
    import torch

    from extract.backbones import BackboneError, load_state_dict_file

    torch.save({"weight": Evil(tmp_path / "pwned")}, tmp_path / "evil.pt")
    with pytest.raises(BackboneError, match="evil.pt"):
        load_state_dict_file(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert (tmp_path / "pwned").is_dir()


def test_outside_root_accepted_with_flag(background):
    """The refusals csv_path_escapes_root and csv_absolute_path lift with --allow-outside-root."""
    from featcache.store import read_rows

    r = background["cli"].result(timeout=TIMEOUT * 2)["outside_allowed"]
    assert r.returncode == 0, r.stderr
    rows = read_rows(background["dir"] / "allowed.h5")
    assert len(rows["X"]) == 1
    assert Path(rows["paths"][0]).resolve() == (background["dir"] / "outside_ok.jpg").resolve()
