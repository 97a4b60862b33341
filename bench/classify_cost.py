"""The CPU stage against re-running the backbone: the default zoo on cached features vs one epoch of
the tutorials' head training (a frozen backbone forward on every train image, batch 4)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from harness import RESULTS, say, section

from extract.backbones import create_backbone
from extract.hooks import FeatureHooks, Tap
from extract.preprocess import build_transform


def zoo_vs_backbone_epoch(store: Path, data: Path, jobs: int, epoch_images: int | None = None) -> None:
    from torchvision import datasets
    from torchvision import transforms as T

    from classify.job import run_classify

    section("5. Classifying cached features vs re-running the backbone")
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        results = run_classify(store, models=["default"], jobs=jobs, out_dir=d)
        zoo = time.perf_counter() - t
    per_model = {r.model: {"fit_s": r.fit_s, "val_acc": r.val["accuracy"]} for r in results}
    bb = create_backbone("efficientnet_lite0")
    tf = build_transform(bb.transform)
    head = torch.nn.Linear(1280, 2)
    opt = torch.optim.SGD(head.parameters(), lr=0.001, momentum=0.9)
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(data / "train"),
                                                              T.Lambda(lambda im: tf(im.convert("RGB")))),
                                         batch_size=4, shuffle=True, num_workers=0)
    seen, t = 0, time.perf_counter()
    with FeatureHooks(bb.model, [Tap.parse(bb.default_layer)], ["avg"]) as hooks:
        for x, y in loader:
            with torch.no_grad():
                f = hooks(x)["_fc:in/none"]
            loss = torch.nn.functional.cross_entropy(head(f), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
            if epoch_images and seen >= epoch_images:
                break
    epoch = (time.perf_counter() - t) * len(loader.dataset) / seen
    for name, r in per_model.items():
        say(f"  {name:11s} fit {r['fit_s']:6.2f} s  val acc {r['val_acc']:.4f}")
    n = len(per_model)
    say(f"default zoo ({n} models, sweeps included) on cached features: {zoo:.1f} s wall")
    say(f"one epoch of the tutorial head training (lite0 fp32 torch forward, batch 4): {epoch:.1f} s"
        + (f" (timed on the first {epoch_images}, scaled)" if epoch_images else ""))
    say(f"  the tutorial's 25-epoch run of ONE head: {25 * epoch:.0f} s = {25 * epoch / zoo:.1f}x the whole zoo; "
        f"{n} heads that way: {n * 25 * epoch:.0f} s = {n * 25 * epoch / zoo:.0f}x")
    RESULTS.update(zoo_s=zoo, backbone_epoch_s=epoch, per_model=per_model)
