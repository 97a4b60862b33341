"""ruff, configured in pyproject.toml's [tool.ruff], passes on the whole checkout."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    pytest.importorskip("ruff", reason="ruff is not installed (requirements-dev.txt pins it: make .venv/.installed)")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, (f"{r.stdout}{r.stderr}\nmost are mended by: {sys.executable} -m ruff check --fix . "
                               "(then review the diff)")
