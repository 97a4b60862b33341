"""Decode one image file into an upright RGB picture, or say in a few words why not.

A batch job over a million files meets every kind of broken one (empty, truncated,
not an image, unreadable, a dangling link, a decompression bomb). ``load_image`` turns
each of those into an ``ImageError`` with a short reason, so the run records the row
as failed and goes on; it never lets a PIL exception, warning or half-decoded image out.

A path may also name a member of an uncompressed tar shard (``SHARD.tar/train/ants/1.jpg``),
read by offset through ``store.tar_members``, imported only when such a path comes.

Only PIL, numpy and the standard library: this module must stay cheap to import in
DataLoader workers and usable without torch.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from featcache.common.errors import BadInput

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageError", "list_images", "load_image"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif",  # JPEG
    ".png", ".apng", ".gif", ".webp", ".avif", ".bmp", ".dib",
    ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
})
"""Lower-case suffixes, dot included, that Pillow decodes out of the box; matched case-insensitively."""

# Where Pillow itself refuses a file (DecompressionBombError is raised above 2 x its
# MAX_IMAGE_PIXELS of 89,478,485). Keeping its refusal point means we turn away nothing that
# stock Pillow would load, while files between 89 and 179 Mpx load without its warning.
# 179 Mpx decodes to ~537 MB of RGB: the most one worker should hold for one image.
DEFAULT_MAX_PIXELS = 178_956_970

_JPEG_FORMATS = ("JPEG", "MPO")  # MPO (multi-picture, from cameras) is a JPEG with extra frames
_WHITE = (255, 255, 255)
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageError(Exception):
    """A file that cannot become an image; ``str()`` is the short reason recorded for its row."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        super().__init__(reason)
        self.reason = reason
        self.path = None if path is None else os.fspath(path)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(root: str | os.PathLike) -> list[str]:
    """Image files under ``root`` as sorted posix paths relative to it.

    Hidden files and folders (a name starting with ``.``) are skipped. Symlinked folders are
    followed (a link back to a folder above is not, so a loop ends), and a folder reached by two
    paths is listed under both: the result depends only on the tree, not on the walk order.
    Links to missing files are kept when the name looks like an image: ``load_image`` reports
    them, so they are counted, not lost.
    """
    root = Path(root)
    found: list[str] = []

    def walk(folder: Path, prefix: str, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            st = folder.stat()
            entries = list(os.scandir(folder))
        except OSError as e:
            if not prefix:  # the root itself: the caller asked for it, so fail loudly
                raise
            warnings.warn(f"skipping unreadable folder {folder}: {e.strerror or e}", stacklevel=3)
            return
        if (st.st_dev, st.st_ino) in ancestors:  # a link back up the tree: a loop
            return
        ancestors = ancestors | {(st.st_dev, st.st_ino)}
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows links; a dangling link is not a dir
            except OSError:
                is_dir = False
            if is_dir:
                walk(Path(entry.path), f"{prefix}{entry.name}/", ancestors)
            elif _is_image_name(entry.name):
                found.append(prefix + entry.name)

    walk(root, "", frozenset())
    return sorted(found)


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} Mpx" if pixels >= 100_000 else f"{pixels:,} px"


def _check_size(size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse a bomb from its header, before a byte of pixel data is decoded."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"image too large: {w}x{h} = {_mpx(w * h)} exceeds the limit of "
                         f"{_mpx(max_pixels)} (raise it with --max-pixels)")


def _open_file(path: str | os.PathLike) -> BinaryIO:
    """Open for reading, naming the file-system problem (before PIL sees it) in the reason."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError("is a directory")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise ImageError("not a regular file")
        if st.st_size == 0:
            raise ImageError("empty file (0 bytes)")
        return open(path, "rb")
    except NotADirectoryError:  # a path through a regular file: a member of a tar shard, or a mistake
        return _open_member(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(f"broken symlink (-> {os.readlink(path)})") from None
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as e:  # a link loop, a name too long, an I/O error on the disk
        raise ImageError(f"cannot open file: {e.strerror or e}") from None


def _open_member(path: str | os.PathLike) -> BinaryIO:
    """A tar shard member's bytes (``SHARD.tar/name.jpg``), with the same reasons as a plain file's."""
    from featcache.store import (
        tar_members,  # here, not above: the store package brings h5py, which plain files never need
    )

    split = tar_members.split_member_path(path)
    if split is None:
        raise ImageError("cannot open file: Not a directory")
    shard, name = split
    try:
        data = tar_members.read_member(shard, name)
    except tar_members.MemberMissing:
        raise ImageError(f"file not found in shard {shard.name}") from None
    except PermissionError:
        raise ImageError(f"permission denied (shard {shard.name})") from None
    except OSError as e:  # not a tar (any more), truncated, rewritten under us, an I/O error
        raise ImageError(f"cannot read from shard: {e.strerror or e}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    return io.BytesIO(data)


def _decode_reason(e: BaseException, fmt: str | None) -> str:
    what = fmt or "image"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, UnidentifiedImageError):
        return "not an image (cannot identify format)"
    if isinstance(e, Image.DecompressionBombError):  # only if other code re-armed PIL's own guard
        return f"image too large for Pillow's own limit ({msg})"
    if isinstance(e, MemoryError):
        return f"out of memory decoding {what}"
    if isinstance(e, EOFError) or any(s in msg.lower() for s in ("truncated", "broken data stream")):
        return f"truncated {what}"
    return f"corrupt {what}: {msg}"


def _apply_exif_orientation(img: Image.Image) -> None:
    """Rotate to the upright view in place; unreadable EXIF leaves the pixels as stored.

    A broken EXIF block is common in camera files whose pixels are fine, so it does not
    fail the image. ``exif_transpose`` reads the tag before it transposes, so an error
    leaves the image either untouched or fully rotated, never half-done.
    """
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # noqa: BLE001 - any EXIF parser failure means "no usable orientation"
        pass


def _high_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit / int / float grayscale -> 8-bit L by scaling the full range, not clipping at 255.

    ``I;16*`` and ``I`` (16-bit PNG, TIFF, PGM) span 0..65535, mapped to round(v / 257).
    ``F`` carries no range: 0..1 is the convention for float images, so values up to 1 are
    scaled by 255, and an image reaching past 1 is taken as already 0..255.
    """
    a = np.asarray(img)
    if img.mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        a8 = np.clip(np.rint(a * scale), 0, 255)
    else:
        a = np.clip(a.astype(np.int64), 0, 65535)
        a8 = (a * 255 + 32767) // 65535  # == round(v * 255 / 65535), exact in integers
    return Image.fromarray(a8.astype(np.uint8))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on WHITE.

    White, not black: transparent areas of logos, icons and product shots are meant to show
    the page behind them, which is nearly always white, and a black fill would add hard
    edges a CNN reads as content. Simply dropping alpha is worse: the colour stored under
    fully transparent pixels is arbitrary and would show.
    """
    if img.mode in _HIGH_BIT_MODES or img.mode == "F":
        return _high_bit_to_l(img).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if img.mode == "RGB":
        return img
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def _decode(f: BinaryIO, max_pixels: int | None, draft_size: int | None) -> Image.Image:
    fmt = None
    try:
        img = Image.open(f)
        fmt = img.format
        _check_size(img.size, max_pixels)
        if draft_size is not None and fmt in _JPEG_FORMATS:
            img.draft("RGB", (draft_size, draft_size))
        img.load()  # decode now, inside the try, so truncation is reported for this file
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(_decode_reason(e, fmt)) from e
    _apply_exif_orientation(img)
    try:
        return _to_rgb(img)
    except Exception as e:  # noqa: BLE001 - an exotic mode PIL cannot convert
        raise ImageError(f"cannot convert {fmt or 'image'} mode {img.mode} to RGB: {e}") from e


def load_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` into an upright, fully loaded RGB image; the file is closed on return.

    ``max_pixels`` refuses images whose header declares more pixels (``None``: no limit); it
    replaces PIL's global guard, which is switched off here because it warns once per file
    and cannot be set per call. PIL's warnings about odd files are silenced. Animated files
    give their first frame.

    ``draft_size`` (JPEG only) lets libjpeg decode at 1/2, 1/4 or 1/8 scale: Pillow picks the
    largest power-of-two factor that keeps *both* sides >= ``draft_size``. Pass the
    transform's resize size so the shorter side still reaches it and the resize only ever
    shrinks. The request is square, so the choice does not depend on EXIF rotation, which
    is applied after the (reduced) decode. Other formats ignore it.

    Raises ``ImageError`` with a short reason for every unreadable file.
    """
    if max_pixels is not None and (isinstance(max_pixels, bool) or max_pixels < 1):
        raise BadInput(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    if draft_size is not None and (isinstance(draft_size, bool) or draft_size < 1):
        raise BadInput(f"draft_size must be a positive int or None, got {draft_size!r}")
    Image.MAX_IMAGE_PIXELS = None  # our own check replaces it (see docstring)
    try:
        with _open_file(path) as f, warnings.catch_warnings():
            # PIL warns about odd files ("Corrupt EXIF data", "Truncated File Read"...), each with
            # its own text, so a million-file run would print thousands; the row's outcome (an
            # image or an ImageError) is the record. (catch_warnings is process-wide state:
            # fine in DataLoader worker processes, racy if several threads decode at once;
            # extract.loaders.ThreadLoader holds one around all its threads for that reason.)
            warnings.simplefilter("ignore")
            return _decode(f, max_pixels, draft_size)
    except ImageError as e:
        e.path = os.fspath(path)
        raise
