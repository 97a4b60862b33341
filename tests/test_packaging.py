"""The package users install: a wheel built from the checkout runs the CLI from another folder, and
pyproject.toml's dependencies never drift from requirements*.txt."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
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
# Run from another folder in the fresh venv: where the modules and sys.path are.
WHERE = """import os, sys, extract, classify, featcache, featcache.store
print(extract.__file__, classify.__file__, featcache.__file__, featcache.store.__file__, sep="\\n")
print(*map(os.path.realpath, sys.path), sep="\\n")"""
INSTALLED = {"extract", "classify", "featcache"}  # the wheel's top-level names, besides its dist-info


def _packages() -> list[str]:
    """The top-level packages pyproject.toml names (its find include list)."""
    return [p for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] if "." not in p]


def _not_copied(folder: str, names: list[str]) -> set[str]:
    return set(NOT_COPIED(folder, names)) | (TOP_NOT_COPIED & set(names) if Path(folder) == ROOT else set())


def _env() -> dict[str, str]:
    """The environment without anything that would put the checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@dataclass(frozen=True)
class Venv:
    wheel: Path
    root: Path  # the venv
    site: Path  # its site-packages
    before: frozenset  # what its site-packages held before the wheel was installed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The wheel built from a copy of the checkout, installed with ``--no-deps`` into a fresh virtual
    environment that sees the checkout's dependencies (a .pth naming this venv's site-packages).

    Built from a copy because setuptools writes build/ and featcache.egg-info/ into the folder it
    builds (and a stale build/lib would put deleted modules in the wheel). No build isolation and
    ``--no-deps``: nothing is fetched. A full install with its dependencies is checked outside the suite.
    """
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    shutil.copytree(ROOT, src, ignore=_not_copied)
    pip = [sys.executable, "-m", "pip"]
    env = _env()
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, env=env, cwd=base)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = dist.glob("featcache-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "checkout-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    before = frozenset(p.name for p in site.iterdir())
    r = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-compile", "-q",
                        str(wheel)], capture_output=True, text=True, env=env, cwd=base)
    assert r.returncode == 0, r.stdout + r.stderr
    return Venv(wheel, venv, site, before)


def test_wheel_holds_the_packages_and_the_command(installed):
    wheel = installed.wheel
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
    assert top == INSTALLED | {f"featcache-{version}.dist-info"} and set(_packages()) == INSTALLED
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert re.search(r"^featcache = featcache.cli:main$", entry_points, re.M)
    # The venv's site-packages gained the three packages and the dist-info, nothing else.
    gained = {p.name for p in installed.site.iterdir()} - installed.before
    assert gained == INSTALLED | {f"featcache-{version}.dist-info"}, gained


def test_installed_command_runs_predicts_and_the_readme_api_from_another_folder(installed, tmp_path):
    env = _env()
    env.setdefault("FEATCACHE_HOME", str(tmp_path / "featcache-home"))  # conftest sets one for the session
    python = installed.root / "bin" / "python"
    where = subprocess.run([str(python), "-c", WHERE], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    files, path = where.stdout.splitlines()[:4], where.stdout.splitlines()[4:]
    assert all(Path(f).resolve().is_relative_to(installed.site.resolve()) for f in files), files
    assert str(ROOT) not in path  # the checkout is not importable here (sys.path[0] is the cwd, tmp_path)
    assert subprocess.run([str(python), "-c", "import pipeline"], env=env, cwd=tmp_path).returncode == 1

    featcache = installed.root / "bin" / "featcache"
    assert featcache.is_file() and os.access(featcache, os.X_OK)
    run = lambda *a: subprocess.run([str(featcache), *a], capture_output=True, text=True, env=env, cwd=tmp_path)
    r = run("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: featcache "), r.stdout + r.stderr

    copy_sample(tmp_path / "imgs", 3)
    r = run("run", "--data", "imgs", "--out", "runD")  # the default run: three backbones, no internet
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("Best: ") and "featcache predict" in r.stdout
    extraction = json.loads((tmp_path / "runD" / "extraction.json").read_text())
    assert [e["backbone"] for e in extraction] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    model = next((tmp_path / "runD" / "classify").glob("efficientnet_lite0__*/models/*logreg.skops"))
    r = run("predict", "--model", str(model), "imgs", "--out", "preds.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len((tmp_path / "preds.csv").read_text().splitlines()) == 1 + 12

    (tmp_path / "data").symlink_to(ROOT / "data")  # the README's example reads the bundled sample
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    r = subprocess.run([str(python), "-c", block], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "runs" / "compare" / "results.json").is_file()


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
