"""The classify stage as a library: ``compare`` on a store or on arrays, in memory, and the
:class:`~classify.leaderboard.Leaderboard` it returns."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from classify.api import compare
from classify.job import run_classify
from classify.leaderboard import Leaderboard
from featcache.common.errors import BadInput
from featcache.store import read_index

ROOT = Path(__file__).resolve().parents[1]
FAST = "logreg,knn,knn-dino"


@pytest.fixture
def store(make_store):
    return make_store({"train": 12, "val": 6, "test": 5}, 3, 8, splits=("train", "val", "test"), spread=2.5)


def _store_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(X, y, splits, class names) of a store's rows, in row order."""
    from featcache.store import read_features, read_info, resolve_feature

    info = read_info(path)
    index = read_index(path)
    X = read_features(path, resolve_feature(info, None), index["rows"], False)
    return np.asarray(X, np.float32), index["y"], index["split"].astype(str), list(info.class_names)


def _key(rows) -> list[tuple]:  # noqa: ANN001
    """What a row says, timings and file paths aside."""
    return [(r.model, r.rank, r.tied, r.val["accuracy"], r.val["log_loss"], (r.test or {}).get("accuracy"),
             (r.cv or {}).get("mean"), tuple((r.cv or {}).get("scores") or ()), tuple(sorted(r.params.items())))
            for r in rows]


def test_compare_on_arrays_gives_the_rows_the_cli_gives_on_their_store(store, tmp_path):
    X, y, splits, names = _store_arrays(store)
    board = compare(X, np.array(names)[y], splits=splits, models=FAST, select="cv")
    cli = run_classify(store, out_dir=tmp_path / "cli", models=FAST, select="cv", few_shot=False)
    assert isinstance(board, Leaderboard) and len(board) == 3
    assert _key(board.rows) == _key(cli.rows)
    assert board.rows[0].fitted is not None and board.best is board.rows[0].fitted.estimator
    assert board.best.predict(X[:4]).shape == (4,) and board.best.predict_proba(X[:4]).shape == (4, 3)
    assert board.meta["class_names"] == names  # string labels kept as the class names


def test_compare_writes_nothing(store, tmp_path, monkeypatch):
    """An audit hook sees no file opened for writing, no folder made, nothing renamed or removed."""
    X, y, splits, _ = _store_arrays(store)
    compare(X, y, splits=splits, models="logreg,knn-dino", select="cv", jobs=1)  # imports before the hook watches
    seen: list[tuple] = []
    watching = [True]

    def hook(event: str, args: tuple) -> None:
        if not watching[0]:
            return
        if event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
            seen.append((event, args[0], args[1]))
        elif event == "open" and len(args) > 2 and isinstance(args[2], int) and args[2] & 0o3:  # os.open flags
            seen.append((event, args[0], args[2]))
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink",
                       "shutil.rmtree", "os.truncate"):
            seen.append((event, *args[:2]))

    sys.addaudithook(hook)
    try:
        arrays = compare(X, y, splits=splits, models="logreg,knn-dino", select="cv", jobs=1)
        stored = compare(store, models="knn-dino", select="cv", jobs=1)
    finally:
        watching[0] = False
    assert not seen, seen
    assert len(arrays) == 2 and len(stored) == 1 and stored.rows[0].model_path is None


@pytest.mark.slow
def test_save_writes_what_classify_out_writes(store, tmp_path):
    board = compare(store, models="logreg,knn-dino", select="cv")
    out = board.save(tmp_path / "saved")
    cli = tmp_path / "cli"
    run_classify(store, out_dir=cli, models="logreg,knn-dino", select="cv", few_shot=False)
    names = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert [n for n in names(out) if not n.startswith(".")] == [
        n for n in names(cli) if not n.startswith("finished/") and not n.startswith(".")]
    reread = Leaderboard.load(out)
    assert _key(reread.rows) == _key(board.rows)


@pytest.mark.slow
def test_to_pandas_equals_leaderboard_csv(tmp_path):
    from featcache.driver.config import resolve
    from featcache.driver.run import run
    from featcache.report import build_report

    data = ROOT / "data" / "sample"
    cfg = resolve({}, {"data": str(data), "out": str(tmp_path / "run"), "backbones": ["efficientnet_lite0"],
                       "audit": False, "few_shot": False})
    board = run(cfg, progress=False)
    paths = build_report(board)
    import pandas as pd

    frame = board.to_pandas()
    from_csv = pd.read_csv(paths["leaderboard_csv"])
    assert list(frame.columns) == list(from_csv.columns) and len(frame) == len(from_csv) >= 3
    as_read = frame.replace("", None)  # a CSV cannot tell an empty string from a missing value
    pd.testing.assert_frame_equal(as_read.astype(object).where(as_read.notna(), None).reset_index(drop=True),
                                  from_csv.astype(object).where(from_csv.notna(), None), check_dtype=False)
    with open(paths["leaderboard_csv"]) as f:
        assert [r["model"] for r in csv.DictReader(f)] == [r.model for r in board.rows]
    assert "<table" in board._repr_html_() and "logreg" in board._repr_html_()


@pytest.mark.parametrize("make_args, match", [
    (lambda X, y, s: (X[:, 0], y), "2-D"),
    (lambda X, y, s: (X[:, :, None], y), "2-D"),
    (lambda X, y, s: (np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), y), "NaN or infinite"),
    (lambda X, y, s: (X, y[:-1]), "one label per row"),
    (lambda X, y, s: (X, np.zeros_like(y)), "one class"),
    (lambda X, y, s: (X, y, s[:-1]), "splits has shape"),
    (lambda X, y, s: (X, y, np.where(s == "val", "dev", s)), "'dev'"),
])
def test_bad_arrays_are_one_clear_error_before_any_fit(store, make_args, match):
    X, y, splits, _ = _store_arrays(store)
    args = make_args(X, y, splits)
    with pytest.raises(BadInput, match=match):
        compare(args[0], args[1], splits=args[2] if len(args) > 2 else splits, models="logreg")


def test_bad_calls_name_the_argument(store):
    X, y, splits, _ = _store_arrays(store)
    with pytest.raises(BadInput, match="models="):
        compare(store, ["logreg", "knn"])  # the old call: a list of models where y now stands
    with pytest.raises(BadInput, match="unknown model 'logrge'"):
        compare(X, y, splits=splits, models="logrge")
    with pytest.raises(BadInput, match="unknown option colour="):
        compare(X, y, colour="red")
    one = np.array([0] * 10 + [1])  # class 1 has one row: no stratified val holdout for it
    with pytest.raises(BadInput, match="class '1' has fewer than 2 train rows"):
        compare(np.random.default_rng(0).normal(size=(11, 4)), one)


def test_arrays_without_splits_hold_out_val_and_keep_string_labels():
    rng = np.random.default_rng(0)
    y = np.repeat(["cat", "dog"], 20)
    X = rng.normal(size=(40, 6)) + (y == "dog")[:, None] * 3.0
    board = compare(X, y, models="logreg")
    assert board.meta["val_source"] == "holdout from train" and board.meta["counts"] == {"train": 32, "val": 8, "test": 0}
    assert board.meta["class_names"] == ["cat", "dog"] and board.rows[0].val["accuracy"] == 1.0
    assert set(board.best.predict(X[:3]).tolist()) <= {0, 1}


@pytest.mark.slow
def test_featcache_exports_the_api_lazily():
    import subprocess

    code = ("import sys, featcache; assert 'torch' not in sys.modules and 'sklearn' not in sys.modules; "
            "from featcache import compare, extract_features, Leaderboard; import classify.api, extract.api; "
            "assert compare is classify.api.compare and extract_features is extract.api.extract_features")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-800:]
