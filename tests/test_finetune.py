"""Fine-tuning on a tiny network: freezing, LR groups, resume, warm start, views, report rows.

A random-init resnet18 (saved once as a weights file, so every build is the same network; a
random mobilenet_v3 gives all-zero features) at a 32 px crop, on 12 generated train and 6 val
images: a whole run takes about a second.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import featcache.finetune.train as ft
from extract.backbones import TransformSpec, create_backbone
from extract.views import view_transform
from featcache.finetune.checkpoint import load_finetuned
from featcache.finetune.config import FinetuneConfig, check_config
from featcache.finetune.data import eval_loader, train_loader
from featcache.finetune.loop import predict, train_epoch
from featcache.finetune.model import find_head, list_blocks, replace_head, set_train_mode

SMALL = TransformSpec(resize=36, crop=32, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
BACKBONE = "resnet18"


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine two spinning threads made a 4 s test take 40 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data dir, weights file): two colour classes, train 6 + val 3 images each."""
    root = tmp_path_factory.mktemp("ft")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for name, colour in (("ants", (200, 60, 40)), ("bees", (40, 60, 200))):
            d = root / "data" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(colour, 50, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.png")
    torch.manual_seed(0)
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), root / "w.pth")
    return root / "data", root / "w.pth"


def small_backbone(name: str, weights: str = "DEFAULT", weights_file: str | None = None):
    return dataclasses.replace(create_backbone(name, weights, weights_file), transform=SMALL)


@pytest.fixture
def small(monkeypatch):
    """Every backbone fine-tuning builds gets the 32 px transform."""
    monkeypatch.setattr(ft, "create_backbone", small_backbone)


def config(tiny, out, **kw) -> FinetuneConfig:
    data, weights = tiny
    base = dict(data=str(data), backbone=BACKBONE, out=str(out), weights_file=str(weights), epochs_head=2,
                epochs=2, batch_size=4, workers=0)
    return FinetuneConfig(**{**base, **kw})


def test_views_are_deterministic_and_differ():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    a, b = view_transform(SMALL, 7, 0), view_transform(SMALL, 7, 0)
    assert torch.equal(a(img, 3), b(img, 3)) and a(img, 3).shape == (3, 32, 32)
    assert not torch.equal(a(img, 3), view_transform(SMALL, 7, 1)(img, 3))  # another view
    assert not torch.equal(a(img, 3), view_transform(SMALL, 8, 0)(img, 3))  # another seed
    boxes = {view_transform(SMALL, 7, v).params(80, 60, 3) for v in range(20)}
    assert len(boxes) == 20  # every view its own crop
    assert a.params(80, 60, 3) != a.params(80, 60, 4)  # and every row
    with pytest.raises(ValueError, match="view -1"):
        view_transform(SMALL, 0, -1)


def test_head_replacement_and_blocks():
    model = create_backbone("mobilenet_v3_small", weights="none").model  # a head inside a Sequential
    site = find_head(model, "classifier.3:in")
    head = replace_head(model, site, 3)
    assert model.classifier[3] is head and (head.in_features, head.out_features) == (1024, 3)
    names = [n for n, _ in list_blocks(model, site)]
    assert names[0] == "features.0" and names[-2:] == ["features.12", "classifier.0"]
    with pytest.raises(ValueError, match="not the input of a classifier"):
        find_head(model, "features")


def test_stage1_freezes_everything_but_the_head(tiny, small, tmp_path):
    job = ft.prepare(config(tiny, tmp_path))
    optimizer, _ = ft.setup_stage(job, 1)
    head = job.model.fc
    before = {k: v.clone() for k, v in job.model.state_dict().items()}  # BN running stats included
    loader = train_loader(job.splits, SMALL, epoch=1, seed=0, batch_size=4, workers=0, scale=(0.08, 1.0))
    train_epoch(job.model, loader, job.labels_of, optimizer, job.device, bad=set(), paths=[])
    frozen = [(n, p) for n, p in job.model.named_parameters() if not n.startswith("fc.")]
    assert all(p.grad is None and not p.requires_grad for _, p in frozen)
    after = job.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["fc.bias", "fc.weight"]
    assert head.weight.grad is not None


@pytest.mark.parametrize("unfreeze", ["2", "all"])
def test_stage2_discriminative_learning_rates(tiny, small, tmp_path, unfreeze):
    cfg = config(tiny, tmp_path, unfreeze=unfreeze, lr=0.05, stage2_lr=0.02, backbone_lr_factor=0.25)
    job = ft.prepare(cfg)
    optimizer, _ = ft.setup_stage(job, 2)
    head_ids = {id(p) for p in job.model.fc.parameters()}
    blocks = list_blocks(job.model, job.site)
    chosen = blocks if unfreeze == "all" else blocks[-2:]
    body_ids = {id(p) for _, ps in chosen for p in ps}
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == pytest.approx(0.02) and {id(p) for p in groups["head"]["params"]} == head_ids
    assert groups["backbone"]["lr"] == pytest.approx(0.005)
    assert {id(p) for p in groups["backbone"]["params"]} == body_ids
    trainable = {id(p) for p in job.model.parameters() if p.requires_grad}
    assert trainable == head_ids | body_ids
    assert [n for n, _ in chosen][-2:] == ["layer4.0", "layer4.1"]
    set_train_mode(job.model, train_bn=True)  # frozen blocks (their BatchNorm included) stay in eval mode
    assert job.model.bn1.training is (unfreeze == "all") and job.model.layer3[1].bn2.training is (unfreeze == "all")
    assert job.model.layer4[1].bn2.training and job.model.layer4[1].training and job.model.training
    set_train_mode(job.model)  # the default: every BatchNorm keeps its running statistics
    assert not any(m.training for m in job.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert job.model.layer4[1].training


def _final_state(out) -> dict:
    return torch.load(out / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("stop_after", [2, 3])  # the stage boundary, and inside stage 2
def test_resume_continues_like_an_uninterrupted_run(tiny, small, tmp_path, stop_after):
    kw = dict(schedule="step", step_size=1, optimizer="sgd")
    full: list[dict] = []
    ft.finetune(config(tiny, tmp_path / "a", **kw), on_epoch_end=full.append)

    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        if record["epoch"] == stop_after:
            raise Stop

    with pytest.raises(Stop):
        ft.finetune(config(tiny, tmp_path / "b", **kw), on_epoch_end=stop)
    with pytest.raises(ValueError, match="pass --resume"):
        ft.finetune(config(tiny, tmp_path / "b", **kw))
    with pytest.raises(ValueError, match="made with epochs=2"):
        ft.finetune(config(tiny, tmp_path / "b", resume=True, **{**kw, "epochs": 3}))
    resumed: list[dict] = []
    result = ft.finetune(config(tiny, tmp_path / "b", resume=True, **kw), on_epoch_end=resumed.append)
    assert [r["epoch"] for r in resumed] == list(range(stop_after + 1, 5))
    later = [r for r in full if r["epoch"] > stop_after]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in later]  # the schedule went on, not restarted
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in later]
    a, b = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    def timeless(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(json.dumps(history))]

    assert timeless(result.extra["history"]) == timeless(full)  # the history survived the checkpoint


def test_linear_weights_fold_scaler_binary_and_multiclass():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from featcache.finetune.results import softmax
    from featcache.finetune.warmstart import linear_weights

    rng = np.random.default_rng(0)
    X = rng.normal(3, 2, (60, 5)) * np.array([1, 10, 0.1, 1, 5])
    for k in (2, 3):
        y = np.arange(60) % k
        pipe = Pipeline([("standardize", StandardScaler()), ("clf", LogisticRegression(C=0.5))]).fit(X + y[:, None], y)
        W, b = linear_weights(pipe)
        assert W.shape == (k, 5)
        np.testing.assert_allclose(softmax(X @ W.T + b), pipe.predict_proba(X), atol=1e-10)


def test_warm_start_head_reproduces_the_probe(tiny, small, tmp_path):
    from classify.job import run_classify
    from classify.persist import load_model
    from extract.runner import ExtractConfig, extract
    from featcache.store import read_rows

    data, weights = tiny
    backbone = small_backbone(BACKBONE, weights_file=str(weights))
    store = tmp_path / "f.h5"
    extract(ExtractConfig(data=str(data), backbone=BACKBONE, out=str(store), weights_file=str(weights),
                          workers=0, progress=False), backbone=backbone)
    [res] = run_classify(store, models=["logreg"], out_dir=tmp_path / "cls", final_fit="train", select="cv")
    saved = load_model(res.model_path)
    assert saved.fitted_on == "train"
    rows = read_rows(store, feature=saved.feature)
    want = saved.model.predict_proba(rows["X"])
    assert np.ptp(want[:, 1]) > 0.1  # the probe tells images apart: the comparison means something

    job = ft.prepare(config(tiny, tmp_path / "ft", warm_start=res.model_path))
    head = job.model.fc.eval()
    with torch.no_grad():
        got = torch.softmax(head(torch.as_tensor(rows["X"])).double(), 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)  # the head itself: exact up to float32
    loader = eval_loader(job.splits, np.arange(len(rows["X"])), SMALL, batch_size=8, workers=0)
    outputs = predict(job.model, loader, job.labels_of, job.device, bad=set(), paths=[])
    from featcache.finetune.results import softmax

    np.testing.assert_allclose(softmax(outputs.logits), want, atol=1e-4)  # the whole network on the images

    # A probe refitted on train+val (the run's default) saw val, by which the fine-tune keeps its best
    # epoch: the warm start fits the same configuration again on train alone.
    [refit] = run_classify(store, models=["logreg"], out_dir=tmp_path / "cls2", final_fit="train+val", select="cv")
    assert load_model(refit.model_path).fitted_on == "train+val"
    from featcache.finetune.warmstart import load_warm_start

    W, b = load_warm_start(refit.model_path, job.backbone, saved.class_names)
    train_only = load_model(res.model_path).model  # same C (same folds, same seed), fitted on train
    assert refit.params == res.params
    from featcache.finetune.warmstart import linear_weights

    def gap(a: tuple, b: tuple) -> float:  # the weights' relative difference (probabilities saturate here)
        return max(np.abs(x - y).max() / np.abs(y).max() for x, y in zip(a, b))

    want_w = linear_weights(train_only)
    from classify.features import load_features
    from classify.selection import frozen

    split = load_features(store)
    expect = frozen(load_model(refit.model_path).model).fit(split.train.X, split.train.y)
    assert gap((W, b), linear_weights(expect)) < 1e-6  # its chosen C, fitted on train's rows alone
    # nearer the train-only probe than the model that saw val (C=3162 on separable colours: not converged)
    assert gap((W, b), want_w) < 0.5 * gap(linear_weights(load_model(refit.model_path).model), want_w)

    other = {**saved.spec, "weights": "IMAGENET1K_V1"}
    from featcache.finetune.warmstart import check_spec

    with pytest.raises(ValueError, match="weights 'IMAGENET1K_V1'"):
        check_spec(other, saved.feature, job.backbone, "m.joblib")


def test_run_dir_rows_reach_the_report_and_tensorboard(tiny, small, tmp_path):
    from featcache.report.build import excerpt
    from featcache.report.results import load_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"config": {}, "extraction": [], "results": []}))
    cfg = config(tiny, tmp_path / "ft", epochs_head=1, epochs=1, unfreeze="3", run_dir=str(run_dir),
                 tensorboard=str(tmp_path / "tb"))
    result = ft.finetune(cfg)
    ft.finetune(dataclasses.replace(cfg, resume=True))  # a rerun of the same --out replaces its row
    run = load_run(run_dir)
    [entry] = run.rows
    assert (entry.model, entry.feature, entry.backbone) == ("finetune-last3", "finetune", BACKBONE)
    assert entry.val["accuracy"] == result.val["accuracy"] and entry.val["n"] == 6
    assert entry.fit_s > 0 and set(entry.val) >= {"balanced_accuracy", "macro_f1", "log_loss", "confusion_matrix"}
    assert all(m["path"].startswith(str(tiny[0])) for m in entry.val["misclassified"])
    assert "finetune-last3" in excerpt(run_dir)  # the leaderboard `pipeline.py report` prints
    model, meta = load_finetuned(result.model_path)  # best.pt is usable on its own
    saved = torch.load(result.model_path, weights_only=True)["model"]
    assert meta["class_names"] == ["ants", "bees"] and torch.equal(model.fc.weight, saved["fc.weight"])
    from featcache.driver.predict import predict as predict_images  # `pipeline.py predict --model best.pt`

    (tiny[0] / "val" / "broken.png").write_bytes(b"not a png")
    got = predict_images(result.model_path, [str(tiny[0] / "val")], str(tmp_path / "p.csv"))
    (tiny[0] / "val" / "broken.png").unlink()
    assert got["rows"] == 6 and got["errors"] == 1
    truth = [Path(p).parts[-2] for p in got["paths"]]
    hits = np.mean([p == t for p, t in zip(got["predicted"], truth)])
    assert hits == pytest.approx(entry.val["accuracy"])  # the network as val scored it, on the same pixels
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "path,predicted,p_ants,p_bees,error" and lines[-1].startswith("broken.png,")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr/head", "lr/backbone"} <= tags
    if entry.val["misclassified"]:
        assert "val/misclassified_at_best" in events.Tags()["images"]


def test_cli_builds_the_config():
    from featcache.finetune.cli import config_from_args
    from pipeline import build_parser

    args = build_parser().parse_args(["finetune", "--data", "d", "--backbone", BACKBONE, "--out", "o",
                                      "--unfreeze", "2", "--epochs", "1", "--optimizer", "adamw",
                                      "--schedule", "cosine", "--run-dir", "r", "--resume"])
    cfg = config_from_args(args)
    assert (cfg.unfreeze, cfg.epochs, cfg.optimizer, cfg.schedule, cfg.run_dir, cfg.resume) == \
        ("2", 1, "adamw", "cosine", "r", True)
    assert cfg.head_epochs == 5 and cfg.head_lr == 1e-3 and cfg.model_name == "finetune-last2"
    with pytest.raises(ValueError, match="^unfreeze 'some': expected 'all' or a number of blocks >= 1$"):
        check_config(dataclasses.replace(cfg, unfreeze="some"))
