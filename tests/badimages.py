"""A corpus of awkward and broken image files, each with what ``load_image`` should make of it.

Every case is a small builder registered in ``CASES``: it writes its file(s) into a folder and
returns an ``Expect``. Tests parametrize over ``CASES`` (names are known at collection time)
and build the files once with ``make_corpus``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Expect:
    """Either a loaded image (``size`` and pixel checks) or an ``ImageError`` (``error``)."""

    file: str  # name inside the corpus folder
    size: tuple[int, int] | None = None  # (width, height) of the loaded RGB image
    pixels: dict[tuple[int, int], RGB] = field(default_factory=dict)  # (x, y) -> expected RGB
    tol: int = 0  # max per-channel |difference| in pixel checks (JPEG is lossy)
    error: str | None = None  # substring of the ImageError reason
    load_kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments to load_image
    skip: str | None = None  # why the case cannot be checked here (e.g. running as root)


CASES: dict[str, Callable[[Path], Expect]] = {}


def case(fn: Callable[[Path], Expect]) -> Callable[[Path], Expect]:
    CASES[fn.__name__] = fn
    return fn


def make_corpus(folder: str | os.PathLike) -> dict[str, Expect]:
    """Write every case's file(s) into ``folder``; returns case name -> Expect."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: build(folder) for name, build in CASES.items()}


def jpeg_bytes(img: Image.Image, **save: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save)
    return buf.getvalue()


def textured(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A photo-like RGB test picture: smooth colour fields plus fine noise (JPEG has to work)."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    a = np.asarray(coarse).astype(np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


# --- files that must fail ------------------------------------------------------------------

@case
def zero_bytes(d: Path) -> Expect:
    (d / "empty.jpg").write_bytes(b"")
    return Expect("empty.jpg", error="empty file (0 bytes)")


@case
def truncated_jpeg(d: Path) -> Expect:
    data = jpeg_bytes(textured((320, 240)), quality=90)
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return Expect("truncated.jpg", error="truncated JPEG")


@case
def text_as_jpeg(d: Path) -> Expect:
    (d / "notes.jpg").write_text("this is not an image, just a text file with a .jpg name\n")
    return Expect("notes.jpg", error="not an image (cannot identify format)")


@case
def too_many_pixels(d: Path) -> Expect:
    Image.new("L", (5000, 5000), 90).save(d / "huge.png")  # 25 Mpx of one colour: ~25 kB on disk
    return Expect("huge.png", error="image too large: 5000x5000 = 25.0 Mpx exceeds the limit of 1.0 Mpx "
                                    "(raise it with --max-pixels)", load_kwargs={"max_pixels": 1_000_000})


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@case
def bomb_header(d: Path) -> Expect:
    """A PNG whose header claims 30000x30000 (900 Mpx, past even PIL's hard limit) over 1 row of data.

    Only the header is ever read: the default limit must refuse it before decoding, and
    PIL's own DecompressionBombError must not be what the caller sees.
    """
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 30001)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    (d / "bomb.png").write_bytes(png)
    return Expect("bomb.png", error="image too large: 30000x30000 = 900.0 Mpx exceeds the limit of 179.0 Mpx")


@case
def unreadable(d: Path) -> Expect:
    p = d / "locked.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(p)
    p.chmod(0)
    try:
        p.open("rb").close()
    except PermissionError:
        return Expect("locked.png", error="permission denied")
    return Expect("locked.png", error="permission denied",
                  skip="chmod 000 does not block reads here (running as root)")


@case
def broken_symlink(d: Path) -> Expect:
    (d / "dangling.jpg").symlink_to(d / "no-such-target.jpg")
    return Expect("dangling.jpg", error="broken symlink")


@case
def directory_named_jpg(d: Path) -> Expect:
    (d / "folder.jpg").mkdir()
    return Expect("folder.jpg", error="is a directory")


# --- files that must load, with the right pixels --------------------------------------------

@case
def gray16_png(d: Path) -> Expect:
    """A 16-bit gradient: v = 0..65535 must map to round(v / 257), not clip at 255."""
    v = np.rint(np.linspace(0, 65535, 64)).astype(np.uint16)
    Image.fromarray(np.tile(v, (8, 1))).save(d / "gray16.png")
    expect = {(x, 3): (g, g, g) for x, g in enumerate(int(round(int(val) / 257)) for val in v)}
    return Expect("gray16.png", size=(64, 8), pixels=expect)


@case
def cmyk_jpeg(d: Path) -> Expect:
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(d / "cmyk.jpg", quality=95)
    return Expect("cmyk.jpg", size=(40, 30), pixels={(20, 15): (255, 0, 0)}, tol=4)


@case
def rgba_png(d: Path) -> Expect:
    a = np.zeros((10, 20, 4), np.uint8)
    a[:, :10] = (0, 0, 255, 255)  # left half opaque blue
    a[:, 10:] = (255, 0, 0, 0)  # right half fully transparent (red underneath must not show)
    a[0, 0] = (0, 0, 0, 128)  # half-transparent black over white -> mid gray
    Image.fromarray(a, "RGBA").save(d / "rgba.png")
    return Expect("rgba.png", size=(20, 10), pixels={(5, 5): (0, 0, 255), (15, 5): (255, 255, 255),
                                                     (0, 0): (127, 127, 127)}, tol=1)


@case
def palette_transparent_png(d: Path) -> Expect:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))  # index 0 black (transparent), 1 green
    img.paste(1, (0, 0, 8, 16))
    img.save(d / "palette.png", transparency=0)
    return Expect("palette.png", size=(16, 16), pixels={(2, 2): (0, 200, 0), (12, 2): (255, 255, 255)})


@case
def gray_jpeg(d: Path) -> Expect:
    Image.new("L", (30, 20), 77).save(d / "gray.jpg")
    return Expect("gray.jpg", size=(30, 20), pixels={(15, 10): (77, 77, 77)}, tol=2)


@case
def one_bit_png(d: Path) -> Expect:
    img = Image.new("1", (8, 8), 0)
    img.paste(1, (0, 0, 4, 8))
    img.save(d / "bits.png")
    return Expect("bits.png", size=(8, 8), pixels={(1, 1): (255, 255, 255), (6, 1): (0, 0, 0)})


@case
def one_pixel_png(d: Path) -> Expect:
    Image.new("RGB", (1, 1), (12, 34, 56)).save(d / "dot.png")
    return Expect("dot.png", size=(1, 1), pixels={(0, 0): (12, 34, 56)})


MARKER = (255, 0, 0)
BACKGROUND = (0, 60, 200)


def upright_with_marker(size: tuple[int, int], marker: int) -> Image.Image:
    """Blue picture with a red square in its top-left corner: shows which way is up."""
    img = Image.new("RGB", size, BACKGROUND)
    img.paste(MARKER, (0, 0, marker, marker))
    return img


def exif_rotated_jpeg(path: Path, upright_size: tuple[int, int], marker: int) -> None:
    """Store the picture turned on its side with EXIF orientation 6 ("rotate 90 CW to view")."""
    stored = upright_with_marker(upright_size, marker).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=95, exif=exif)


@case
def exif_rotated(d: Path) -> Expect:
    exif_rotated_jpeg(d / "rotated.jpg", (60, 100), marker=16)  # stored 100x60, upright 60x100
    return Expect("rotated.jpg", size=(60, 100), tol=12,
                  pixels={(4, 4): MARKER, (55, 4): BACKGROUND, (4, 95): BACKGROUND, (55, 95): BACKGROUND})


@case
def corrupt_exif_jpeg(d: Path) -> Expect:
    """Pixels fine, EXIF block cut short: loads as stored (PIL's "Corrupt EXIF" warning silenced)."""
    Image.new("RGB", (30, 20), (0, 200, 0)).save(d / "bad_exif.jpg", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff")
    return Expect("bad_exif.jpg", size=(30, 20), pixels={(15, 10): (0, 200, 0)}, tol=3)


@case
def animated_gif(d: Path) -> Expect:
    frames = [Image.new("RGB", (24, 16), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return Expect("anim.gif", size=(24, 16), pixels={(12, 8): (250, 0, 0)}, tol=8)


@case
def animated_webp(d: Path) -> Expect:
    frames = [Image.new("RGB", (24, 16), c) for c in ((0, 0, 250), (250, 250, 0))]
    frames[0].save(d / "anim.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    return Expect("anim.webp", size=(24, 16), pixels={(12, 8): (0, 0, 250)}, tol=2)


@case
def upper_case_name(d: Path) -> Expect:
    Image.new("RGB", (5, 7), (9, 9, 9)).save(d / "SHOUT.JPEG", format="JPEG", quality=95)
    return Expect("SHOUT.JPEG", size=(5, 7), pixels={(2, 3): (9, 9, 9)}, tol=3)
