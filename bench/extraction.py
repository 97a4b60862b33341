"""Extraction in process: each runtime's forward and the decode, the ceiling they make, and the e2e.

The ceiling is what the cores could do doing nothing but decode and forward:
cores / (core-seconds of forward + core-seconds of decode) per image. The forward is the
product's runtime on random uint8 crops (batch 32, every core; normalization included, on
torch as on OpenVINO, whose graph holds it), the decode is the product's decode + crop on one
thread. Forward, decode and e2e of every setting are measured back to back in each round, so
the machine's drift hits both sides of a ratio alike; medians over rounds are reported.
"""

from __future__ import annotations

import contextlib
import statistics
from pathlib import Path

import numpy as np
from harness import CORES, RESULTS, best_time, fresh, say, section, spread, weights_for

from extract.images import list_images, load_image
from extract.runner import ExtractConfig, extract, plan
from extract.runtime import open_runtime
from extract.transforms import CenterCrop

MODELS = ("efficientnet_lite0", "resnet50")
SETTINGS = (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
INT8_MODELS = ("efficientnet_lite0",)  # quantizing resnet50 on 300 images costs minutes on 2 cores
E2E_REPEATS = 2  # end-to-end extractions per setting and round; the fastest counts, as for the ceilings
_RUNTIMES: dict = {}
_STACK = contextlib.ExitStack()


def settings_for(name: str, precisions_ok: set[str]) -> list[tuple[str, str]]:
    return [(r, p) for r, p in SETTINGS if p in precisions_ok and (p != "int8" or name in INT8_MODELS)]


def config(data: Path, name: str, runtime: str, precision: str, out: Path, **kw) -> ExtractConfig:
    return ExtractConfig(data=str(data), backbone=name, out=str(out), runtime=runtime, precision=precision,
                         progress=False, **weights_for(name), **kw)


def runtime_for(data: Path, name: str, runtime: str, precision: str, work: Path):  # noqa: ANN201
    """One open runtime per setting for the whole bench (as a job holds one), on ``data``'s calibration."""
    key = (name, runtime, precision)
    if key not in _RUNTIMES:
        p = plan(config(data, name, runtime, precision, work / "unused.h5"))
        _RUNTIMES[key] = (_STACK.enter_context(open_runtime(p)).runtime, p.facts.transform)
    return _RUNTIMES[key]


def forward_rate(data: Path, name: str, runtime: str, precision: str, work: Path, repeats: int,
                 warmups: int = 2, batch: int = 32) -> float:
    rt, spec = runtime_for(data, name, runtime, precision, work)
    u = np.random.default_rng(0).integers(0, 256, (batch, spec.crop, spec.crop, 3), dtype=np.uint8)
    return batch / best_time(lambda: rt(u), repeats + 2, warmups)


def decode_rate(data: Path, name: str, work: Path, repeats: int, warmups: int = 2, n: int | None = None,
                draft: bool = False) -> float:
    """Images/s of the product's decode + center crop on one core (the very images the e2e reads)."""
    _, spec = runtime_for(data, name, "torch", "fp32", work)
    crop = CenterCrop(spec)
    files = [data / p for p in list_images(data)][:n]
    size = max(spec.resize, spec.crop) if draft else None
    return len(files) / best_time(lambda: [crop(load_image(f, draft_size=size)) for f in files], repeats, warmups)


def decode_rate_all_cores(data: Path, name: str, work: Path, repeats: int, warmups: int = 1) -> float:
    """Images/s of decode + crop on every core at once (threads, batches of 32, as the inline loader)."""
    from concurrent.futures import ThreadPoolExecutor

    _, spec = runtime_for(data, name, "torch", "fp32", work)
    crop = CenterCrop(spec)
    files = [data / p for p in list_images(data)]
    with ThreadPoolExecutor(CORES) as pool:
        def work_() -> None:
            for i in range(0, len(files), 32):
                list(pool.map(lambda f: crop(load_image(f)), files[i:i + 32]))

        return len(files) / best_time(work_, repeats, warmups)


def ceiling(forward_img_s: float, decode_img_s: float) -> float:
    """cores / (core-s forward + core-s decode per image); the forward already runs on every core."""
    return CORES / (CORES / forward_img_s + 1 / decode_img_s)


def e2e(data: Path, name: str, runtime: str, precision: str, work: Path, **kw) -> tuple[float, Path]:
    """Images/s of the product's extraction into a fresh store (best of E2E_REPEATS)."""
    out = work / f"{name}-{runtime}-{precision}-{data.name}.h5"
    best = 0.0
    for _ in range(E2E_REPEATS):
        s = extract(config(data, name, runtime, precision, fresh(out), **kw))
        best = max(best, s.images_per_s)
    return best, out


def cold_start(data: Path, work: Path, precisions_ok: set[str]) -> None:
    """First extraction of each setting: conversion and (int8) quantization happen here, once."""
    from extract import costs

    section("First run of each setting (fills the model cache: OpenVINO conversion, int8 quantization)")
    for name in MODELS:
        for runtime, precision in settings_for(name, precisions_ok):
            costs.reset()
            s = extract(config(data, name, runtime, precision, fresh(work / "cold.h5")))
            spent = {k: v for k, v in costs.snapshot().items() if v >= 0.05}
            say(f"{name:18s} {runtime:8s} {precision}: {s.seconds:5.1f} s for {s.rows} images; "
                + ", ".join(f"{k} {v:.1f} s" for k, v in spent.items()))
            RESULTS[f"cold/{name}/{runtime}/{precision}"] = {"seconds": s.seconds, "costs": spent}


def one_round(data: Path, work: Path, repeats: int, warmups: int, precisions_ok: set[str]) -> dict:
    got = {}
    for name in MODELS:
        dec = decode_rate(data, name, work, repeats, warmups)
        dec_all = decode_rate_all_cores(data, name, work, repeats)
        for runtime, precision in settings_for(name, precisions_ok):
            fw = forward_rate(data, name, runtime, precision, work, repeats, warmups)
            rate, store = e2e(data, name, runtime, precision, work)
            inline = 1 / (1 / fw + 1 / dec_all)  # decode on all cores, then forward on all cores: the inline loader
            got[(name, runtime, precision)] = {"forward": fw, "decode": dec, "ceiling": ceiling(fw, dec), "e2e": rate,
                                               "of_ceiling": rate / ceiling(fw, dec), "decode_all_cores": dec_all,
                                               "of_inline_bound": rate / inline, "store": store}
    for (name, runtime, precision), m in got.items():
        ref = got.get((name, "torch", precision))
        if runtime == "openvino" and ref:
            m["over_torch"] = m["e2e"] / ref["e2e"]
    return got


def runtimes_side_by_side(data: Path, work: Path, n_rounds: int, repeats: int, warmups: int,
                          precisions_ok: set[str]) -> dict:
    """Sections 1-2; returns the last round's stores by (model, runtime, precision)."""
    section(f"1. Runtimes side by side: forward, decode, ceiling and e2e, {n_rounds} rounds on "
            f"{len(list_images(data))} images of {data.name}")
    say(f"ceiling = {CORES} cores / (core-s forward + core-s decode per image); forward = the runtime on random uint8 "
        f"crops (batch 32, {CORES} threads, normalization included); decode = decode + center crop on 1 thread. "
        f"The ceiling assumes decoding scales perfectly over the cores; the last column divides by what decoding "
        f"on {CORES} threads really reaches, then the forward (the inline loader's schedule)")
    rounds = []
    for r in range(1, n_rounds + 1):
        rounds.append(one_round(data, work, repeats, warmups, precisions_ok))
        say(f"round {r} e2e/ceiling: " + "; ".join(f"{n.split('_')[-1]} {rt} {p} {m['e2e']:.0f}/{m['ceiling']:.0f}"
                                                   for (n, rt, p), m in rounds[-1].items()))
    say(f"\nmedians over {n_rounds} rounds (ratios: median of per-round ratios, min..max):")
    say(f"{'model':18s} {'runtime':8s} {'prec':5s} {'forward':>8s} {'decode/core':>11s} {'ceiling':>8s} {'e2e':>6s}  "
        f"{'e2e/ceiling':17s} {'OpenVINO/torch e2e':18s}  e2e/(forward then decode on {CORES} cores, measured)")
    for key in rounds[0]:
        name, runtime, precision = key
        per = {f: [r[key][f] for r in rounds] for f in rounds[0][key] if f != "store"}
        med = {f: statistics.median(v) for f, v in per.items()}
        over = spread(per["over_torch"]) if "over_torch" in per else "-"
        say(f"{name:18s} {runtime:8s} {precision:5s} {med['forward']:8.1f} {med['decode']:11.0f} {med['ceiling']:8.1f} "
            f"{med['e2e']:6.1f}  {spread(per['of_ceiling']):17s} {over:18s}  {spread(per['of_inline_bound'])}")
        RESULTS[f"e2e/{name}/{runtime}/{precision}"] = {
            **{k: v for k, v in med.items()}, "of_ceiling_range": [min(per["of_ceiling"]), max(per["of_ceiling"])],
            "rounds": [dict(zip(per, v)) for v in zip(*per.values())]}
    for name in MODELS:
        for precision in ("fp32", "bf16"):
            k = f"e2e/{name}/openvino/{precision}"
            if k in RESULTS and "over_torch" in RESULTS[k]:
                say(f"target: {name} OpenVINO e2e >= 1.5x torch at {precision}: {RESULTS[k]['over_torch']:.2f}x; "
                    f"e2e >= 0.85 of its ceiling: {RESULTS[k]['of_ceiling']:.2f}")
    return {k: m["store"] for k, m in rounds[-1].items()}


def loader_levers(data: Path, work: Path, n_rounds: int) -> None:
    """--loader/--workers on the default runtime, as ratios to the default within each round."""
    from extract.devices import resolve_runtime
    from extract.loaders import default_workers, resolve_loader

    runtime = resolve_runtime("auto", "cpu")
    kind = resolve_loader("auto", "cpu", runtime)
    default = (kind, default_workers("cpu", kind, runtime))
    levers = list(dict.fromkeys([default, ("inline", 2), ("thread", 1), ("thread", 2), ("process", 1)]))
    section(f"Decode levers on {runtime}: lite0 e2e by --loader/--workers, {n_rounds} rounds; ratios to the default "
            f"(--loader {default[0]} --workers {default[1]}) within each round")
    for precision in ("fp32", "bf16"):
        rounds = [{s: e2e(data, MODELS[0], runtime, precision, work, loader=s[0], workers=s[1])[0] for s in levers}
                  for _ in range(n_rounds)]
        for s in levers:
            rates = [r[s] for r in rounds]
            ratios = [r[s] / r[default] for r in rounds]
            say(f"{runtime} {precision} --loader {s[0]:7s} --workers {s[1]}: {statistics.median(rates):5.1f} img/s = "
                f"{spread(ratios)}x default" + (" (the default)" if s == default else ""))
            RESULTS[f"lever/{runtime}/{precision}/{s[0]}/{s[1]}"] = {"img_s": statistics.median(rates),
                                                                    "of_default": statistics.median(ratios)}
