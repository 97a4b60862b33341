"""load_image over a corpus of broken and awkward files; JPEG draft decoding; list_images."""

import io
import os
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from extract.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageError, list_images, load_image
from tests.badimages import BACKGROUND, CASES, MARKER, exif_rotated_jpeg, jpeg_bytes, make_corpus, textured

# Mean |full - draft| after Resize(256)+CenterCrop(224)+ToTensor, measured: 0.0014 on the synthetic
# picture below, 0.0015-0.0030 on real photos (hymenoptera 2592x1944 and 1488x1984, and a
# 2000x1500 re-encode). The bound leaves ~3x headroom over this test's own image.
DRAFT_MEAN_ABS_DIFF = 0.004


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("badimages")
    return folder, make_corpus(folder)


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus(corpus, name):
    folder, expects = corpus
    e = expects[name]
    if e.skip:
        pytest.skip(e.skip)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning (DecompressionBomb, palette...) may escape
        if e.error is not None:
            with pytest.raises(ImageError) as info:
                load_image(folder / e.file, **e.load_kwargs)
            assert e.error in str(info.value)
            assert info.value.path == os.fspath(folder / e.file)
            return
        img = load_image(folder / e.file, **e.load_kwargs)
    assert img.mode == "RGB" and img.size == e.size
    for (x, y), want in e.pixels.items():
        got = img.getpixel((x, y))
        assert max(abs(g - w) for g, w in zip(got, want)) <= e.tol, f"pixel ({x},{y}): {got} != {want}"


def test_corpus_names_match_builders(corpus):
    assert set(corpus[1]) == set(CASES)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count open files")
def test_files_are_closed(corpus):
    folder, expects = corpus
    before = len(os.listdir("/proc/self/fd"))
    for e in expects.values():
        try:
            load_image(folder / e.file, **e.load_kwargs)
        except ImageError:
            pass
    assert len(os.listdir("/proc/self/fd")) == before


def test_pil_global_guard_never_fires(tmp_path, monkeypatch):
    """Our per-call limit decides, even when PIL's global one would warn or refuse."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "a.png", max_pixels=None).size == (40, 30)
        with pytest.raises(ImageError, match="1.2 Mpx|1,200 px"):
            load_image(tmp_path / "a.png", max_pixels=1000)


def test_permission_denied(tmp_path, monkeypatch):
    """The corpus case is skipped as root (chmod 000 does not stop root), so fake the refusal."""
    import builtins

    Image.new("RGB", (4, 4)).save(tmp_path / "locked.png")
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(tmp_path / "locked.png"):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(ImageError, match="^permission denied$"):
        load_image(tmp_path / "locked.png")


def test_pil_warnings_do_not_escape(tmp_path):
    buf = io.BytesIO()
    textured((64, 48)).save(buf, "TIFF")
    (tmp_path / "cut.tif").write_bytes(buf.getvalue()[:20])  # PIL warns "Corrupt EXIF data" on this
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError):
            load_image(tmp_path / "cut.tif")


def test_truncated_images_stay_errors():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert DEFAULT_MAX_PIXELS == 2 * 89_478_485  # where stock Pillow itself refuses


def test_corrupt_png_chunk(tmp_path):
    buf = io.BytesIO()
    textured((64, 48)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[60:80] = b"\xff" * 20  # garbage inside IDAT: bad CRC / bad zlib stream
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="PNG"):
        load_image(tmp_path / "bad.png")


def test_16bit_scaling_is_not_clipping(tmp_path):
    Image.fromarray(np.full((2, 2), 1028, np.uint16)).save(tmp_path / "dark16.png")  # 1028 / 257 = 4
    assert load_image(tmp_path / "dark16.png").getpixel((0, 0)) == (4, 4, 4)


@pytest.mark.parametrize("bad", [0, -5, True])
def test_bad_arguments_are_value_errors(tmp_path, bad):
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(tmp_path / "x.jpg", max_pixels=bad)
    with pytest.raises(ValueError, match="draft_size"):
        load_image(tmp_path / "x.jpg", draft_size=bad)


# --- JPEG draft ------------------------------------------------------------------------------

def _preprocess(img):
    from torchvision import transforms as T

    return T.Compose([T.Resize(256, antialias=True), T.CenterCrop(224), T.ToTensor()])(img)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("draft") / "big.jpg"
    path.write_bytes(jpeg_bytes(textured((2000, 1500), seed=1), quality=90))
    return path


def test_draft_decodes_smaller_but_close(big_jpeg):
    full = load_image(big_jpeg)
    draft = load_image(big_jpeg, draft_size=256)
    assert full.size == (2000, 1500)
    assert draft.size == (500, 375)  # 1500 // 256 = 5 -> scale 1/4, both sides still >= 256
    diff = (_preprocess(full) - _preprocess(draft)).abs().mean().item()
    assert diff < DRAFT_MEAN_ABS_DIFF, diff


@pytest.mark.parametrize("size,draft,expected", [
    ((2000, 1500), 224, (500, 375)),  # 1500 // 224 = 6 -> 1/4
    ((4000, 3000), 256, (500, 375)),  # 3000 // 256 = 11 -> 1/8 (the largest libjpeg offers)
    ((600, 520), 256, (300, 260)),  # 520 // 256 = 2 -> 1/2
    ((300, 200), 256, (300, 200)),  # already smaller than asked: full decode
])
def test_draft_scale_keeps_both_sides(tmp_path, size, draft, expected):
    Image.new("RGB", size, (10, 20, 30)).save(tmp_path / "j.jpg")
    img = load_image(tmp_path / "j.jpg", draft_size=draft)
    assert img.size == expected and min(img.size) >= min(draft, *size)


def test_draft_with_exif_rotation_is_upright(tmp_path):
    exif_rotated_jpeg(tmp_path / "r.jpg", (1200, 2000), marker=200)  # stored 2000x1200 on its side
    img = load_image(tmp_path / "r.jpg", draft_size=256)
    assert img.size == (300, 500) and min(img.size) >= 256  # 1200 // 256 = 4 -> 1/4, then rotated
    px = np.asarray(img).astype(int)
    assert np.abs(px[10, 10] - MARKER).max() < 16  # top-left of the upright picture
    for y, x in ((10, 290), (490, 10), (490, 290)):
        assert np.abs(px[y, x] - BACKGROUND).max() < 16


def test_draft_ignored_for_png(tmp_path):
    Image.new("RGB", (1200, 900), (5, 5, 5)).save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png", draft_size=256).size == (1200, 900)


# --- list_images -----------------------------------------------------------------------------

def test_list_images(tmp_path):
    for rel in ("b.JPG", "a.png", "Z.Jpeg", "sub/c.webp", "sub/deeper/d.TIFF", "sub2.jpg",
                ".hidden.jpg", ".cache/e.jpg", "sub/.thumbs/f.png", "notes.txt", "sub/README", "noext"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "dead.jpg").symlink_to(tmp_path / "missing.jpg")  # listed: it errors at load time
    (tmp_path / "dead.txt").symlink_to(tmp_path / "missing.txt")
    (tmp_path / "linked").symlink_to(tmp_path / "sub" / "deeper", target_is_directory=True)
    (tmp_path / "sub" / "loop").symlink_to(tmp_path / "sub", target_is_directory=True)  # must not recurse forever
    assert list_images(tmp_path) == ["Z.Jpeg", "a.png", "b.JPG", "dead.jpg", "linked/d.TIFF",
                                     "sub/c.webp", "sub/deeper/d.TIFF", "sub2.jpg"]
    assert list_images(str(tmp_path / "sub")) == ["c.webp", "deeper/d.TIFF"]


def test_list_images_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")


def test_extensions_are_lowercase_with_dot():
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"} <= IMAGE_EXTENSIONS
