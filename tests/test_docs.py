"""Examples that cannot rot: every ``bash`` and ``python`` block of README.md and docs/*.md runs here.

Each page's blocks run in order, in one scratch folder and one Python namespace (a later block may use
an earlier one's files and names). The folder holds ``data/`` (the checkout's, with the bundled sample),
``runs/demo/`` (one small demo run, made once per session) and ``lite0.h5`` (that run's Lite0 store), so
a page that extracts the sample with Lite0 gets a cache hit. ``featcache ...`` and ``python pipeline.py
...`` lines run in this process (``pipeline.main``), other shell lines through bash.

A block marked just before its fence is not run (docs/development.md has the marks):
``<!-- example: skip=network|gpu|extra|slow|data -->`` blocks are checked for syntax (Python: compile;
shell: ``bash -n``, and every featcache command parses with pipeline.py's own parser).
``<!-- example: needs=MODULE -->`` blocks run on their own, in a fresh folder, when MODULE imports, and
are skipped with the reason otherwise. ``<!-- example: test=test_api -->`` blocks are run by
tests/test_api.py, which also checks what they print and write; here they are checked for syntax.

The CLI reference (docs/cli.md) is checked against the parsers too: it is what docs/gen_cli.py writes,
and it names every option of every command.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL, PYTHON = {"bash", "sh", "shell", "console"}, {"python", "py"}
SKIPS = {"network", "gpu", "extra", "slow", "data"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
MARK = re.compile(r"<!--\s*example:\s*(?P<key>\w+)=(?P<value>[\w.]+)\s*-->\s*$")
# The quick start's run, made small: the layout every example expects (runs/demo/classify/<set>/models/...).
DEMO_ARGS = ["run", "--data", "data/sample", "--backbones", "efficientnet_lite0", "--models", "logreg,knn-dino",
             "--no-few-shot", "--no-audit", "--jobs", "1", "--out", "runs/demo", "-q"]


@dataclass
class Block:
    page: Path
    line: int
    lang: str  # "shell" or "python"
    code: str
    skip: str | None = None
    needs: str | None = None
    test: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The page's shell and Python blocks, with their marks. Other languages (text, yaml) are not run,
    but every fence must name one."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        lang = m.group("lang")
        assert lang, f"{page.name}:{line}: a fence without a language (use ```text for output)"
        if lang not in SHELL | PYTHON:
            continue
        before = text[:m.start()].rstrip().rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        block = Block(page, line, "shell" if lang in SHELL else "python",
                      "\n".join(s[len(m.group("indent")):] for s in m.group("body").splitlines()))
        if mark:
            key, value = mark.group("key"), mark.group("value")
            assert key in ("skip", "needs", "test"), f"{block.where}: unknown mark {key}= (skip=, needs= or test=)"
            assert key != "skip" or value in SKIPS, f"{block.where}: skip={value}; known: {sorted(SKIPS)}"
            assert key != "test" or (ROOT / "tests" / f"{value}.py").is_file(), f"{block.where}: no tests/{value}.py"
            setattr(block, key, value)
        out.append(block)
    return out


# --------------------------------------------------------------------------- shell lines


def commands(code: str) -> list[list[str]]:
    """The block's commands, continuation lines joined, comments dropped."""
    return [words for line in code.replace("\\\n", " ").splitlines()
            if (words := shlex.split(line, comments=True))]


def featcache_argv(words: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """(environment, argv) of a featcache or ``python pipeline.py`` command; None for any other."""
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        k, _, v = words[0].partition("=")
        env[k], words = v, words[1:]
    if words[:1] == ["featcache"]:
        return env, words[1:]
    if len(words) >= 2 and words[0] in ("python", "python3") and words[1] == "pipeline.py":
        return env, words[2:]
    return None


def parse_only(argv: list[str], where: str) -> None:
    """The command parses with pipeline.py's own parser: its subcommand, options and choices exist."""
    import pipeline

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            pipeline.build_parser().parse_args(argv)
        except SystemExit as e:
            assert e.code == 0, f"{where}: `featcache {shlex.join(argv)}` does not parse: {err.getvalue().strip()}"


def check_only(block: Block) -> None:
    if block.lang == "python":
        compile(block.code, block.where, "exec")
        return
    r = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert r.returncode == 0, f"{block.where}: {r.stderr}"
    for words in commands(block.code):
        found = featcache_argv(words)
        if found:
            parse_only(found[1], block.where)


def run_shell(block: Block, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline

    for words in commands(block.code):
        found = featcache_argv(words)
        if found is None:
            r = subprocess.run(shlex.join(words), shell=True, cwd=folder, capture_output=True, text=True)
            assert r.returncode == 0, f"{block.where}: `{shlex.join(words)}` exited {r.returncode}: {r.stderr[-2000:]}"
            continue
        env, argv = found
        parse_only(argv, block.where)
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = pipeline.main(argv)
        assert code == 0, f"{block.where}: `featcache {shlex.join(argv)}` exited {code}: {err.getvalue()[-3000:]}"


def run_python(block: Block, namespace: dict) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102 - our own docs


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small run of the quick start's command (Lite0, two models), shared by every page."""
    import pipeline

    base = tmp_path_factory.mktemp("docs-demo")
    (base / "data").symlink_to(ROOT / "data")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = pipeline.main(DEMO_ARGS)
    finally:
        os.chdir(cwd)
    assert code == 0, err.getvalue()[-3000:]
    return base / "runs" / "demo"


def scratch(folder: Path, demo: Path | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").symlink_to(ROOT / "data")
    if demo is not None:
        shutil.copytree(demo, folder / "runs" / "demo")
        (store,) = (demo / "features").glob("efficientnet_lite0-*.h5")
        shutil.copy2(store, folder / "lite0.h5")
    return folder


# --------------------------------------------------------------------------- the examples


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, request: pytest.FixtureRequest, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    todo = blocks(page)
    runnable = [b for b in todo if not (b.skip or b.needs or b.test)]
    for b in todo:
        if b not in runnable:
            check_only(b)
    if not runnable:
        return
    folder = scratch(tmp_path / "work", request.getfixturevalue("demo_run"))
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__docs__"}
    for b in runnable:
        if b.lang == "shell":
            run_shell(b, folder, monkeypatch)
        else:
            run_python(b, namespace)


def _needing() -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.needs]


@pytest.mark.slow
@pytest.mark.parametrize("block", _needing(), ids=lambda b: b.where)
def test_example_needing_a_module_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_only(block)
    if importlib.util.find_spec(block.needs) is None:
        pytest.skip(f"{block.where} needs `{block.needs}`, which does not import here: checked for syntax only")
    monkeypatch.chdir(scratch(tmp_path / "work", None))
    if block.lang == "shell":
        run_shell(block, tmp_path / "work", monkeypatch)
    else:
        run_python(block, {"__name__": "__docs__"})


def test_marks_are_few_and_known() -> None:
    skipped = [b for page in PAGES for b in blocks(page) if b.skip]
    for b in (b for page in PAGES for b in blocks(page) if b.test):  # the test file names the page it runs
        assert str(b.page.relative_to(ROOT)) in (ROOT / "tests" / f"{b.test}.py").read_text(), b.where
    total = sum(len(blocks(page)) for page in PAGES)
    assert total >= 30, total
    assert len(skipped) <= total / 2, "most examples must run: mark only what cannot run on the sample"


# --------------------------------------------------------------------------- the README


def test_readme_is_a_front_page() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    machine = re.compile(r"\b\d+-core\b|this (session|machine|VM)\b|\bimg/s\b|\bGiB\b|\bseconds? here\b", re.I)
    assert not machine.findall(text), "machine-specific figures belong in bench/results/"
    quick = text.split("## Install", 1)[1]
    checkout = [b for b in blocks(ROOT / "README.md") if "make " in b.code]
    assert [c[:2] for b in checkout for c in commands(b.code)] == [["make", "run"], ["make", "test"]]
    assert "pip install featcache" in quick and "featcache run" in text
    for extra in ("openvino", "ray", "timm", "clip"):
        assert f"featcache[{extra}]" in text


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), f"README.md links {target}, which does not exist"


# --------------------------------------------------------------------------- the CLI reference


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    gen = _gen_cli()
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == gen.render(), (
        "docs/cli.md differs from pipeline.py's parsers: run `python docs/gen_cli.py`")


def _table_names(section: str) -> set[str]:
    """The options and arguments a section's tables list (their first cells), e.g. {'--out', '-q', 'images'}."""
    cells = re.findall(r"^\| ((?:`[^`]+`(?: \.\.\.)?(?:, )?)+) \|", section, re.M)
    return {re.match(r"[^\s`]+", c).group(0) for cell in cells for c in re.findall(r"`([^`]+)`", cell)}


def test_cli_reference_names_every_option_of_every_command() -> None:
    gen = _gen_cli()
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = gen.build_parser()
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", page, re.S | re.M))
    common = _table_names(sections.pop("Common options"))
    shared = gen.common_dests(parser)
    assert {f for a in gen.documented(parser) for f in a.option_strings} <= common
    cmds = gen.commands(parser)
    assert set(sections) == set(cmds), "docs/cli.md has a section per command, and no other"
    for name, (_, sub) in cmds.items():
        listed = _table_names(sections[name])
        for action in gen.documented(sub):
            for flag in action.option_strings or [action.metavar or action.dest]:
                assert flag in (common if action.dest in shared else listed), (
                    f"`featcache {name}` takes {flag}, which docs/cli.md does not list")


def test_site_builds_strictly(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (requirements-dev.txt): .ci/run builds the site")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "cli" / "index.html").is_file()
    assert (tmp_path / "site" / "bench-results" / "2026-12-03-small-n" / "index.html").is_file()
