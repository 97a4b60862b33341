"""The comparison report, on a fabricated run: two tiny stores, a few JPEGs (one gone), a results.json."""

from __future__ import annotations

import argparse
import base64
import csv
import html as html_lib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classify.stats import wilson
from classify.table import seconds
from featcache.report import ReportError, build_report, excerpt, log_misclassified
from featcache.report.images import load_tile
from featcache.report.render import fmt
from featcache.report.results import load_run
from featcache.store import FeatureSpec, Manifest, open_for_write, write_lock

CLASSES = ["ants", "bees", "wasps"]
SHA = "0123456789abcdef" * 4
CHROMIUM = Path("/usr/bin/chromium")


def make_images(root: Path) -> list[tuple[str, int, str]]:
    """(path, label, split): 3 train + 2 val JPEGs per class, each class its own colour."""
    rows = []
    for c, name in enumerate(CLASSES):
        for split, n in (("train", 3), ("val", 2)):
            for i in range(n):
                rel = f"{split}/{name}/{name}{i}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                px = np.zeros((40, 56, 3), np.uint8)
                px[..., c] = 120 + 40 * i
                px[:, ::7, (c + 1) % 3] = 255  # stripes: never a flat image
                Image.fromarray(px).save(root / rel, quality=90)
                rows.append((rel, c, split))
    return rows


def make_store(path: Path, root: Path, rows: list, backbone: str, features: list[FeatureSpec]) -> None:
    manifest = Manifest(str(root), [r[0] for r in rows], np.array([r[1] for r in rows]), [r[2] for r in rows],
                        CLASSES, "fp")
    spec = {"backbone": backbone, "weights": "IMAGENET1K_V1", "weights_sha256": SHA,
            "features": [f.key for f in features],
            "transform": {"resize": 256, "crop": 224, "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225]}, "precision": "fp32", "dtype": "float32", "draft": False}
    prov = {"torch": "2.x", "torchvision": "0.x", "device": "cpu", "created": "2025-01-01T00:00:00+0000"}
    with write_lock(path):
        w = open_for_write(path, manifest, features, cache_key=f"key-{backbone}", spec=spec, provenance=prov,
                           default_feature=features[0].key)
        n = len(rows)
        w.write(np.arange(n), {f.key: np.ones((n, f.dim), "f4") for f in features},
                errors={1: "cannot identify image file (truncated JPEG)"})
        w.finish()


def val_block(acc: float, bal: float, wrong: list[dict], log_loss: float | None) -> dict:
    per = {"ants": acc, "bees": min(1.0, acc + 0.1), "wasps": max(0.0, acc - 0.1)}
    return {"n": 6, "accuracy": acc, "balanced_accuracy": bal, "macro_f1": round(bal - 0.01, 6),
            "top_k": {"top1": acc, "top2": min(1.0, acc + 0.2)}, "log_loss": log_loss, "per_class_accuracy": per,
            "confusion_matrix": {"labels": CLASSES, "matrix": [[2, 0, 0], [1, 1, 0], [0, 1, 1]]}, "report": {},
            "predict_s": 0.00123, "misclassified": wrong}


def make_run(base: Path) -> Path:
    data, run = base / "data", base / "run"
    (run / "features").mkdir(parents=True)
    rows = make_images(data)
    stores = {"tiny_a": run / "features" / "tiny_a-abc.h5", "tiny_b": run / "features" / "tiny_b-def.h5"}
    make_store(stores["tiny_a"], data, rows, "tiny_a", [FeatureSpec("fc", "input", "none", 8),
                                                         FeatureSpec("layer4", "output", "avg", 4)])
    make_store(stores["tiny_b"], data, rows, "tiny_b", [FeatureSpec("head", "input", "none", 6)])
    (data / "val/bees/bees1.jpg").unlink()  # deliberately missing: drawn as a grey tile
    wrong = [{"path": "val/bees/bees0.jpg", "true": "bees", "predicted": "ants", "confidence": 0.61},
             {"path": "val/bees/bees1.jpg", "true": "bees", "predicted": "wasps", "confidence": 0.9},
             {"path": "val/wasps/wasps0.jpg", "true": "wasps", "predicted": "bees"}]
    scores = {  # (backbone, feature, model): (acc, balanced acc, fit s, params, log loss)
        ("tiny_a", "fc:in/none", "logreg"): (0.9, 0.88, 0.5, {"C": 0.1}, 0.3),
        ("tiny_a", "fc:in/none", "linear_svm"): (0.9, 0.85, 0.05, {"C": 1.0}, None),  # tie on acc: lower bal acc
        ("tiny_a", "fc:in/none", "knn"): (0.5, 0.5, 0.001, {"n_neighbors": 5}, 2.0),
        ("tiny_a", "layer4/avg", "logreg"): (0.7, 0.69, 0.4, {"C": 1.0}, 0.7),
        ("tiny_a", "layer4/avg", "knn"): (0.6, 0.61, 0.002, {"n_neighbors": 3}, 1.1),
        ("tiny_b", "head:in/none", "logreg"): (0.8, 0.8, 1.25, {"C": 10.0, "penalty": "l2|x"}, 0.5),
        ("tiny_b", "head:in/none", "knn"): (0.4, 0.41, 0.003, {"n_neighbors": 1}, 3.0),
    }
    results = []
    for (bb, feat, model), (acc, bal, fit, params, ll) in scores.items():
        results.append({"backbone": bb, "feature": feat, "store": str(stores[bb]), "model": model, "preprocess": [],
                        "params": params, "fit_s": fit, "val": val_block(acc, bal, wrong, ll),
                        "val_source": "holdout from train",
                        "test": {"accuracy": acc - 0.05} if model == "logreg" else None,
                        "model_path": f"models/{bb}-{model}.joblib"})
    extraction = [
        {"backbone": "tiny_a", "store": str(stores["tiny_a"]), "status": "new", "seconds": 3.5, "images_per_s": 4.3,
         "rows": 15, "skipped": 1, "features": {"fc:in/none": 8, "layer4/avg": 4}, "forward_passes": 1},
        {"backbone": "tiny_b", "store": str(stores["tiny_b"]), "status": "hit", "seconds": 0.0, "images_per_s": 0.0,
         "rows": 15, "skipped": 1, "features": {"head:in/none": 6}, "forward_passes": 0},
    ]
    summary = {"config": {"data": str(data), "out": str(run)}, "extraction": extraction, "results": results,
               "seconds": 12.5}
    (run / "results.json").write_text(json.dumps(summary, indent=2))
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def built(run_dir) -> dict[str, Path]:
    return build_report(run_dir)


def md_rows(md: str) -> list[list[str]]:
    """The leaderboard table's body rows (the first table), cells stripped of bold."""
    table = md.split("## Leaderboard", 1)[1].split("\n\n")[1].splitlines()
    return [[c.strip().strip("*") for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table[2:]]


TAGS = {("tiny_a", "fc:in"): "tiny_a fc:in", ("tiny_a", "layer4"): "tiny_a layer4/avg", ("tiny_b", "head:in"): "tiny_b"}


def test_md_json_csv_agree(built):
    rows = json.loads(built["leaderboard_json"].read_text())["rows"]
    with built["leaderboard_csv"].open() as f:
        csv_rows = list(csv.DictReader(f))
    md = built["md"].read_text()
    table = md_rows(md)
    assert len(rows) == len(csv_rows) == len(table) == 7
    assert [h.strip() for h in md.split("## Leaderboard", 1)[1].split("\n\n")[1].splitlines()[0].split("|")[1:-1]] \
        == ["#", "model", "features", "val acc", "vs #1", "bal acc", "F1", "test acc", "fit"]  # 9 columns a person scans
    for j, c, m in zip(rows, csv_rows, table):
        assert (str(j["rank"]), j["backbone"], j["layer"], j["pooling"], j["model"]) == \
               (c["rank"], c["backbone"], c["layer"], c["pooling"], c["model"])  # the files keep full names
        assert (m[0], m[1], m[2]) == (str(j["rank"]), j["model"], TAGS[(j["backbone"], j["layer"])])  # short ones
        for key in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "fit_s", "predict_s"):
            assert float(c[key]) == j[key]
        assert (c["val_log_loss"] or None) == (None if j["val_log_loss"] is None else str(j["val_log_loss"]))
        assert json.loads(c["params"]) == j["params"]
        lo, hi = j["val_accuracy_ci_low"], j["val_accuracy_ci_high"]
        assert (lo, hi) == pytest.approx(wilson(round(j["val_accuracy"] * j["val_n"]), j["val_n"]))
        assert (float(c["val_accuracy_ci_low"]), float(c["val_accuracy_ci_high"])) == (lo, hi)
        assert m[3] == f"{fmt(j['val_accuracy'])} ({lo:.2f}-{hi:.2f})"  # every format carries the interval
        assert m[5:8] == [fmt(j["val_balanced_accuracy"]), fmt(j["val_macro_f1"]),
                          fmt(j["test_accuracy"]) if j["test_accuracy"] is not None else "-"]
        assert m[8] == seconds(j["fit_s"])
    accs = [j["val_accuracy"] for j in rows]
    assert accs == sorted(accs, reverse=True)
    best = rows[0]
    assert (best["backbone"], best["feature"], best["model"]) == ("tiny_a", "fc:in/none", "logreg")  # tie-break
    assert csv_rows[0]["model"] == "logreg"
    lines = md.split("## Leaderboard", 1)[1].splitlines()
    assert [line for line in lines if line.startswith("| **")] == [lines[4]] and "**logreg**" in lines[4]
    assert "| 2 | linear_svm | tiny_a fc:in | **0.900 (" in md  # each metric's best value in bold
    assert "**tiny_a fc:in** = tiny_a, layer fc:in, pooling none" in md  # layer and pooling said once
    html = built["html"].read_text()
    assert html.count('<tr class="row best">') == 1 and re.search(r'<tr class="row best"><td[^>]*>1</td>', html)
    assert html.count('<tr class="details" hidden>') == 7 and "C=0.1" in html


def test_rebuild_is_byte_identical(run_dir, built):
    before = {k: built[k].read_bytes() for k in ("leaderboard_json", "leaderboard_csv", "md", "html")}
    again = build_report(run_dir)
    assert {k: again[k].read_bytes() for k in before} == before
    assert not [p for p in (run_dir / "report").iterdir() if p.name.startswith(".")]  # no temp files left


def png_ok(raw: bytes) -> None:
    im = Image.open(io.BytesIO(raw))
    im.verify()
    px = np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=float)
    assert px.shape[0] > 100 and px.shape[1] > 100 and px.std() > 5, "blank image"


def test_html_is_self_contained_and_pngs_valid(built):
    html = built["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<link" not in html and "@import" not in html
    srcs = re.findall(r"<img[^>]*\bsrc=\"([^\"]+)\"", html)
    assert len(srcs) == html.count("<img") == 5
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png_ok(base64.b64decode(src.split(",", 1)[1]))
    pngs = sorted(p.name for p in built["md"].parent.glob("*.png"))
    assert pngs == ["accuracy_vs_fit_time.png", "confusion_matrix.png", "misclassified.png",
                    "per_class_accuracy.png", "sample_inputs.png"]
    for name in pngs:
        png_ok((built["md"].parent / name).read_bytes())
        assert f"]({name})" in built["md"].read_text()


def test_content_notes_and_provenance(built):
    md = built["md"].read_text()
    assert "15 images · 2 backbones · 3 feature sets · 3 classifiers · 7 runs · 12.5 s total" in md
    assert "stratified holdout from train" in md and "Test accuracy" in md
    assert "tiny_a: 2 feature sets (fc:in/none, layer4/avg) from 1 forward pass per image" in md
    assert "tiny_b: 1 feature set (head:in/none) read from a cached store, 0 forward passes" in md
    assert f"IMAGENET1K_V1 (sha256 {SHA[:12]})" in md and "cache hit" in md and "extracted" in md
    assert "train 8, val 6" in md  # one unreadable train image skipped
    assert "`train/ants/ants1.jpg`: cannot identify image file (truncated JPEG)" in md
    assert "misclassified 3 of 6 val images; 3 shown" in md
    assert "penalty=l2\\|x" in md  # a pipe inside a cell cannot break the table


def test_missing_image_is_a_grey_tile(tmp_path):
    tile = load_tile(tmp_path / "nope.jpg")
    assert tile.problem == "missing" and tile.pixels.shape == (160, 160, 3) and tile.pixels.std() == 0
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    assert load_tile(tmp_path / "bad.jpg").problem == "unreadable"


def moved_copy(run_dir: Path, dest: Path, with_stores: bool) -> Path:
    """The run copied elsewhere, its results naming stores at a path that no longer exists."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("report", *([] if with_stores else ["features"])))
    text = (dest / "results.json").read_text().replace(str(run_dir / "features"), "/gone/features")
    (dest / "results.json").write_text(text)
    return dest


def test_report_finds_stores_in_the_run_dir_or_does_without(tmp_path, run_dir, built):
    found = build_report(moved_copy(run_dir, tmp_path / "with", with_stores=True))
    assert f"sha256 {SHA[:12]}" in found["md"].read_text() and "store not found" not in found["md"].read_text()
    gone = build_report(moved_copy(run_dir, tmp_path / "without", with_stores=False))
    text = gone["md"].read_text()
    assert "store `/gone/features/tiny_a-abc.h5`: store not found" in text
    assert gone["leaderboard_csv"].read_bytes() == built["leaderboard_csv"].read_bytes()
    assert "sample_inputs" not in gone and "misclassified" in gone  # grey tiles, not a crash


def test_excerpt(run_dir, built):
    text = excerpt(run_dir, top=3)
    lines = text.splitlines()
    assert lines[2].startswith("| **1**") and len([line for line in lines if line.startswith("|")]) == 5
    assert "(4 more rows" in text


def test_bad_run_dirs_are_one_line_errors(tmp_path):
    with pytest.raises(ReportError, match=f"{tmp_path / 'nope'}: no such run directory"):
        build_report(tmp_path / "nope")
    with pytest.raises(ReportError, match="no results.json"):
        load_run(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"results.json: not valid JSON"):
        load_run(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"results": [{"backbone": "b"}]}))
    with pytest.raises(ReportError, match=r"results\[0\]: missing 'feature'"):
        load_run(tmp_path)


def test_cli(run_dir, capsys):
    from featcache.report.cli import add_subcommands

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"), [])
    args = parser.parse_args(["report", str(run_dir), "--top", "2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()  # the answer, then the top rows: all that goes to stdout
    assert out[0] == "Best: logreg on tiny_a fc:in, val accuracy 0.900 (95% CI 0.44-0.97)."
    assert out[out.index("Predict with it:") + 1].endswith("--model models/tiny_a-logreg.joblib --out predictions.csv IMAGES")
    assert out[-4].split()[:4] == ["#", "model", "features", "val"] and out[-3].split()[:2] == ["1", "logreg"]
    assert out[-1] == "(5 more rows in the report)" and f"Report: {run_dir / 'report' / 'report.html'}" in out
    assert len(out) <= 25 and max(map(len, out)) <= 100 and not [line for line in out if line.startswith("|")]
    args = parser.parse_args(["report", str(run_dir / "missing")])
    with pytest.raises(ValueError, match="missing: no such run directory"):
        args.func(args)


def test_log_misclassified(run_dir, tmp_path):
    pytest.importorskip("tensorboard")
    assert log_misclassified(run_dir, tmp_path / "tb") == 3
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    results = json.loads((run_dir / "results.json").read_text())
    assert log_misclassified(results, tmp_path / "tb2") == 3


def chromium() -> list[str]:
    """The headless Chromium command line; skips (saying so) where no Chromium can be found."""
    found = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium found (/usr/bin/chromium or chromium on PATH): CI installs Debian's chromium "
                    "package (.ci/run); `apt-get install chromium` here")
    return [str(found), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def render_in_chromium(html_path: Path, tmp_path: Path, height: int = 2000) -> str:
    """Screenshot the page (not blank) and return its DOM after the load script ran (no broken image)."""
    base = chromium() + [f"--user-data-dir={tmp_path / 'profile'}"]
    url = html_path.resolve().as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run(base + [f"--screenshot={shot}", f"--window-size=1280,{height}", url], check=True, timeout=120,
                   capture_output=True)
    px = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert px.shape == (height, 1280) and px.std() > 10, "blank screenshot"
    dom = subprocess.run(base + ["--virtual-time-budget=5000", "--dump-dom", url], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    match = re.search(r'data-broken-images="(\d+)"', dom)
    assert match, "the page's load script did not run"
    assert match.group(1) == "0"
    return dom


# Injected first into <head> of a copy of the page: counts script errors from the start, and after
# load measures what a person at 1280x800 sees (the first ranking: the leaderboard, or the table across
# datasets), into <body data-probe="{json}"> for --dump-dom;
# last, clicks the leaderboard's last header (fit) and reads the rank column in its new order.
PROBE = """<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message));});
window.addEventListener('load',function(){setTimeout(function(){var q=function(s){return [].slice.call(document.querySelectorAll(s));};
var box=function(el){return el?el.getBoundingClientRect().bottom:null;};
document.body.setAttribute('data-probe',JSON.stringify({viewport:window.innerWidth,
doc:document.documentElement.scrollWidth,errors:window.__errors,
tables:q('table').map(function(t){return [t.id||t.className||'table',t.scrollWidth,t.parentElement.clientWidth];}),
images:q('img').map(function(i){return i.complete?i.naturalWidth:0;}),
summary:box(document.getElementById('summary')),
rows:[].slice.call((document.querySelector('table.board,table#across')||document.createElement('table'))
.querySelectorAll('tbody tr:not(.details)'),0,3).map(box),
sorted:(function(){var t=document.querySelector('table.board'),h=t?t.querySelectorAll('th'):[];
if(!h.length)return null;h[h.length-1].click();return [].map.call(t.querySelectorAll('tr.row'),function(r){
return [r.cells[0].textContent,r.nextElementSibling.className];});})()}));},0);});</script>"""


def probe_in_chromium(html_path: Path, tmp_path: Path, shot: Path | None = None) -> dict:
    """Load the page at 1280x800 with :data:`PROBE` injected; its measurements (and a screenshot)."""
    base = chromium() + [f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,800", "--hide-scrollbars"]
    probed = tmp_path / "probed.html"
    probed.write_text(html_path.read_text().replace("<head>", "<head>" + PROBE, 1))
    dom = subprocess.run(base + ["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], check=True,
                         timeout=120, capture_output=True, text=True).stdout
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, "the probe did not run"
    if shot is not None:
        shot.parent.mkdir(exist_ok=True)
        subprocess.run(base + [f"--screenshot={shot}", html_path.resolve().as_uri()], check=True, timeout=120,
                       capture_output=True)
    return json.loads(html_lib.unescape(match.group(1)))


def assert_fits_one_screen(m: dict) -> None:
    """What the issue asks of the page at 1280x800: no sideways scrolling, no table cut off, every
    image decoded, no script error, the answer and the top of the leaderboard above the fold."""
    assert m["viewport"] == 1280  # (the layout's height may be less: headless keeps room for a window's bars)
    assert m["doc"] <= m["viewport"], f"the page scrolls sideways: {m['doc']} px wide"
    wide = [t for t in m["tables"] if t[1] > t[2]]
    assert not wide, f"tables wider than their container (name, width, container): {wide}"
    assert m["images"] and min(m["images"]) > 0, f"images not loaded: {m['images']}"
    assert m["errors"] == [], f"script errors: {m['errors']}"
    assert m["summary"] is not None and m["summary"] <= 800, f"the summary ends at {m['summary']} px"
    assert m["rows"] and max(m["rows"]) <= 800, f"the first leaderboard rows end at {m['rows']} px"


@pytest.mark.slow
def test_report_fits_a_1280x800_screen_in_chromium(built, tmp_path):
    shot = built["html"].parent / "screenshots" / "report_1280x800.png"  # for people to look at
    m = probe_in_chromium(built["html"], tmp_path, shot)
    assert_fits_one_screen(m)
    assert len(m["rows"]) == 3 and len(m["images"]) == 5
    rows = json.loads(built["leaderboard_json"].read_text())["rows"]
    by_fit = [str(r["rank"]) for r in sorted(rows, key=lambda r: r["fit_s"])]
    assert m["sorted"] == [[rank, "details"] for rank in by_fit]  # sorted in the page, each row with its details
    px = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert px.shape == (800, 1280) and px.std() > 10, "blank screenshot"


@pytest.mark.slow
def test_the_browser_check_catches_what_it_looks_for(tmp_path):
    """The probe itself: a table wider than the page, a broken image, a script error and a summary
    below the fold are each reported."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><meta charset=utf-8></head><body><div style='height:900px'></div>"
                   "<section id=summary>late</section><div style='width:600px'><table class=board><tr class=row>"
                   "<td style='white-space:nowrap'>" + "x" * 400 + "</td></tr></table></div>"
                   "<img src='data:image/png;base64,AAAA'><script>undefinedFunction();</script></body></html>")
    m = probe_in_chromium(bad, tmp_path)
    with pytest.raises(AssertionError, match="scrolls sideways"):
        assert_fits_one_screen(m)
    assert [t for t in m["tables"] if t[1] > t[2]], "the wide table was not seen"
    assert m["images"] == [0] and m["errors"] and m["summary"] > 800


@pytest.mark.slow
def test_html_renders_in_headless_chromium(built, tmp_path):
    render_in_chromium(built["html"], tmp_path)


def test_views_section_compares_variants_with_their_base(run_dir, tmp_path):
    from featcache.report.render import views_table

    plain = load_run(run_dir)
    assert views_table(plain) == ([], [])  # no variants: no section
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    summary = json.loads((run / "results.json").read_text())
    base = next(r for r in summary["results"] if r["backbone"] == "tiny_a" and r["model"] == "logreg"
                and r["feature"] == "fc:in/none")
    summary["results"].append({**base, "model": "logreg+views", "val": {**base["val"], "accuracy": 0.95}})
    summary["results"].append({**base, "model": "logreg+views+flip", "val": {**base["val"], "accuracy": 0.85}})
    (run / "results.json").write_text(json.dumps(summary))
    head, rows = views_table(load_run(run))
    assert head == ["feature set", "model", "val acc", "+views (change)", "+views+flip (change)"]
    row = next(r for r in rows if r[:2] == ["tiny_a fc:in/none", "logreg"])
    assert row[2:] == ["0.900", "0.950 (+5.0 pt)", "0.850 (-5.0 pt)"]
    assert next(r for r in rows if r[1] == "knn")[3:] == ["-", "-"]
    paths = build_report(run)
    md = paths["md"].read_text()
    assert "## Augmented views" in md and "0.950 (+5.0 pt)" in md
    assert "<h2>Augmented views</h2>" in paths["html"].read_text()
