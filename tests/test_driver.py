"""``pipeline.py run``: config precedence, one pass per backbone, store reuse, report, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from featcache.driver.config import ConfigError, load_file, resolve
from featcache.driver.run import run
from tests.samples import copy_sample

ROOT = Path(__file__).resolve().parents[1]


def test_config_precedence_and_errors(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data: d\nout: o\nbackbones: [a, b]\nbatch-size: 8\nmodels: logreg,knn\n")
    cfg = resolve(load_file(f), {"batch_size": 4, "out": None, "layers": ["default", "layer4"]})
    assert cfg.backbones == ("a", "b") and cfg.extract.batch_size == 4 and cfg.out == "o"
    assert cfg.classify.models == ("logreg", "knn") and cfg.extract.layers == ("default", "layer4")
    (tmp_path / "run.json").write_text(json.dumps({"data": "d", "out": "o", "colour": "red"}))
    with pytest.raises(ConfigError, match=r"unknown keys \['colour'\]"):
        resolve(load_file(tmp_path / "run.json"), {})
    with pytest.raises(ConfigError, match="--data is required"):
        resolve({}, {"out": "o"})
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: cannot parse"):
        load_file(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="^run.yaml: batch_size 'big': expected an integer$"):
        resolve({"data": "d", "out": "o", "batch_size": "big"}, {}, source="run.yaml")
    with pytest.raises(ConfigError, match="views '8': expected an integer"):
        resolve({"data": "d", "out": "o", "views": "8"}, {})
    with pytest.raises(ConfigError, match="train_on_views 'yes': expected one of auto, on, off, both"):
        resolve({"data": "d", "out": "o", "train_on_views": "yes"}, {})
    with pytest.raises(ConfigError, match="^--tta 'mirror': expected one of none, flip, both$"):  # a flag: named as one
        resolve({"data": "d", "out": "o"}, {"tta": "mirror"})
    with pytest.raises(ConfigError, match="^--batch-size 0: must be >= 1$"):
        resolve({"data": "d", "out": "o"}, {"batch_size": 0})


def small(tmp_path, n=4):
    return copy_sample(tmp_path / "imgs", n)


def test_run_one_pass_many_feature_sets_and_reuse(tmp_path):
    data = small(tmp_path)
    cfg = resolve({}, {"data": str(data), "out": str(tmp_path / "run"), "layers": ["default", "_bn1"],
                       "pools": ["avg", "max"], "models": ["logreg", "knn"], "cache_dir": str(tmp_path / "cache"),
                       "backbones": ["efficientnet_lite0"]})
    first = run(cfg, progress=False).to_results()
    (rec,) = first["extraction"]
    assert rec["status"] == "new" and rec["forward_passes"] == 1
    assert sorted(rec["features"]) == ["_bn1/avg", "_bn1/max", "_fc:in/none"]  # 3 feature sets, 1 pass
    singles = [r for r in first["results"] if r.get("kind", "model") == "model"]
    assert len(singles) == 3 * 2
    concat = [r for r in first["results"] if r.get("kind") == "concat"]  # the two best feature sets, joined
    assert concat and all(len(r["members"]) == 2 and " + " in r["feature"] for r in concat)
    assert {r["model"] for r in concat} <= {"logreg", "knn"}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["results"] == json.loads(json.dumps(first["results"], default=str))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["layers"] == ["default", "_bn1"]
    # A second run sharing the cache dir reuses the store by cache key: no backbone pass at all.
    again = run(resolve({}, {**cfg.to_dict(), "out": str(tmp_path / "run2"), "models": ["logreg"]}), progress=False).to_results()
    assert again["extraction"][0]["status"] == "hit" and again["extraction"][0]["forward_passes"] == 0
    assert again["extraction"][0]["store"] == rec["store"]


def test_run_with_views_reports_each_variant(tmp_path):
    data = small(tmp_path, n=3)
    cfg = resolve({"views": 2, "train_on_views": "both", "tta": "flip", "models": ["logreg"],
                   "backbones": ["efficientnet_lite0"]},
                  {"data": str(data), "out": str(tmp_path / "run")})
    out = run(cfg, progress=False).to_results()
    assert sorted(r["model"] for r in out["results"] if r.get("kind", "model") == "model") == ["logreg+flip",
                                                                                           "logreg+views+flip"]
    from featcache.report import build_report

    assert "## Augmented views" in build_report(tmp_path / "run")["md"].read_text()


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "pipeline.py"), *args], capture_output=True, text=True)


def test_run_cli_writes_report_and_rebuilds(tmp_path):
    data = small(tmp_path, n=3)
    cfgfile = tmp_path / "c.yaml"
    cfgfile.write_text(f"data: {data}\nout: {tmp_path / 'run'}\nmodels: [logreg, knn]\nbackbones: [efficientnet_lite0]\n")
    r = cli("run", "--config", str(cfgfile), "--models", "linear", "--tensorboard", str(tmp_path / "tb"), "--select", "val")
    assert r.returncode == 0, r.stderr
    assert "Report: " in r.stdout and r.stdout.startswith("Best: linear on lite0")
    board = tmp_path / "run" / "report" / "leaderboard.json"
    before = board.read_bytes()
    assert [row["model"] for row in json.loads(before)["rows"]] == ["linear"]  # flags override the file
    r = cli("report", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert board.read_bytes() == before  # rebuilt from saved results, same numbers
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))  # the torch head's training curves


@pytest.mark.parametrize("args,needle", [
    (["run", "--out", "x"], "--data is required"),
    (["run", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
    (["report", "/nonexistent-run"], "/nonexistent-run"),
])
def test_bad_input_exit_2(args, needle):
    r = cli(*args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_data_lists_and_dataset_names(tmp_path):
    from featcache.driver.config import dataset_names

    f = tmp_path / "multi.yaml"
    f.write_text("data: [a/flowers, b/flowers, a/flowers, c.csv]\nout: o\nfew_shot: false\n")
    cfg = resolve(load_file(f), {})
    assert cfg.data == ("a/flowers", "b/flowers", "c.csv") and cfg.classify.few_shot is False and cfg.ensembles is True
    assert dataset_names(cfg.data) == ["flowers", "flowers-2", "c"]
    assert resolve({}, {"data": ["x,y"], "out": "o"}).data == ("x,y",)  # paths are not split on commas
    with pytest.raises(ConfigError, match="data 1: expected a path or a list of paths"):
        resolve({"data": [1], "out": "o"}, {})
    with pytest.raises(ConfigError, match="few_shot 'yes': expected true or false"):
        resolve({"data": "d", "out": "o", "few_shot": "yes"}, {})
    with pytest.raises(ConfigError, match="select 'best': expected one of auto, val, cv"):
        resolve({"data": "d", "out": "o", "select": "best"}, {})


def test_run_two_datasets_one_report(tmp_path):
    first, second = copy_sample(tmp_path / "ants_a", 3), copy_sample(tmp_path / "ants_b", 4)
    proc = cli("run", "--data", str(first), "--data", str(second), "--out", str(tmp_path / "run"),
               "--models", "logreg,knn-dino", "--backbones", "efficientnet_lite0", "--no-ensembles", "-q")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["datasets"] == {"ants_a": str(first), "ants_b": str(second)}
    assert {r["dataset"] for r in saved["results"]} == {"ants_a", "ants_b"} and len(saved["results"]) == 4
    assert not [r for r in saved["results"] if r.get("kind", "model") != "model"]
    assert {c["dataset"] for c in saved["few_shot"]} == {"ants_a", "ants_b"}
    assert (tmp_path / "run" / "classify" / "ants_b" / "efficientnet_lite0___fc-in_none" / "metrics.json").is_file()
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## Across datasets" in md and "## Dataset: ants_a" in md and "## Dataset: ants_b" in md
    assert "| efficientnet_lite0 | _fc:in | none | logreg |" in md.split("## Dataset: ants_a")[0]


def test_a_rerun_keeps_rows_other_producers_added(tmp_path):
    from featcache.store.results import append_rows

    data = small(tmp_path, n=3)
    cfg = resolve({"models": ["logreg"], "ensembles": False, "few_shot": False, "backbones": ["efficientnet_lite0"]},
                  {"data": str(data), "out": str(tmp_path / "run")})
    run(cfg, progress=False)
    append_rows(tmp_path / "run", [{"backbone": "efficientnet_lite0", "feature": "finetune", "model": "finetune",
                                    "model_path": "ft/model.pt", "val": {"accuracy": 0.5}, "fit_s": 1.0}], "finetune")
    run(cfg, progress=False)  # the rerun replaces its own rows and keeps finetune's
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    assert sorted((r["producer"], r["model"]) for r in rows) == [("finetune", "finetune"), ("run", "logreg")]


def test_report_accepts_a_classify_output_directory(tmp_path):
    data = small(tmp_path, n=3)
    store = tmp_path / "f.h5"
    assert cli("extract", "--data", str(data), "--backbone", "efficientnet_lite0", "--out", str(store),
               "-q").returncode == 0
    assert cli("classify", "--features", str(store), "--models", "logreg,knn-dino", "--out", str(tmp_path / "cls"),
               "-q").returncode == 0
    proc = cli("report", str(tmp_path / "cls"))
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "cls" / "report" / "report.md").read_text()
    assert "| lite0 |" in md and "**lite0** = efficientnet_lite0, layer _fc:in, pooling none" in md


def test_option_names_agree_across_subcommands(capsys):
    sys.path.insert(0, str(ROOT))
    from pipeline import build_parser

    p = build_parser()
    ext = p.parse_args(["extract", "--data", "d", "--out", "o.h5", "--backbone", "b", "--pools", "avg,max"])
    old = p.parse_args(["extract", "--data", "d", "--out", "o.h5", "--backbone", "b", "--pool", "gem"])
    assert ext.pools == ("avg", "max") and old.pools == ("gem",)
    run_args = p.parse_args(["run", "--data", "d", "--out", "o", "--pools", "avg", "--views", "4", "--dtype",
                             "float16", "--max-pixels", "0", "--no-channels-last", "--train-on-views", "both"])
    assert (run_args.views, run_args.dtype, run_args.max_pixels, run_args.channels_last) == (4, "float16", 0, False)
    assert run_args.train_on_views == "both"
    cls = p.parse_args(["classify", "--features", "f.h5", "--out", "o", "--feature", "_bn1/avg", "--train-on-views",
                        "on"])
    assert cls.feature == "_bn1/avg" and cls.train_on_views == "on"
    assert p.parse_args(["classify", "--features", "f.h5", "--out", "o", "--layer", "fc"]).feature == "fc"
    with pytest.raises(SystemExit):
        p.parse_args(["classify", "--features", "f.h5", "--out", "o", "--views", "on"])
    assert "classify --views is now --train-on-views" in capsys.readouterr().err
    pred = p.parse_args(["predict", "--model", "m.joblib", "--out", "p.csv", "--tta", "none"])
    assert pred.tta == "none" and p.parse_args(["predict", "--model", "m", "--out", "p", "--no-tta"]).tta == "none"


def test_run_passes_every_extract_option(tmp_path):
    """run holds ExtractOptions whole: every option but the job's own (data, backbone, out, shard) reaches the job."""
    from dataclasses import fields

    from extract.config import ExtractConfig, ExtractOptions

    cfg = resolve({"batch_size": 7, "max_pixels": 0, "draft": True, "compression": "lzf"},
                  {"data": "d", "out": "o", "views": 2, "loader": "thread", "fold_bn": False})
    job = cfg.extract.job(data="d", backbone="b", out="s.h5")
    for f in fields(ExtractOptions):
        assert getattr(job, f.name) == getattr(cfg.extract, f.name), f.name
    assert (job.batch_size, job.max_pixels, job.draft, job.compression, job.views, job.loader, job.fold_bn) == \
        (7, None, True, "lzf", 2, "thread", False)
    assert {f.name for f in fields(ExtractConfig)} - {f.name for f in fields(ExtractOptions)} == \
        {"data", "backbone", "out", "shard"}


def test_default_run_ranks_three_backbones_and_their_vote(tmp_path):
    """The default backbones (issue 23): each one's rows, and a vote of each backbone's best."""
    data = small(tmp_path, n=4)
    cfg = resolve({"models": ["logreg", "knn"], "few_shot": False}, {"data": str(data), "out": str(tmp_path / "run")})
    assert cfg.backbones == ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    assert cfg.classify.final_fit == "auto" and cfg.classify.metric == "auto"
    out = run(cfg, progress=False).to_results()
    assert [r["backbone"] for r in out["extraction"]] == list(cfg.backbones)
    singles = [r for r in out["results"] if r.get("kind", "model") == "model"]
    assert {r["backbone"] for r in singles} == set(cfg.backbones)
    across = [r for r in out["results"] if r.get("kind") == "soft-vote" and r["feature"] == "best of each backbone"]
    tied = next(r for r in out["results"] if r.get("kind") == "soft-vote" and r["feature"] == "tied group")
    if across:  # absent only when the tied group already is each backbone's best
        (vote,) = across
        assert vote["backbone"].split("+") == [m.split(" on ")[1].split(" ")[0] for m in vote["members"]]
        assert sorted(vote["backbone"].split("+")) == sorted(cfg.backbones) and vote["val"]["accuracy"] is not None
    else:
        assert sorted(tied["backbone"].split("+")) == sorted(cfg.backbones)


def test_run_budget_estimates_from_what_the_run_measured(monkeypatch):
    from featcache.driver import budget as rb

    free = rb.RunBudget.parse(None)
    assert free.skip_reason("efficientnet_lite2", 10_000, False, 3) is None and free.share(4) is None
    monkeypatch.setattr(rb.time, "perf_counter", lambda: 10.0)  # 10 s into the run
    b = rb.RunBudget(rb.parse_budget("60s"), start=0.0)
    b.record_extraction("efficientnet_lite0", 1000, 10.0, fresh=True)  # 0.01 s per image and unit of cost
    b.record_extraction("efficientnet_lite1", 1000, 0.1, fresh=False)  # a cache hit measures nothing
    assert b.s_per_image == pytest.approx(0.01)
    b.classify_s += [20.0, 30.0]
    monkeypatch.setitem(rb.RELATIVE_COST, "efficientnet_lite2", 1.8)
    assert b.estimate("efficientnet_lite2", 1000, cached=False, feature_sets=1) == (pytest.approx(18.0), 25.0)  # 1.8x
    assert b.estimate("efficientnet_lite2", 1000, cached=True, feature_sets=2) == (0.0, 50.0)
    why = b.skip_reason("efficientnet_lite2", 1000, False, 2)  # 10 s spent: 18 + 50 > 50 left
    assert why.startswith("estimated 68.0 s (extraction 18.0 s, classifiers 50.0 s) > 50.0 s left")
    assert b.skip_reason("efficientnet_lite2", 1000, True, 1) is None  # cached: 25 s fits
    assert b.share(5) == pytest.approx(10.0)


def test_run_budget_keeps_the_first_backbone_and_reports_what_it_skipped(tmp_path):
    data = small(tmp_path, n=3)
    cfg = resolve({"models": ["logreg", "knn"], "few_shot": False, "budget": "0.05s",
                   "backbones": ["efficientnet_lite0", "efficientnet_lite1"]},
                  {"data": str(data), "out": str(tmp_path / "run")})
    out = run(cfg, progress=False).to_results()  # Lite0's extraction and zoo alone take longer: Lite1 cannot fit
    assert [r["backbone"] for r in out["extraction"]] == ["efficientnet_lite0"]
    (skip,) = [s for s in out["skipped"] if s.get("kind") == "backbone"]
    assert skip["backbone"] == "efficientnet_lite1" and "left of the run's --budget 0.1 s" in skip["reason"]
    assert {r["backbone"] for r in out["results"]} == {"efficientnet_lite0"} and out["budget_s"] == 0.05
    from featcache.report import build_report

    md = build_report(tmp_path / "run")["md"].read_text()
    assert "Run budget: 0.05s" in md and "| every model |" in md and "| lite1 |" in md.split("Skipped and")[1]
    assert "left of the run's --budget 0.1 s" in md.split("Skipped and")[1]  # its reason, once, under the grid


def test_run_finetune_adds_a_scored_row_and_auto_says_why_not(tmp_path):
    data = small(tmp_path, n=4)
    base = {"models": ["logreg"], "few_shot": False, "ensembles": False, "backbones": ["efficientnet_lite0"]}
    out = run(resolve({**base, "finetune": "on"}, {"data": str(data), "out": str(tmp_path / "on")}), progress=False).to_results()
    (tuned,) = [r for r in out["results"] if r["feature"] == "finetune"]
    assert tuned["model"] == "finetune-last3-warm" and tuned["backbone"] == "efficientnet_lite0"
    assert tuned["params"]["epochs"] == 4 and tuned["params"]["unfreeze"] == "3" and tuned["params"]["warm_start"]
    assert tuned["model_path"].endswith("best.pt") and tuned["val"]["n"] > 0 and tuned["store"]
    from featcache.report.results import load_run

    assert "finetune-last3-warm" in [e.model for e in load_run(tmp_path / "on").rows]
    auto = run(resolve(base, {"data": str(data), "out": str(tmp_path / "auto")}), progress=False).to_results()
    assert not [r for r in auto["results"] if r["feature"] == "finetune"]
    (why,) = [s for s in auto["skipped"] if s.get("kind") == "finetune"]
    assert "GPU" in why["reason"]
    from featcache.report import build_report

    md = build_report(tmp_path / "auto")["md"].read_text()
    assert "| fine-tune | skipped [1] |" in md and "1. --finetune auto" in md
    with pytest.raises(ConfigError, match="^finetune 'yes': expected one of off, auto, on$"):
        resolve({"data": "d", "out": "o", "finetune": "yes"}, {})


def test_budget_auto_keeps_every_backbone_and_sizes_each_zoo_to_its_extraction(monkeypatch):
    from classify.plan import auto_zoo
    from featcache.driver import budget as rb

    auto = rb.RunBudget.parse("auto")
    assert auto.auto and auto.total_s is None and auto.skip_reason("efficientnet_lite2", 10_000, False, 3) is None
    assert resolve({}, {"data": "d", "out": "o"}).classify.budget == "auto"  # run's default
    monkeypatch.setitem(rb.RELATIVE_COST, "efficientnet_lite2", 2.0)
    a0, a2 = rb.RunBudget.allowance("efficientnet_lite0", 1000, 1), rb.RunBudget.allowance("efficientnet_lite2", 1000, 2)
    assert a0 == pytest.approx(rb.AUTO_SHARE * 1000 * rb.DEFAULT_S_PER_IMAGE) and a2 == pytest.approx(a0)  # 2x, 2 sets
    # Each family's one model runs unless it alone costs more than the whole extraction (3x the
    # allowance, at least FAMILY_FLOOR_S); second variants share the allowance, cheapest first.
    monkeypatch.setattr("classify.budget.FAMILY_FLOOR_S", 0.0)
    base = {"logreg": 3.0, "svm-linear": 1.0, "mlp": 25.0, "mlp-bn": 1.5, "rf": 2.0, "extratrees": 1.0, "knn": 0.1,
            "knn-dino": 0.1}

    def cost(name, repeats=2, approximate=False, why="", mlp_trims=(25.0, 25.0, 25.0)):
        return base[name] if name != "mlp" else mlp_trims[(repeats == 1) + approximate]

    names = ["logreg", "mlp", "mlp-bn", "svm-linear", "knn", "knn-dino", "rf", "extratrees"]
    kept, trims, skipped = auto_zoo(names, 1.2, cost)  # a 3.6 s extraction
    assert kept == ["logreg", "svm-linear", "knn", "knn-dino", "rf", "extratrees"] and trims == {}
    assert [s["model"] for s in skipped] == ["mlp", "mlp-bn"]  # the MLP family: its one model over the extraction
    assert "at its cheapest, more than this feature set's whole extraction (3.6 s); the one MLP head" in skipped[0]["reason"]
    assert "a second MLP head" in skipped[1]["reason"] and all("--budget none runs it" in s["reason"] for s in skipped)
    for mlp_trims, trim in (((25.0, 3.0, 1.0), {"repeats": 1}), ((25.0, 9.0, 3.0), {"repeats": 1, "approximate": True})):
        kept, trims, _ = auto_zoo(names, 1.2, lambda n, m=mlp_trims, **t: cost(n, **t, mlp_trims=m))
        assert "mlp" in kept and trims == {"mlp": trim}  # trimmed as little as fits
    def halving(name, repeats=2, approximate=False, why=""):  # one CV repeat halves all but the MLP
        return 1.0 if name == "mlp" else base[name] / (2 if repeats == 1 else 1)

    kept, trims, _ = auto_zoo(names, 2.0, halving)  # firsts cost 7.1 s against a 6 s extraction
    assert set(trims) == {"logreg"} and trims["logreg"]["repeats"] == 1 and "together" in trims["logreg"]["why"]
    kept, trims, _ = auto_zoo(names, 1.2, halving)  # ... against 3.6 s: every one that a repeat less makes cheaper
    assert set(trims) == {"logreg", "rf", "svm-linear", "knn"} and "mlp" in kept
    kept, _, skipped = auto_zoo(names, 0.0, cost)  # no allowance: second variants go first, families stay if they can
    assert kept == [] and len(skipped) == len(names)
    monkeypatch.setattr("classify.budget.FAMILY_FLOOR_S", 3.0)  # ... and at 10^2 images the floor keeps them
    kept, _, _ = auto_zoo(names, 0.0, cost)
    assert kept == ["logreg", "svm-linear", "knn", "rf"]


def test_budget_auto_sizes_the_default_zoo_and_names_what_it_left_out(tmp_path):
    data = small(tmp_path, n=3)
    cfg = resolve({"few_shot": False, "ensembles": False, "backbones": ["efficientnet_lite0"]},
                  {"data": str(data), "out": str(tmp_path / "run")})
    assert cfg.classify.budget == "auto" and cfg.classify.models == ("default",)
    out = run(cfg, progress=False).to_results()  # 6 images: every family's one model, no second variant
    assert {r["model"] for r in out["results"]} == {"logreg", "linear", "mlp", "svm-linear", "svm-rbf", "knn", "rf"}
    left = [s for s in out["skipped"] if s.get("kind") != "finetune"]
    assert {s["model"] for s in left} == {"mlp-bn", "knn-dino", "extratrees"} and all(
        "--budget auto: a second" in s["reason"] and "--budget none runs it" in s["reason"] for s in left)
    named = resolve({"few_shot": False, "ensembles": False, "backbones": ["efficientnet_lite0"], "models": ["rf", "mlp"]},
                    {"data": str(data), "out": str(tmp_path / "named")})
    assert {r["model"] for r in run(named, progress=False).to_results()["results"]} == {"rf", "mlp"}  # named models all run


def test_run_compares_given_stores_without_extracting(tmp_path):
    """`run --features F.h5` (no --data): a store made elsewhere goes through the zoo and into the report."""
    from extract.runner import ExtractConfig, extract

    data = small(tmp_path, n=3)
    made = extract(ExtractConfig(data=str(data), backbone="efficientnet_lite0", out=str(tmp_path / "f.h5"),
                                 layers=("default", "_bn1"), progress=False))
    cfg = resolve({"models": ["logreg", "knn"], "few_shot": False, "ensembles": False, "audit": False},
                  {"features": [made.store], "out": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")})
    assert cfg.data == () and cfg.features == (made.store,)
    out = run(cfg, progress=False).to_results()
    (rec,) = out["extraction"]
    assert rec["status"] == "given" and rec["backbone"] == "efficientnet_lite0" and rec["forward_passes"] == 0
    assert {(r["feature"], r["model"]) for r in out["results"]} == {
        (f, m) for f in made.features for m in ("logreg", "knn")}
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.h5"))
    with pytest.raises(ConfigError, match="--data is required"):
        resolve({}, {"out": "o"})
