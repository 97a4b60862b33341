"""The stages meet only through the store package: classify/ and report/ never import extract/,
and store/ imports no stage (nor torch or scikit-learn)."""

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


RULES = {  # package: modules it must not import
    "classify": ("extract", "report", "driver", "finetune"),
    "report": ("extract", "driver", "finetune"),
    "store": ("extract", "classify", "report", "driver", "finetune", "torch", "sklearn"),
    "common": ("store", "extract", "classify", "report", "driver", "finetune", "torch", "sklearn", "h5py", "numpy"),
}


@pytest.mark.parametrize("package", sorted(RULES))
def test_stage_boundaries(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported(path):
            if name.split(".")[0] in RULES[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_finetune_uses_extract_only_for_backbones_and_images():
    allowed = {"extract", "extract.backbones", "extract.images", "extract.preprocess", "extract.rows",
               "extract.views", "extract.cli", "extract.loaders", "extract.devices", "extract.sources",
               "extract.weights"}
    bad = [f"{p.relative_to(ROOT)} imports {n}" for p in sorted((ROOT / "finetune").rglob("*.py"))
           for n in imported(p) if n.split(".")[0] == "extract" and n not in allowed]
    assert not bad, "\n".join(bad)
