"""JPEG decoders as a lever: Pillow (the product's), Pillow's draft mode, simplejpeg, PyTurboJPEG and
torchvision.io.decode_jpeg, each followed by the product's resize + center crop.

For each: decode + crop images/s on one thread, how many crops are pixel-identical to the
product's, and the features' cosine to the product's (the same network on both crops). One
not installed is skipped (none is a requirement: pip install simplejpeg "PyTurboJPEG<2").
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
from harness import RESULTS, say, section, timed
from PIL import Image

from extract.images import list_images, load_image
from extract.transforms import CenterCrop


def _decoders(spec) -> dict:  # noqa: ANN001
    """name -> (bytes, path) -> PIL RGB image, for the ones that import."""
    out = {"pillow (product)": lambda data, path: load_image(path),
           "pillow --draft": lambda data, path: load_image(path, draft_size=max(spec.resize, spec.crop))}
    try:
        import simplejpeg

        out["simplejpeg"] = lambda data, path: Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB"))
    except ImportError:
        pass
    try:
        import turbojpeg

        tj = turbojpeg.TurboJPEG()
        out["PyTurboJPEG"] = lambda data, path: Image.fromarray(tj.decode(data, pixel_format=turbojpeg.TJPF_RGB))
    except (ImportError, RuntimeError, OSError):
        pass
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        def tv(data: bytes, path: Path) -> Image.Image:
            t = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            return Image.fromarray(t.permute(1, 2, 0).numpy())

        out["torchvision.io"] = tv
    except ImportError:
        pass
    return out


def decoders(data: Path, runtime, spec, rounds: int) -> None:  # noqa: ANN001 - an open runtime, its TransformSpec
    """Every decoder timed once per round, the rounds interleaved (this VM drifts), medians reported."""
    files = [data / p for p in list_images(data) if p.lower().endswith((".jpg", ".jpeg"))]
    section(f"Decoders at identical crops: {len(files)} JPEGs of {data.name}, decode + crop on 1 thread, "
            f"{rounds} interleaved rounds")
    blobs = [f.read_bytes() for f in files]
    crop = CenterCrop(spec)
    ref_crops = np.stack([crop(load_image(f)) for f in files])
    ref = runtime(ref_crops)
    key = next(iter(ref))
    table, rates = {}, {}
    for name, decode in _decoders(spec).items():
        try:
            crops = np.stack([crop(decode(b, f)) for b, f in zip(blobs, files)])
        except Exception as e:  # noqa: BLE001 - a decoder that fails on these files is reported, not fatal
            say(f"{name:17s} fails: {type(e).__name__}: {e}")
            continue
        got = runtime(crops)[key]
        cos = (got * ref[key]).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref[key], axis=1))
        table[name] = (decode, int(sum(np.array_equal(a, b) for a, b in zip(crops, ref_crops))), float(cos.min()))
    for _ in range(max(rounds, 3)):
        for name, (decode, _, _) in table.items():
            seconds = timed(lambda: [crop(decode(b, f)) for b, f in zip(blobs, files)])  # noqa: B023 - called at once
            rates.setdefault(name, []).append(len(files) / seconds)
    base = statistics.median(rates["pillow (product)"])
    for name, (_, same, cos_min) in table.items():
        rate = statistics.median(rates[name])
        say(f"{name:17s} {rate:5.0f} img/s = {rate / base:.2f}x the product's; crops identical to the product's "
            f"{same}/{len(files)}; feature cosine min {cos_min:.6f}")
        RESULTS[f"decoder/{name}"] = {"img_s": rate, "of_product": rate / base, "identical": same, "of": len(files),
                                      "cosine_min": cos_min}
