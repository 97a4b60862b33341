"""The package users install: a wheel built from the checkout runs the CLI from another folder, and
pyproject.toml's dependencies never drift from requirements*.txt."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.samples import copy_sample

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's; pyproject.toml is read with it")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# The wheel is built from a copy of the checkout, less what is big, generated or per-machine.
TOP_NOT_COPIED = {".git", ".venv", "runs", "out", "data", "build", "dist"}  # top-level folders only
NOT_COPIED = shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", "*.h5",
                                    "*.partial", "*.lock")
# Run from another folder with the installed wheel on PYTHONPATH: where the modules and sys.path are.
WHERE = """import os, sys, extract, classify, store, pipeline
print(extract.__file__, classify.__file__, store.__file__, pipeline.__file__, sep="\\n")
print(*map(os.path.realpath, sys.path), sep="\\n")"""


def _packages() -> list[str]:
    """The top-level packages pyproject.toml names (its find include list)."""
    return [p for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] if "." not in p]


def _not_copied(folder: str, names: list[str]) -> set[str]:
    return set(NOT_COPIED(folder, names)) | (TOP_NOT_COPIED & set(names) if Path(folder) == ROOT else set())


def _env(site: Path) -> dict[str, str]:
    """The venv's interpreter and dependencies, the installed wheel first on the path, the checkout not at all."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(site)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, site): the wheel built from a copy of the checkout, installed with ``--target site``.

    Built from a copy because setuptools writes build/ and featcache.egg-info/ into the folder it
    builds (and a stale build/lib would put deleted modules in the wheel). No build isolation and
    ``--no-deps``: nothing is fetched and the venv stays as it is.
    """
    base = tmp_path_factory.mktemp("wheel")
    src, dist, site = base / "src", base / "dist", base / "site"
    shutil.copytree(ROOT, src, ignore=_not_copied)
    pip = [sys.executable, "-m", "pip"]
    env = _env(site)
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, env=env, cwd=base)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = dist.glob("featcache-*.whl")
    r = subprocess.run([*pip, "install", "--no-deps", "--no-compile", "-q", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, env=env, cwd=base)
    assert r.returncode == 0, r.stdout + r.stderr
    return wheel, site


def test_wheel_holds_the_packages_and_the_command(installed):
    wheel, _ = installed
    # The version where pyproject.toml reads it (a module's literal, or a package's __init__.py).
    module, _, name = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"].rpartition(".")
    source = ROOT / (module.replace(".", "/") + ".py")
    source = source if source.is_file() else ROOT / module.replace(".", "/") / "__init__.py"
    version = re.search(rf'^{name} = "([^"]+)"', source.read_text(encoding="utf-8"), re.M).group(1)
    assert wheel.name == f"featcache-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(f"featcache-{version}.dist-info/entry_points.txt").decode()
    top = {n.split("/")[0] for n in names}
    # Every folder of code in the checkout is in the wheel (a new package needs pyproject.toml's include
    # list, and an __init__.py), but not tests/, bench/ or data/ (nor configs/).
    in_checkout = {p.name for p in ROOT.iterdir() if p.is_dir() and any(p.glob("*.py"))} - {"tests", "bench", "data"}
    assert top == set(_packages()) & in_checkout | {"pipeline.py", f"featcache-{version}.dist-info"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert re.search(r"^featcache = pipeline:main$", entry_points, re.M)


def test_installed_command_extracts_and_classifies_from_another_folder(installed, tmp_path):
    _, site = installed
    env = _env(site)
    env.setdefault("FEATCACHE_HOME", str(tmp_path / "featcache-home"))  # conftest sets one for the session
    where = subprocess.run([sys.executable, "-c", WHERE], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    files, path = where.stdout.splitlines()[:4], where.stdout.splitlines()[4:]
    assert all(Path(f).resolve().is_relative_to(site.resolve()) for f in files), files
    assert str(ROOT) not in path  # the checkout is not importable here (sys.path[0] is the cwd, tmp_path)

    featcache = site / "bin" / "featcache"
    assert featcache.is_file() and os.access(featcache, os.X_OK)
    run = lambda *a: subprocess.run([str(featcache), *a], capture_output=True, text=True, env=env, cwd=tmp_path)
    r = run("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: featcache "), r.stdout + r.stderr
    assert "usage: featcache extract" in run("extract", "--help").stdout

    copy_sample(tmp_path / "imgs", 3)
    r = run("extract", "--data", "imgs", "--backbone", "efficientnet_lite0", "--out", "x.h5")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.h5").is_file() and "wrote 12 rows" in r.stdout
    r = run("classify", "--features", "x.h5", "--models", "logreg", "--out", "runX")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runX"
    assert (out / "metrics.json").is_file() and (out / "summary.md").is_file()
    assert list((out / "models").glob("*logreg*.skops"))


# --------------------------------------------------------------------------- pyproject vs requirements*.txt


def _requirements(name: str) -> dict[str, Requirement]:
    reqs = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            reqs[canonicalize_name(r.name)] = r
    return reqs


def _same(a: Requirement, b: Requirement) -> bool:
    return (canonicalize_name(a.name), a.extras, a.specifier, a.marker) == (
        canonicalize_name(b.name), b.extras, b.specifier, b.marker)


def test_pyproject_dependencies_match_the_requirements_files():
    project = PYPROJECT["project"]
    core = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    extras = {k: [Requirement(s) for s in v] for k, v in project["optional-dependencies"].items()}
    self_refs = {k: [r for r in v if canonicalize_name(r.name) == "featcache"] for k, v in extras.items()}
    optional = {canonicalize_name(r.name): r for v in extras.values() for r in v
                if canonicalize_name(r.name) != "featcache"}
    assert not core.keys() & optional.keys(), "a package is both a dependency and an extra"
    declared = {**core, **optional}

    files = {f: _requirements(f) for f in ("requirements.txt", "requirements-ray.txt", "requirements-extras.txt")}
    listed = {k: r for reqs in files.values() for k, r in reqs.items()}
    for f, reqs in files.items():  # requirements -> pyproject
        for key, r in reqs.items():
            assert key in declared, f"{f}: {r} is neither in pyproject.toml's dependencies nor in an extra"
            assert _same(r, declared[key]), f"{f}: {r}, but pyproject.toml says {declared[key]}"
    for key, r in declared.items():  # pyproject -> requirements
        assert key in listed, f"pyproject.toml: {r} is in no requirements*.txt (what a checkout installs)"
    assert {canonicalize_name(r.name) for r in extras["ray"]} == set(files["requirements-ray.txt"])
    assert {canonicalize_name(r.name) for k in ("timm", "clip") for r in extras[k]} == set(
        files["requirements-extras.txt"])
    # `all` names every other extra.
    (everything,) = self_refs["all"]
    assert everything.extras == set(extras) - {"all"} and len(extras["all"]) == 1
