"""The Python API examples of README.md and docs/api.md run as written (on the bundled sample, in a
scratch dir), and print and write what they say. tests/test_docs.py runs every other example."""

import importlib.util
import os
from pathlib import Path

import pytest

from tests.test_docs import blocks

ROOT = Path(__file__).resolve().parents[1]


def api_example(page: str) -> str:
    """The page's Python block marked ``<!-- example: test=test_api -->`` (one per page)."""
    (block,) = [b for b in blocks(ROOT / page) if b.test == "test_api"]
    assert block.lang == "python"
    return block.code


def run_example(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    if importlib.util.find_spec("featcache") is None:
        pytest.skip(f"{page}'s Python API example imports featcache, which does not import here yet")
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(api_example(page), f"{page} (Python API)", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path, monkeypatch):
    ns = run_example("README.md", tmp_path, monkeypatch)
    assert (ns["summary"].status, ns["summary"].rows) == ("new", 131)
    board = ns["board"]
    assert board.best.predict(ns["X_new"]).shape == (4,)
    assert len(board.to_pandas()) == len(board.rows) >= 1
    # compare() wrote nothing: the store and what save() wrote are all there is.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["api", "compare"]
    assert sorted(p.name for p in (tmp_path / "runs" / "api").iterdir()) == ["lite0.h5"]
    assert (tmp_path / "runs" / "compare" / "results.json").is_file()


@pytest.mark.slow
def test_api_page_example_runs(tmp_path, capsys, monkeypatch):
    ns = run_example("docs/api.md", tmp_path, monkeypatch)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "new 131 ['_bn1/avg', '_fc:in/none']"
    assert len(out) == 4 and out[1].split()[0] in ("logreg", "knn-dino") and out[2].split()[0] in ("logreg", "knn-dino")
    assert ns["board"].best.predict(ns["X_new"]).shape == (4,)
    assert sorted(p.name for p in (tmp_path / "runs" / "api").iterdir()) == ["compare", "lite0.h5"]
    assert (tmp_path / "runs" / "api" / "compare" / "summary.md").is_file()


def test_api_rejects_unknown_options(tmp_path):
    import extract

    with pytest.raises(TypeError, match="unknown options \\['colour'\\]"):
        extract.extract_features("data/sample", "efficientnet_lite0", tmp_path / "x.h5", colour="red")


def test_packages_import_cheaply():
    import subprocess
    import sys

    code = ("import sys, extract, classify, featcache.store; "
            "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules, sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-500:]
