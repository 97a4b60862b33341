"""The stages meet only through the shared store package: classify/ and featcache/report/ never
import extract/, and featcache/store/ imports no stage (nor torch or scikit-learn)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    """Top-level module names (with their first submodule) a file imports, lazily or not."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


F = "featcache."
RULES = {  # package (a folder of the checkout): modules it must not import (a name and everything under it)
    "classify": ("extract", F + "report", F + "driver", F + "finetune", F + "cli", F + "__main__"),
    "featcache/report": ("extract", F + "driver", F + "finetune", F + "cli"),
    "featcache/store": ("extract", "classify", F + "report", F + "driver", F + "finetune", F + "cli", "torch",
                        "sklearn"),
    "featcache/common": (F + "store", "extract", "classify", F + "report", F + "driver", F + "finetune", F + "cli",
                         "torch", "sklearn", "h5py", "numpy"),
}
PACKAGES = ("extract", "classify", "featcache", "pipeline")  # what the project installs (pipeline: the checkout's)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(RULES))
def test_stage_boundaries(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported(path):
            if any(_under(name, rule) for rule in RULES[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_finetune_uses_extract_only_for_backbones_and_images():
    allowed = {"extract", "extract.backbones", "extract.images", "extract.preprocess", "extract.rows",
               "extract.views", "extract.cli", "extract.loaders", "extract.devices", "extract.sources",
               "extract.weights"}
    bad = [f"{p.relative_to(ROOT)} imports {n}" for p in sorted((ROOT / "featcache" / "finetune").rglob("*.py"))
           for n in imported(p) if n.split(".")[0] == "extract" and n not in allowed]
    assert not bad, "\n".join(bad)


def test_classify_imports_only_the_shared_packages():
    """The classify stage is a library: of the project, it imports itself, and the shared store and
    common packages only."""
    ok = ("classify", F + "store", F + "common")
    bad = [f"{p.relative_to(ROOT)} imports {n}" for p in sorted((ROOT / "classify").rglob("*.py"))
           for n in imported(p) if n.split(".")[0] in PACKAGES and not any(_under(n, o) for o in ok)]
    assert not bad, "\n".join(bad)


def _functions(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_no_function_of_classify_or_driver_takes_more_than_8_parameters():
    """Estimator constructors (``__init__``, scikit-learn's contract) aside: past 8, a function is
    doing several jobs or wants a dataclass."""
    bad = []
    for package in ("classify", "featcache/driver"):
        for path, fn in _functions(package):
            a = fn.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            if len(names) > 8 and fn.name != "__init__":
                bad.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} takes {len(names)}")
    assert not bad, "\n".join(bad)


def test_one_row_type():
    """A leaderboard row has one type from fit to report (store.rows.ResultRow): no other class
    in the project declares a row's scores (``val`` and ``fit_s``) as fields."""
    found = []
    for package in ("extract", "classify", "featcache"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    fields = {t.target.id for t in node.body if isinstance(t, ast.AnnAssign)
                              and isinstance(t.target, ast.Name)}
                    if {"val", "fit_s"} <= fields:
                        found.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert found == ["featcache/store/rows.py:ResultRow"], found
