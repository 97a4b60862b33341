"""What every bench section shares: timers, the printed log, the figures dict, image sets."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from extract.images import list_images  # noqa: E402

HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"
CORES = os.cpu_count() or 1
RESULTS: dict = {}
START = time.perf_counter()


def timed(fn) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_time(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    return statistics.median(timed(fn) for _ in range(repeats))


def best_time(fn, repeats: int, warmups: int = 2) -> float:  # noqa: ANN001
    """A ceiling is what the hardware can do: the fastest of a few runs after warm-ups."""
    for _ in range(warmups):
        fn()
    return min(timed(fn) for _ in range(repeats))


def say(text: str) -> None:
    print(text, flush=True)


def section(title: str) -> None:
    """A section header with the bench's elapsed wall time, to see where the minutes go."""
    say(f"\n## {title}  [{time.perf_counter() - START:.0f} s]")


def spread(values: list[float]) -> str:
    """Median and range of per-round figures, e.g. ``0.83 (0.71..0.90)``."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


WEIGHTS_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "featcache-bench-weights"


def weights_for(name: str) -> dict:
    """ExtractConfig weights options: the real ones where they ship offline (lite), elsewhere random
    weights saved once to a file (speed is the same, and a file's network can be cached like real weights)."""
    if name.startswith("efficientnet_lite"):
        return {"weights": "DEFAULT"}
    path = WEIGHTS_DIR / f"{name}-seed0.pth"
    if not path.is_file():
        import torch
        import torchvision.models as tvm

        torch.manual_seed(0)
        WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
        torch.save(tvm.get_model(name, weights=None).state_dict(), path)
    return {"weights": "file", "weights_file": str(path)}


def fresh(path: Path) -> Path:
    for p in (path, Path(str(path) + ".partial")):
        p.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- image sets


def spread_subset(data: Path, n: int, work: Path) -> Path:
    """n images taken evenly across ``data`` (so every split and class keeps its share), as symlinks."""
    files = list_images(data)
    if n >= len(files):
        return data
    out = work / f"{data.name}-spread{n}"
    if not out.exists():
        for i in range(n):
            rel = files[i * len(files) // n]
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).symlink_to(data / rel)
    return out


def repeated(data: Path, times: int, work: Path) -> Path:
    """``data`` ``times`` over (each file linked as c0_NAME, c1_NAME, ...), splits and classes kept."""
    out = work / f"{data.name}-x{times}"
    if not (out / ".done").exists():
        for rel in list_images(data):
            for k in range(times):
                dst = out / Path(rel).parent / f"c{k}_{Path(rel).name}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.is_symlink():
                    dst.symlink_to(data / rel)
        (out / ".done").touch()
    return out


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


_PIPELINE_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import pipeline
t = time.perf_counter()
code = pipeline.main({argv!r})
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(time.perf_counter() - t, hwm / 1024, code)
"""


def pipeline_in_child(argv: list[str]) -> tuple[float, float, float]:
    """One ``pipeline.py`` command in a fresh process -> (wall s, in-process s, peak RSS MB).

    The peak is the child's VmHWM, which an exec resets; ``ru_maxrss`` would carry the parent's."""
    import subprocess

    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PIPELINE_CHILD.format(root=str(ROOT), argv=list(argv))],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    in_process, peak, code = r.stdout.split()[-3:]
    if r.returncode != 0 or code != "0":
        raise SystemExit(f"pipeline.py {' '.join(argv)} failed: {r.stderr[-2000:]}")
    return wall, float(in_process), float(peak)
