"""The torch-free decode geometry (resize + center crop, views) equals torchvision's, pixel for pixel."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from extract.images import load_image
from extract.transforms import CenterCrop, TransformSpec
from extract.views import view_transform
from tests.samples import SAMPLE

MODES = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
         "nearest": InterpolationMode.NEAREST}


def torchvision_crop(img: Image.Image, spec: TransformSpec) -> np.ndarray:
    tf = T.Compose([T.Resize(spec.resize, interpolation=MODES[spec.interpolation], antialias=True),
                    T.CenterCrop(spec.crop)])
    return np.array(tf(img))


@settings(max_examples=60, deadline=None)
@given(w=st.integers(1, 400), h=st.integers(1, 400), resize=st.integers(1, 300), crop=st.integers(1, 300),
       mode=st.sampled_from(sorted(MODES)), seed=st.integers(0, 2**31))
def test_center_crop_equals_torchvision(w, h, resize, crop, mode, seed):
    """Every shape, including upscaling, a crop larger than the resized image (zero padding) and odd offsets."""
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    spec = TransformSpec(resize, crop, interpolation=mode)
    got, ref = CenterCrop(spec)(img), torchvision_crop(img, spec)
    assert got.dtype == np.uint8 and got.shape == (crop, crop, 3) and got.flags.c_contiguous
    assert np.array_equal(got, ref)


def test_center_crop_equals_torchvision_on_real_photos():
    for spec in (TransformSpec(256, 224, interpolation="bicubic"), TransformSpec(232, 224), TransformSpec(224, 224)):
        for f in sorted(SAMPLE.glob("*/*/*.jpg"))[:12]:
            img = load_image(f)
            assert np.array_equal(CenterCrop(spec)(img), torchvision_crop(img, spec)), (f, spec)


@settings(max_examples=25, deadline=None)
@given(w=st.integers(8, 300), h=st.integers(8, 300), row=st.integers(0, 10_000), view=st.integers(0, 7),
       mode=st.sampled_from(sorted(MODES)))
def test_views_equal_torchvision_resized_crop_and_flip(w, h, row, view, mode):
    spec = TransformSpec(40, 32, interpolation=mode)
    img = Image.fromarray(np.random.default_rng(row).integers(0, 256, (h, w, 3), dtype=np.uint8))
    t = view_transform(spec, 3, view)
    (top, left, ch, cw), flip = t.params(w, h, row)
    ref = F.resized_crop(img, top, left, ch, cw, [32, 32], interpolation=MODES[mode], antialias=True)
    ref = F.hflip(ref) if flip else ref
    assert np.array_equal(view_transform(spec, 3, view, uint8=True)(img, row), np.array(ref))
    assert torch.equal(t(img, row), F.normalize(F.to_tensor(ref), list(spec.mean), list(spec.std)))


def test_transform_spec_round_trips_through_a_dict():
    spec = TransformSpec(260, 240, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bicubic")
    assert TransformSpec.from_dict(spec.to_dict()) == spec
