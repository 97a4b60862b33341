"""The README's Python API example runs as written (on the bundled sample, in a scratch dir)."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


def test_readme_api_example_runs(tmp_path, capsys, monkeypatch):
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    code = readme_example()
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["new", "131"]
    assert len(out) == 4 and out[1].startswith("logreg ") and out[2].startswith("knn-dino ")
    results = namespace["results"]
    assert all(r.model_path is None and "oof" not in r.extra["cv"] for r in results)  # nothing written
    assert sorted(p.name for p in (tmp_path / "runs" / "api").iterdir()) == ["lite0.h5"]
    assert namespace["best"].estimator.predict(namespace["X"]).shape == (4,)


def test_api_rejects_unknown_options(tmp_path):
    import extract

    with pytest.raises(TypeError, match="unknown options \\['colour'\\]"):
        extract.extract_features("data/sample", "efficientnet_lite0", tmp_path / "x.h5", colour="red")


def test_packages_import_cheaply():
    import subprocess
    import sys

    code = ("import sys, extract, classify, store; "
            "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules, sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-500:]
