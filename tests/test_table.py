"""classify.table: numbers and names for people, the compact leaderboard, the few-line answer."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from html.parser import HTMLParser

import pytest

from classify import table as T


@dataclass
class FakeRow:
    """A ranked row with exactly the attributes classify.table reads (classify.table.Row)."""

    rank: int
    model: str
    backbone: str = "efficientnet_lite0"
    feature: str = "_fc:in/none"
    val: dict = field(default_factory=dict)
    test: dict | None = None
    fit_s: float = 0.5
    params: dict = field(default_factory=dict)
    cv: dict | None = None
    kind: str = "model"
    members: tuple = ()
    p_vs_best: float | None = 1.0
    tied: bool = True
    metric: str = "accuracy"
    score: float = 0.9
    score_ci: list | None = None
    estimate_s: float | None = 0.2
    model_path: str | None = None
    dataset: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def layer(self) -> str:
        return self.feature.rsplit("/", 1)[0]

    @property
    def pooling(self) -> str:
        return self.feature.rsplit("/", 1)[-1]

    @property
    def feature_set(self) -> str:
        return f"{self.backbone} {self.feature}"

    @property
    def label(self) -> str:
        return f"{self.model} on {self.feature_set}"


def row(rank: int, model: str, score: float, **kw) -> FakeRow:
    val = {"accuracy": score, "balanced_accuracy": score - 0.01, "macro_f1": score - 0.02, "n": 50,
           "predict_s": 1.68e-05, "log_loss": 0.12, "accuracy_ci": [score - 0.08, min(1.0, score + 0.02)]}
    return FakeRow(rank=rank, model=model, score=score, val=val, score_ci=val["accuracy_ci"], **kw)


def demo_rows() -> list[FakeRow]:
    """The demo's shape: a soft vote of each backbone's best on top, then single models."""
    members = ("logreg on efficientnet_lite2 _fc:in/none", "logreg on efficientnet_lite1 _fc:in/none",
               "knn-dino on efficientnet_lite0 _fc:in/none")
    return [
        row(1, "soft-vote of 3", 0.97, backbone="efficientnet_lite2+efficientnet_lite1+efficientnet_lite0",
            feature="best of each backbone", kind="soft-vote", members=members, fit_s=0.0),
        row(2, "logreg", 0.97, backbone="efficientnet_lite2", params={"C": 0.03162277660168379},
            model_path="/elsewhere/run/models/lite2__logreg.skops"),
        row(3, "logreg", 0.966, backbone="efficientnet_lite1", model_path="/elsewhere/run/models/lite1__logreg.skops"),
        row(4, "knn-dino", 0.962, backbone="efficientnet_lite0", p_vs_best=0.62, fit_s=0.0018,
            model_path="/elsewhere/run/models/lite0__knn-dino.skops"),
        row(5, "knn", 0.90, backbone="efficientnet_lite0", p_vs_best=0.012, tied=False, fit_s=0.113),
    ]


def test_numbers_for_people():
    assert [T.sig(x) for x in (0.9, 0.97444, 1.0, 123.4, 12345.6, 0.0123456, None, float("nan"))] == \
        ["0.900", "0.974", "1.00", "123", "12,346", "0.0123", "-", "-"]
    assert [T.seconds(x) for x in (1.68e-05, 0.000881, 16.2, 3.0, 181.8, 7200.0, None)] == \
        ["0.017 ms", "0.88 ms", "16.2 s", "3 s", "3 min", "2 h", "-"]
    assert [T.p_value(x) for x in (0.21875, 0.01172, 1.0, 0.00001, None)] == ["0.22", "0.012", "1", "<0.001", "-"]
    assert T.interval([0.9351, 0.9921]) == "0.94-0.99" and T.interval(None) == "-"
    assert T.param_text({"C": 0.03162277660168379, "penalty": "l2", "note": "approximated"}) == "C=0.0316, penalty=l2"
    assert T.param_text({"C": 0.1, "gamma": 10.0}) == "C=0.1, gamma=10"


def test_short_names_and_tags():
    assert T.short_backbone("efficientnet_lite0") == "lite0"
    assert T.short_backbone("efficientnet_lite2+efficientnet_lite1+efficientnet_lite0") == "lite0+lite1+lite2"
    assert T.short_backbone("timm:vit_small_patch14_dinov2.lvd142m") == "vit_small_patch14_dinov2"
    assert T.short_backbone("open_clip:ViT-B-32/laion2b_s34b_b79k") == "ViT-B-32"
    assert T.short_backbone("resnet50") == "resnet50" and T.short_backbone("efficientnet_b0") == "effnet_b0"
    rows = [row(1, "logreg", 0.9), row(2, "logreg", 0.8, feature="_bn1/avg"), row(3, "knn", 0.7, backbone="resnet50")]
    assert T.feature_tags(rows) == {("efficientnet_lite0", "_fc:in/none"): "lite0 fc:in",
                                    ("efficientnet_lite0", "_bn1/avg"): "lite0 bn1/avg",
                                    ("resnet50", "_fc:in/none"): "resnet50"}
    clash = [row(1, "a", 0.9, backbone="timm:resnet50.a1"), row(2, "a", 0.8, backbone="timm:resnet50.tv")]
    assert sorted(T.feature_tags(clash).values()) == ["timm:resnet50.a1", "timm:resnet50.tv"]  # never ambiguous


def test_text_table_is_aligned_and_at_most_100_columns():
    rows = demo_rows()
    text = T.text_table(rows, top=10)
    lines = text.splitlines()
    assert len(lines) == 1 + len(rows) and max(map(len, lines)) <= T.WIDTH
    head = lines[0]
    assert head.split() == ["#", "model", "features", "val", "acc", "vs", "#1", "bal", "acc", "F1", "fit"]
    end = head.index("val acc") + len("val acc")  # numbers are right-aligned under their header
    assert all(line[:end].endswith(")") for line in lines[1:])
    assert lines[1].split()[:5] == ["1", "vote:", "best", "of", "each"]  # not clipped
    assert "lite0+lite1+lite2" in lines[1] and "worse p=0.012" in lines[5] and "tied p=0.62" in lines[4]


def test_text_table_of_many_long_rows_drops_columns_then_clips_names():
    rows = [row(i, f"a-very-long-model-name-{i}", 0.9 - i / 100, backbone=f"timm:some_long_backbone_name_{i % 4}",
                feature=f"blocks.{i % 3}.attn/avg", test={"accuracy": 0.8}) for i in range(1, 46)]
    text = T.text_table(rows, top=10)
    lines = text.splitlines()
    assert len(lines) == 12 and lines[-1] == "(35 more rows in the report)"
    assert max(map(len, lines)) <= T.WIDTH
    assert "~" in text  # clipped, never wrapped
    assert "test acc" in lines[0] and "vs #1" in lines[0]  # the columns that matter stay


def test_markdown_marks_the_best_of_each_metric_column():
    rows = demo_rows()
    md = T.markdown_table(rows).splitlines()
    assert md[0] == "| # | model | features | val acc | vs #1 | bal acc | F1 | fit |"
    assert md[2].startswith("| **1** | **vote: best of each** | lite0+lite1+lite2 | **0.970 (0.89-0.99)** |")
    assert "| 3 | logreg | lite1 | 0.966 (0.89-0.99) |" in md[4]  # not the best: plain
    details = T.details_markdown(rows)
    assert "parameters C=0.0316" in details and "predict (val) 0.017 ms" in details


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows, self.heads, self.top, self.hidden = [], [], 0, 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "tr":
            self.rows.append(a.get("class"))
            self.hidden += "hidden" in a
        if tag == "th":
            self.heads.append(a.get("data-sort"))
        if tag == "td" and "top" in (a.get("class") or "").split():
            self.top += 1


def test_html_fragment_has_details_rows_sort_keys_and_best_marks():
    rows = demo_rows()
    fragment = T.html_table(rows)
    p = Cells()
    p.feed(fragment)
    assert p.rows[1:] == ["row best", "details", "row tied", "details", "row tied", "details", "row tied", "details",
                          "row", "details"]
    assert p.hidden == len(rows) and p.heads == ["n", "t", "t", "n", "n", "n", "n", "n"]
    assert p.top == 3 * 2  # the first two rows share the best val acc, bal acc and F1
    assert 'data-v="0.97"' in fragment and "C=0.0316" in fragment and "<script" not in fragment
    assert "http" not in T.SORT_JS  # no CDN: the report stays one offline file


def test_summary_names_rank_1_its_interval_ties_and_a_command_that_parses(tmp_path, monkeypatch):
    from pipeline import build_parser

    rows = demo_rows()
    monkeypatch.chdir(tmp_path)
    skipped = [{"model": m, "backbone": b, "feature": "_fc:in/none", "estimate_s": 8.1,
                "reason": f"--budget auto: estimated {e} s beyond this feature set's 0.3 s"}
               for m, e in (("mlp", 8.1), ("rf", 3.2)) for b in ("efficientnet_lite0", "efficientnet_lite1")]
    skipped.append({"kind": "finetune", "backbone": "efficientnet_lite0", "model": "finetune", "feature": "finetune",
                    "reason": "--finetune auto fine-tunes on a GPU only"})
    lines = T.summary_lines(rows, skipped, 181.8, tmp_path / "run")
    text = "\n".join(lines).replace("\n  ", " ")  # wrapped lines continue indented
    assert text.startswith("Best: soft vote of 3 models (logreg on lite2, logreg on lite1, knn-dino on lite0), "
                               "val accuracy 0.970 (95% CI 0.89-0.99).")
    assert "3 other rows are tied with it" in text
    assert "Predict with its best member, logreg on lite2 (the vote has no model file):" in text
    assert "Took 3 min; skipped 4 model fits (2 models on 2 feature sets) and fine-tuning" in text
    assert "Ranked by balanced accuracy" not in text and lines[-1] == "Results: run"  # relative to where we are
    assert max(map(len, lines)) <= T.WIDTH
    at = next(i for i, x in enumerate(lines) if "pipeline.py predict" in x)
    more = 2 if lines[at].endswith("\\") else 1  # a continued line and its path
    command = " ".join(x.strip().rstrip("\\") for x in lines[at:at + more])
    args = build_parser().parse_args(shlex.split(command)[2:])  # what `predict --help` accepts
    assert (args.command, args.model, args.out, args.images) == (
        "predict", "/elsewhere/run/models/lite2__logreg.skops", "predictions.csv", ["IMAGES"])


def test_summary_of_a_saved_vote_predicts_with_the_vote_itself(tmp_path, monkeypatch):
    """A soft vote saved as one file (issue 37): rank 1's own command, no member stands in for it."""
    monkeypatch.chdir(tmp_path)
    rows = demo_rows()
    rows[0].model_path = str(tmp_path / "run" / "classify" / "ensembles" / "best_of_each_backbone.skops")
    text = "\n".join(T.summary_lines(rows, [], 10.0, "run"))
    assert "Predict with it:" in text and "best member" not in text
    assert "  run/classify/ensembles/best_of_each_backbone.skops" in text.splitlines()  # relative, on its own line
    multi = [dataclass_replace(r, dataset=d) for d in ("a", "b") for r in rows]
    assert "predict with it:" in "\n".join(T.summary_lines(multi, [], 10.0, "run"))


def test_summary_of_a_single_model_with_test_and_balanced_metric(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "models").mkdir(parents=True)
    best = row(1, "logreg", 0.8, metric="balanced_accuracy", model_path=str(tmp_path / "run/models/m.skops"),
               test={"accuracy": 0.75, "n": 200, "accuracy_ci": [0.69, 0.80]})
    other = row(2, "knn", 0.6, p_vs_best=0.001, tied=False, metric="balanced_accuracy")
    lines = T.summary_lines([best, other], [], None, "run")
    assert lines[0] == "Best: logreg on lite0, val balanced accuracy 0.800 (95% CI 0.72-0.82)."
    assert lines[1] == "It is significantly better than the other row (exact McNemar on the same 50 images, p < 0.05)."
    assert lines[2] == "Test accuracy: 0.750 (95% CI 0.69-0.80) on 200 images."
    assert lines[4] == "  python pipeline.py predict --model run/models/m.skops --out predictions.csv IMAGES"  # relative
    assert any(x.startswith("Each class counts the same: ranked by balanced accuracy") for x in lines) and lines[-2:] == ["Nothing skipped.",
                                                                                            "Results: run"]


def test_console_of_three_datasets_and_of_45_rows_fits_25_lines():
    many = [row(i, f"model-{i}", 0.95 - i / 200, backbone=f"efficientnet_lite{i % 3}", feature=["_fc:in/none",
                "_bn1/avg"][i % 2], model_path=f"runs/demo/classify/x/models/very/long/path/to/model_{i}.skops")
            for i in range(1, 46)]
    multi = [row(i, m, 0.9 - i / 50, dataset=d, model_path=f"runs/r/{d}/{m}.skops")
             for d in ("flowers", "pets", "dtd") for i, m in enumerate(("logreg", "knn", "mlp", "svm"), 1)]
    for rows in (many, multi):
        out = T.console_text(rows, [], 95.0, None)
        lines = out.splitlines()
        assert len(lines) <= 25 and max(map(len, lines)) <= T.WIDTH, out
        assert lines[0].startswith("Best")
    lines = T.console_text(multi, [], 95.0, None).splitlines()
    assert [x.split(":")[0] for x in lines if x.startswith("Best")] == ["Best on flowers", "Best on pets",
                                                                         "Best on dtd"]
    assert sum(1 for x in lines if re.match(r"(flowers|pets|dtd)\s+\d", x)) == 6  # the top 2 of each


def test_skipped_grid_states_each_reason_once():
    skipped = [{"model": m, "backbone": b, "feature": "_fc:in/none", "estimate_s": e,
                "reason": f"--budget auto: estimated {e} s beyond this feature set's {a} s (--budget none runs it)"}
               for m, e in (("mlp", 8.1), ("rf", 3.2)) for b, a in (("efficientnet_lite0", 0.3),
                                                                    ("efficientnet_lite1", 0.5))]
    skipped.append({"kind": "finetune", "backbone": "efficientnet_lite0", "model": "finetune", "feature": "finetune",
                    "reason": "--finetune auto fine-tunes on a GPU only"})
    approx = row(1, "logreg", 0.9, kind="concat", backbone="efficientnet_lite1+efficientnet_lite0",
                 params={"C": 0.1, "note": "approximated under --budget auto"},
                 members=("efficientnet_lite1 _fc:in/none", "efficientnet_lite0 _fc:in/none"))
    head, grid, notes = T.skipped_table(skipped, [approx, row(2, "logreg", 0.8)])
    assert head == ["model", "lite0", "lite1", "lite1+lite0"]  # the concatenation in its members' order
    assert grid == [["mlp", "8.1 s [1]", "8.1 s [1]", ""], ["rf", "3.2 s [1]", "3.2 s [1]", ""],
                    ["fine-tune", "skipped [2]", "", ""], ["logreg (concat)", "", "", "approx. [3]"]]
    assert notes == ["--budget auto: estimated … s beyond this feature set's … s (--budget none runs it)",
                     "--finetune auto fine-tunes on a GPU only", "approximated under --budget auto"]


def test_a_family_dropped_on_every_feature_set_is_one_row():
    one = "--budget auto: estimated {e} s, more than this feature set's whole extraction (3.0 s); the one MLP head"
    second = "--budget auto: a second {f}; estimated {e} s, beyond the 0.3 s (a third of the extraction's estimate)"
    fams = {"mlp": "MLP head", "mlp-bn": "MLP head", "extratrees": "tree ensemble"}
    members = {"MLP head": ["mlp", "mlp-bn"], "tree ensemble": ["rf", "extratrees", "hgb"]}
    skipped = [{"model": m, "backbone": b, "feature": "_fc:in/none", "estimate_s": e, "reason": why.format(e=e, f=f),
                "family": fams[m], "family_models": members[fams[m]]}
               for b in ("efficientnet_lite0", "efficientnet_lite1")
               for m, e, why, f in (("mlp", 8.1, one, ""), ("mlp-bn", 9.0, second, "MLP head"),
                                    ("extratrees", 3.2, second, "tree ensemble"))]
    skipped = [s for s in skipped if not (s["model"] == "extratrees" and "lite1" in s["backbone"])]
    head, grid, notes = T.skipped_table(skipped, [row(1, "logreg", 0.9)])
    assert head == ["model", "lite0", "lite1"]
    assert grid == [["MLP head (mlp, mlp-bn)", "8.1 s [1]", "8.1 s [1]"], ["extratrees", "3.2 s [2]", ""]]
    assert notes[0].startswith("--budget auto: estimated 8.1 s, more than") and "a second tree ensemble" in notes[1]
    assert len(notes) == 2  # the second MLP's own reason goes with its row


def test_no_rows_is_said_not_raised():
    assert T.summary_lines([], [], None, None) == ["No classifier results."]
    assert T.text_table([]).splitlines()[0].startswith("#")


@pytest.mark.parametrize("module", ["report", "driver"])
def test_table_imports_neither_report_nor_driver(module):
    import ast
    from pathlib import Path

    tree = ast.parse(Path(T.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n == module or n.startswith(module + ".")]


def test_a_long_predict_command_continues_on_a_second_line_whole():
    from pipeline import build_parser

    path = "runs/demo/classify/efficientnet_lite2___fc-in_none/models/_fc-in_none__logreg.skops"
    one, two = T.predict_command(path)
    assert one.endswith(" --model \\") and two == f"  {path}" and max(len(one), len(two)) <= T.WIDTH
    args = build_parser().parse_args(shlex.split(one.rstrip("\\") + two)[2:])
    assert (args.model, args.out, args.images) == (path, "predictions.csv", ["IMAGES"])
    assert T.predict_command("m.skops") == ["  python pipeline.py predict --model m.skops --out predictions.csv IMAGES"]
