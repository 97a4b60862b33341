#!/usr/bin/env python3
"""Speed and memory of both stages, printed as ratios measured side by side in one run.

    python bench/bench.py                 # hymenoptera + a 4000-image synthetic set (~10 min)
    python bench/bench.py --quick         # fewer images and repeats (~3 min)

Sections: compute ceiling (forward on random tensors + decode/transform per image, combined
into cores / (core-s forward + core-s decode)); end-to-end extraction vs that ceiling; the
tutorial-style loop as a baseline; HDF5 write share and read speed; peak RSS at N and 4N;
bf16 vs fp32 feature agreement and accuracy; the classify zoo vs re-running the backbone.
These machines are noisy: compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from extract.backbones import create_backbone  # noqa: E402
from extract.hooks import FeatureHooks, Tap  # noqa: E402
from extract.images import load_image, list_images  # noqa: E402
from extract.preprocess import build_transform  # noqa: E402
from extract.runner import ExtractConfig, extract  # noqa: E402

HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"
CORES = os.cpu_count() or 1
RESULTS: dict = {}


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(_timed(fn) for _ in range(repeats))


def best_time(fn, repeats: int) -> float:
    """A ceiling is what the hardware can do: the fastest of a few runs after two warm-ups."""
    fn()
    fn()
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- data


def synthetic_set(root: Path, n: int, seed: int = 0) -> Path:
    """JPEGs of mixed sizes with photo-like content (smooth noise), two classes, cached on disk."""
    from PIL import Image

    out = root / f"synthetic-{n}"
    if (out / ".done").exists():
        return out
    rng = np.random.default_rng(seed)
    sizes = [(320, 240), (500, 375), (640, 480), (1024, 768), (1600, 1200)]
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        split = "val" if i % 5 == 0 else "train"
        d = out / split / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{i:05d}.jpg", quality=88)
    (out / ".done").touch()
    return out


# --------------------------------------------------------------------------- 1. ceilings


def forward_rate(name: str, precision: str, batch: int, repeats: int) -> float:
    bb = create_backbone(name, "DEFAULT" if name.startswith("efficientnet_lite") else "none")
    model = bb.model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, bb.transform.crop, bb.transform.crop).contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    hooks = FeatureHooks(model, [Tap.parse(bb.default_layer)], ["avg"])
    with hooks, torch.inference_mode(), ctx:
        return batch / best_time(lambda: hooks(x), repeats + 2)


def decode_rate(data: Path, name: str, n: int, repeats: int, draft: bool = False) -> float:
    """Images/s of decode + transform on one core (what one DataLoader worker does)."""
    bb = create_backbone(name, "none")
    tf = build_transform(bb.transform)
    files = [data / p for p in list_images(data)][:n]
    size = bb.transform.resize if draft else None
    torch.set_num_threads(1)
    try:
        return len(files) / best_time(lambda: [tf(load_image(f, draft_size=size)) for f in files], repeats)
    finally:
        torch.set_num_threads(CORES)


# --------------------------------------------------------------------------- 2. end to end


def e2e(data: Path, name: str, precision: str, work: Path, **kw) -> tuple[float, float, Path]:
    """Images/s of the product's extraction, and the share of wall time spent in HDF5 writes."""
    from extract import store

    out = work / f"{name}-{precision}-{data.name}-{abs(hash(json.dumps(kw, sort_keys=True)))}.h5"
    for p in (out, store.partial_path(out)):
        p.unlink(missing_ok=True)
    real, spent = store.StoreWriter.write, [0.0]

    def timed_write(self, *a, **k):
        t = time.perf_counter()
        real(self, *a, **k)
        spent[0] += time.perf_counter() - t

    store.StoreWriter.write = timed_write
    try:
        cfg = ExtractConfig(data=str(data), backbone=name, out=str(out), precision=precision, progress=False,
                            weights="DEFAULT" if name.startswith("efficientnet_lite") else "none", **kw)
        s = extract(cfg)
    finally:
        store.StoreWriter.write = real
    return s.images_per_s, spent[0] / s.seconds, out


# --------------------------------------------------------------------------- 3. tutorial loop


def tutorial_loop(data: Path, name: str, work: Path) -> float:
    """ImageFolder + DataLoader(workers=0, batch 32) + no_grad + a hook appending numpy rows + np.save."""
    from torchvision import datasets
    from torchvision import transforms as T

    bb = create_backbone(name, "DEFAULT" if name.startswith("efficientnet_lite") else "none")
    t = bb.transform
    tf = T.Compose([T.Resize(t.resize), T.CenterCrop(t.crop), T.ToTensor(), T.Normalize(t.mean, t.std)])
    feats: list[np.ndarray] = []
    layer = dict(bb.model.named_modules())[bb.default_layer.split(":")[0]]
    handle = layer.register_forward_hook(lambda m, i, o: feats.extend(x.numpy() for x in i[0]))
    start = time.perf_counter()
    n = 0
    for split in ("train", "val"):
        loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(data / split), tf), batch_size=32,
                                             num_workers=0)
        with torch.no_grad():
            for x, _ in loader:
                bb.model(x)
                n += len(x)
    np.save(work / "tutorial.npy", np.stack(feats))
    handle.remove()
    return n / (time.perf_counter() - start)


# --------------------------------------------------------------------------- 4. memory


def peak_rss_mb(data: Path, work: Path, name: str, precision: str) -> float:
    out = work / f"rss-{data.name}.h5"
    code = (
        "import resource, sys; sys.path.insert(0, %r)\n"
        "from extract.runner import ExtractConfig, extract\n"
        "extract(ExtractConfig(data=%r, backbone=%r, out=%r, precision=%r, progress=False, overwrite=True))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    ) % (str(ROOT), str(data), name, str(out), precision)
    for p in (out, Path(str(out) + ".partial")):
        p.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(r.stdout.strip().splitlines()[-1]) / 1024


def subset(data: Path, n: int, work: Path) -> Path:
    """The first n images of a folder, as symlinks in split/class folders."""
    out = work / f"{data.name}-first{n}"
    if out.exists():
        return out
    for rel in list_images(data)[:n]:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(data / rel)
    return out


# --------------------------------------------------------------------------- 5. classify


def read_speed(work: Path, rows: int = 50_000, dim: int = 1280) -> float:
    from extract.store import FeatureSpec, Manifest, open_for_write, read_rows, write_lock

    path = work / "read-bench.h5"
    if not path.exists():
        m = Manifest("/", [f"{i}.jpg" for i in range(rows)], np.zeros(rows, np.int64), ["train"] * rows, ["a"], "x")
        with write_lock(path):
            w = open_for_write(path, m, [FeatureSpec("fc", "input", "none", dim)], cache_key="b", spec={},
                               provenance={}, default_feature="fc:in/none")
            for s in range(0, rows, 4096):
                r = np.arange(s, min(s + 4096, rows))
                w.write(r, {"fc:in/none": np.random.rand(len(r), dim).astype("f4")})
            w.finish()
    read_rows(path)  # into page cache
    seconds = median_time(lambda: read_rows(path), 3)
    return rows * dim * 4 / seconds / 1e6


def classify_vs_backbone_epoch(store: Path, data: Path, jobs: int) -> tuple[float, float, dict]:
    from classify.train import run_classify

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        results = run_classify(store, models=["default"], jobs=jobs, out_dir=d)
        zoo = time.perf_counter() - t
    per_model = {r.model: {"fit_s": r.fit_s, "val_acc": r.val["accuracy"]} for r in results}
    # One epoch of the tutorials' head training: re-run the frozen backbone on every train image.
    from torchvision import datasets
    from torchvision import transforms as T

    bb = create_backbone("efficientnet_lite0")
    tf = build_transform(bb.transform)
    head = torch.nn.Linear(1280, 2)
    opt = torch.optim.SGD(head.parameters(), lr=0.001, momentum=0.9)
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(data / "train"), T.Lambda(lambda im: tf(im.convert("RGB")))),
                                         batch_size=4, shuffle=True, num_workers=0)
    hooks = FeatureHooks(bb.model, [Tap.parse(bb.default_layer)], ["avg"])
    t = time.perf_counter()
    with hooks:
        for x, y in loader:
            with torch.no_grad():
                f = hooks(x)["_fc:in/none"]
            loss = torch.nn.functional.cross_entropy(head(f), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return zoo, time.perf_counter() - t, per_model


def bf16_agreement(fp32_store: Path, bf16_store: Path) -> dict:
    from extract.store import read_rows
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = read_rows(fp32_store), read_rows(bf16_store)
    cos = (a["X"] * b["X"]).sum(1) / (np.linalg.norm(a["X"], axis=1) * np.linalg.norm(b["X"], axis=1))
    acc = {}
    for name, d in (("fp32", a), ("bf16", b)):
        tr, va = d["split"] == "train", d["split"] == "val"
        m = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(d["X"][tr], d["y"][tr])
        acc[name] = float(m.score(d["X"][va], d["y"][va]))
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "logreg_val_acc": acc}


def ray_overhead(data: Path, work: Path) -> None:
    """Single-machine cost of --engine ray against the plain run, same images, model and precision."""
    try:
        import ray
    except ImportError:
        say("\n## Ray: not installed (pip install -r requirements-ray.txt), skipped")
        return
    from extract.ray_engine import extract_ray

    say("\n## Ray engine overhead on one machine (efficientnet_lite0 bf16, hymenoptera)")
    plain, _, _ = e2e(data, "efficientnet_lite0", "bf16", work)
    out = work / "ray-bench.h5"
    for p in (out, Path(str(out) + ".partial")):
        p.unlink(missing_ok=True)
    t = time.perf_counter()
    s = extract_ray(ExtractConfig(data=str(data), backbone="efficientnet_lite0", out=str(out), precision="bf16",
                                  progress=False), workers=CORES)
    with_start = s.rows / (time.perf_counter() - t)
    ray.shutdown()
    say(f"plain {plain:.1f} img/s; ray {s.images_per_s:.1f} img/s excluding Ray start-up, {with_start:.1f} including: "
        f"ray/plain = {s.images_per_s / plain:.2f} ({with_start / plain:.2f} with start-up)")
    RESULTS["ray"] = {"plain_img_s": plain, "ray_img_s": s.images_per_s, "ray_with_startup_img_s": with_start}


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HYMENOPTERA)
    p.add_argument("--synthetic", type=int, default=4000, help="size of the generated JPEG set (0: skip)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "featcache-bench")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer images and repeats")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args()
    if args.quick:
        args.synthetic, args.repeats = min(args.synthetic, 1000), 2
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(CORES)
    say(f"# featcache bench: {CORES} cores, torch {torch.__version__}, data {args.data}")

    say("\n## 1. Compute ceiling (batch 32, channels_last, %d threads)" % CORES)
    dec = decode_rate(args.data, "efficientnet_lite0", 120, args.repeats)
    dec_draft = decode_rate(args.data, "efficientnet_lite0", 120, args.repeats, draft=True)
    say(f"decode+transform, 1 core: {dec:.0f} img/s ({1 / dec * 1000:.1f} core-ms/img); with --draft {dec_draft:.0f} img/s")
    ceilings = {}
    for name in ("efficientnet_lite0", "resnet50"):
        for prec in ("fp32", "bf16"):
            fw = forward_rate(name, prec, 32, args.repeats)
            ceil = CORES / (CORES / fw + 1 / dec)
            ceilings[(name, prec)] = ceil
            say(f"{name:18s} {prec}: forward {fw:6.1f} img/s -> combined ceiling {ceil:6.1f} img/s")
            RESULTS[f"forward/{name}/{prec}"] = fw
            RESULTS[f"ceiling/{name}/{prec}"] = ceil

    say("\n## 2-3. End-to-end extraction vs ceiling and vs the tutorial loop (hymenoptera)")
    base = tutorial_loop(args.data, "efficientnet_lite0", args.work)
    say(f"tutorial loop (ImageFolder, workers=0, no_grad, numpy list, np.save): {base:.1f} img/s")
    stores = {}
    for name in ("efficientnet_lite0", "resnet50"):
        for prec in ("fp32", "bf16"):
            rate, write_share, out = e2e(args.data, name, prec, args.work)
            stores[(name, prec)] = out
            ratio = rate / ceilings[(name, prec)]
            say(f"{name:18s} {prec}: {rate:6.1f} img/s = {ratio:.2f} of ceiling; HDF5 writes {write_share * 100:.1f}% "
                f"of wall; {rate / base:.1f}x tutorial" if name == "efficientnet_lite0" else
                f"{name:18s} {prec}: {rate:6.1f} img/s = {ratio:.2f} of ceiling; HDF5 writes {write_share * 100:.1f}%")
            RESULTS[f"e2e/{name}/{prec}"] = {"img_s": rate, "of_ceiling": ratio, "write_share": write_share}
    RESULTS["tutorial_img_s"] = base

    say("\n## bf16 vs fp32 features (efficientnet_lite0, hymenoptera)")
    agree = bf16_agreement(stores[("efficientnet_lite0", "fp32")], stores[("efficientnet_lite0", "bf16")])
    say(f"mean cosine {agree['mean_cosine']:.4f} (min {agree['min_cosine']:.4f}); logreg val acc fp32 "
        f"{agree['logreg_val_acc']['fp32']:.4f} vs bf16 {agree['logreg_val_acc']['bf16']:.4f}")
    RESULTS["bf16"] = agree

    if args.synthetic:
        say(f"\n## Synthetic set: {args.synthetic} JPEGs, 320x240..1600x1200")
        synth = synthetic_set(args.work, args.synthetic)
        sdec = decode_rate(synth, "efficientnet_lite0", 100, args.repeats)
        sdec_d = decode_rate(synth, "efficientnet_lite0", 100, args.repeats, draft=True)
        say(f"decode+transform, 1 core: {sdec:.0f} img/s; with --draft {sdec_d:.0f} img/s")
        for prec, draft in (("bf16", False), ("bf16", True)):
            rate, share, _ = e2e(synth, "efficientnet_lite0", prec, args.work, draft=draft)
            fw = RESULTS[f"forward/efficientnet_lite0/{prec}"]
            ceil = CORES / (CORES / fw + 1 / (sdec_d if draft else sdec))
            say(f"efficientnet_lite0 {prec}{' --draft' if draft else ''}: {rate:.1f} img/s = {rate / ceil:.2f} of "
                f"ceiling {ceil:.1f}; HDF5 writes {share * 100:.1f}%")
            RESULTS[f"synthetic/{prec}/draft={draft}"] = {"img_s": rate, "of_ceiling": rate / ceil}
        n = max(100, args.synthetic // 4)
        small, big = subset(synth, n, args.work), subset(synth, 4 * n, args.work)
        r1 = peak_rss_mb(small, args.work, "efficientnet_lite0", "bf16")
        r4 = peak_rss_mb(big, args.work, "efficientnet_lite0", "bf16")
        say(f"\n## 4. Peak RSS: {n} images {r1:.0f} MB, {4 * n} images {r4:.0f} MB, ratio {r4 / r1:.3f}")
        RESULTS["rss_mb"] = {"n": n, "at_n": r1, "at_4n": r4, "ratio": r4 / r1}

    ray_overhead(args.data, args.work)

    say("\n## 5. Reading and classifying cached features")
    mbs = read_speed(args.work)
    say(f"read_rows from page cache: {mbs:.0f} MB/s")
    zoo, epoch, per_model = classify_vs_backbone_epoch(stores[("efficientnet_lite0", "fp32")], args.data, jobs=1)
    for name, r in per_model.items():
        say(f"  {name:11s} fit {r['fit_s']:6.2f} s  val acc {r['val_acc']:.4f}")
    n_heads = len(per_model)
    say(f"default zoo ({n_heads} models, sweeps included) on cached features: {zoo:.1f} s wall")
    say(f"one epoch of the tutorial head training (lite0 fp32 forward on 245 train images, batch 4): {epoch:.1f} s")
    say(f"  the tutorial's 25-epoch run of ONE head: {25 * epoch:.0f} s = {25 * epoch / zoo:.1f}x the whole zoo; "
        f"{n_heads} heads that way: {n_heads * 25 * epoch:.0f} s = {n_heads * 25 * epoch / zoo:.0f}x")
    RESULTS.update(read_mb_s=mbs, zoo_s=zoo, backbone_epoch_s=epoch, per_model=per_model)
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=2))
    say(f"\nmax RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
