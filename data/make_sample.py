#!/usr/bin/env python3
"""Derive the bundled sample from the full hymenoptera set (ants vs bees).

Takes the first N images (sorted by name) of each class in each split and
downscales them so the shorter side is 256 px: every backbone here resizes to
<= 256 before cropping, so features barely change while the sample stays a few MB.
Rerunning it gives the same files (fixed order, fixed JPEG quality).

    python data/make_sample.py [--src ../shared/datasets/hymenoptera] [--out data/sample]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image, ImageOps

PER_CLASS = {"train": 40, "val": 25}
SHORT_SIDE = 256


def main() -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=here.parent.parent / "shared" / "datasets" / "hymenoptera")
    p.add_argument("--out", type=Path, default=here / "sample")
    args = p.parse_args()
    if not args.src.is_dir():
        raise SystemExit(f"--src {args.src}: no such directory")
    if args.out.exists():
        shutil.rmtree(args.out)
    total = 0
    for split, n in PER_CLASS.items():
        for cls in ("ants", "bees"):
            files = sorted(f for f in (args.src / split / cls).iterdir() if f.suffix.lower() == ".jpg")[:n]
            dst = args.out / split / cls
            dst.mkdir(parents=True)
            for f in files:
                img = ImageOps.exif_transpose(Image.open(f)).convert("RGB")
                scale = SHORT_SIDE / min(img.size)
                if scale < 1:
                    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
                img.save(dst / f.name, quality=90)
                total += 1
    # The real set's placeholder GIF shows how a non-photo is handled: it decodes, and is reported.
    shutil.copy(args.src / "train" / "ants" / "imageNotFound.gif", args.out / "train" / "ants")
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {total + 1} images ({size / 1e6:.1f} MB) to {args.out}")


if __name__ == "__main__":
    main()
