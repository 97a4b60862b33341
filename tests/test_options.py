"""One declaration per option: the parsers, the config keys and the checks come from the stage configs."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from classify.config import ClassifyConfig, ClassifyOptions
from extract.config import ExtractConfig, ExtractOptions
from featcache.common import options
from featcache.common.errors import BadInput
from featcache.driver.config import RunConfig, config_keys, resolve

ROOT = Path(__file__).resolve().parents[1]
# Spelled in the plural by run (--backbones, --layers), or one job's alone (--shard: run keys stores by cache key).
NOT_IN_RUN = {"--shard", "--backbone", "--layer", "--feature"}


def _parser(command: str) -> argparse.ArgumentParser:
    import pipeline

    sub = next(a for a in pipeline.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _flags(command: str) -> dict[str, argparse.Action]:
    return {flag: a for a in _parser(command)._actions for flag in a.option_strings
            if a.help != argparse.SUPPRESS and flag not in ("-h", "--help", "-v", "--verbose", "-q", "--quiet")}


def _default_said(action: argparse.Action) -> str | None:
    """The default a flag's help states (generated from the dataclass field), or None when it states none."""
    m = re.search(r"\(default ([^()]*)\)$", " ".join((action.help or "").split()))
    return m.group(1) if m else None


@pytest.mark.parametrize("stage", ["extract", "classify"])
def test_every_stage_flag_is_in_run_with_the_same_default(stage):
    run = _flags("run")
    missing, differ = [], []
    for flag, action in _flags(stage).items():
        if flag in NOT_IN_RUN:
            continue
        if flag not in run:
            missing.append(flag)
        elif _default_said(run[flag]) != _default_said(action):
            differ.append(flag)
    assert not missing, f"run lacks {stage}'s {missing}"
    assert not differ, f"run declares {differ} otherwise than {stage}"


def test_help_states_each_default_from_the_dataclass():
    help_text = " ".join(_parser("run").format_help().split())
    assert "images per forward (default 32)" in help_text
    assert _default_said(_flags("run")["--backbones"]) == "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
    assert _default_said(_flags("classify")["--few-shot"]) == _default_said(_flags("run")["--few-shot"]) == "on"
    assert "--few-shot, --no-few-shot" in help_text


def test_every_config_key_is_a_declared_option():
    keys = config_keys()
    assert {"batch_size", "models", "few_shot", "backbones", "view_scale", "engine"} <= keys
    assert not keys & {"progress", "weights_file", "calibration", "extract", "classify", "extra"}


def test_python_callers_get_the_field_names_and_the_cli_the_flags():
    with pytest.raises(BadInput, match=r"^batch_size 0: must be >= 1$"):
        ExtractConfig(data="d", backbone="b", out="o", batch_size=0)
    with pytest.raises(BadInput, match=r"^--batch-size 0: must be >= 1$"):
        resolve({}, {"data": "d", "out": "o", "batch_size": 0})
    with pytest.raises(BadInput, match=r"^jobs 0: expected -1"):
        ClassifyConfig(features="f.h5", out="o", jobs=0)
    with pytest.raises(BadInput, match=r"^view_scale 0.5,0.2: expected 0 < min <= max <= 1"):
        ExtractOptions(view_scale=(0.5, 0.2))
    with pytest.raises(BadInput, match=r"^protocol 'cv:1': a k-fold needs k >= 2$"):
        ClassifyOptions(protocol="cv:1")
    with pytest.raises(BadInput, match=r"^--budget '10x': expected a duration"):
        resolve({}, {"data": "d", "out": "o", "budget": "10x"})


def test_run_config_holds_the_stage_configs():
    cfg = resolve({"batch_size": 8, "models": "logreg,knn"}, {"data": ["d"], "out": "o", "jobs": 2})
    assert isinstance(cfg.extract, ExtractOptions) and isinstance(cfg.classify, ClassifyOptions)
    assert cfg.extract.batch_size == 8 and cfg.classify.models == ("logreg", "knn") and cfg.classify.jobs == 2
    job = cfg.extract.job(data="d", backbone="efficientnet_lite0", out="f.h5")
    assert isinstance(job, ExtractConfig) and job.batch_size == 8
    flat = cfg.to_dict()
    assert flat["batch_size"] == 8 and flat["models"] == ["logreg", "knn"] and "extract" not in flat
    assert isinstance(RunConfig.__dataclass_fields__["extract"].default_factory(), ExtractOptions)


@pytest.mark.slow
def test_options_fail_before_any_work(tmp_path):
    """`run --models logreg,foo` says foo is unknown before anything is extracted."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "run", "--data", str(ROOT / "data" / "sample"),
                        "--out", str(out), "--models", "logreg,foo", "--cache-dir", str(tmp_path / "cache")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "foo" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not list((tmp_path / "cache").rglob("*.h5*")), "extracted before the options were checked"


def test_loader_is_declared_once():
    """The count the issue asked for: `loader`'s choices, default and help live on ExtractOptions alone."""
    hits = []
    for path in sorted(ROOT.glob("*/*.py")) + [ROOT / "pipeline.py"]:
        if path.parts[-2] in ("tests", "bench", ".venv") or not path.is_file():
            continue
        text = path.read_text()
        if '"--loader"' in text or "loader: str = option(" in text:
            hits.append(path.relative_to(ROOT).as_posix())
    assert hits == ["extract/config.py"], hits
    assert options.defaults(ExtractOptions)["loader"] == "auto"
