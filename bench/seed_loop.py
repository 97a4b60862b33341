#!/usr/bin/env python3
"""The seed tutorials' feature export as one process, the baseline a user would time.

    python bench/seed_loop.py DATA OUT.npy [--backbone efficientnet_lite0]

ImageFolder over each split folder, DataLoader (batch 32, no workers, as the tutorial),
torch.no_grad, a forward hook on the classifier appending numpy rows to a list, np.save.
The backbone and preprocessing are the product's (same weights, same transform), so only
the loop differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tutorial_backbone(name: str):  # noqa: ANN201
    """(the product's backbone, the tutorials' torchvision transform for it, its hooked layer)."""
    from torchvision import transforms as T

    from extract.backbones import create_backbone

    bb = create_backbone(name, "DEFAULT" if name.startswith("efficientnet_lite") else "none")
    t = bb.transform
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[t.interpolation]
    tf = T.Compose([T.Resize(t.resize, interpolation=interp), T.CenterCrop(t.crop), T.ToTensor(),
                    T.Normalize(t.mean, t.std)])
    return bb, tf, dict(bb.model.named_modules())[bb.default_layer.split(":")[0]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--backbone", default="efficientnet_lite0")
    args = p.parse_args()

    import numpy as np
    import torch
    from torchvision import datasets

    bb, tf, layer = tutorial_backbone(args.backbone)
    feats: list[np.ndarray] = []
    layer.register_forward_hook(lambda m, i, o: feats.extend(x.numpy() for x in i[0]))
    splits = [d for d in sorted(args.data.iterdir()) if d.is_dir()]
    with torch.no_grad():
        for split in splits:
            loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(split), tf), batch_size=32, num_workers=0)
            for x, _ in loader:
                bb.model(x)
    np.save(args.out, np.stack(feats))
    print(f"{len(feats)} rows -> {args.out}")


if __name__ == "__main__":
    main()
