"""mkdocs hooks (mkdocs.yml ``hooks:``): the generated CLI page and the measurement files.

- ``cli.md`` is rendered from pipeline.py's parsers at build time (docs/gen_cli.py), so the site's
  reference is never stale; tests/test_docs.py keeps the committed copy in step for readers of the repo.
- ``bench/results/*.md`` live beside the benchmarks, outside docs/; they join the site as
  ``bench-results/NAME.md``, and the guide's links to ``../bench/results/NAME.md`` (right when the
  Markdown is read in the repository) are pointed there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS.parent / "bench" / "results"


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config, **kwargs) -> Files:
    for path in sorted(RESULTS.glob("20*.md")):  # the dated files (their README links the repository)
        files.append(File.generated(config, f"bench-results/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri == "cli.md":
        return _gen_cli().render()
    if page.file.src_uri.startswith("bench-results/"):
        return markdown
    return markdown.replace("](../bench/results/", "](bench-results/")
