"""Decode threads vs DataLoader processes: same batches, same order, same store; only the speed differs."""

import threading
import time
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from extract.backbones import TransformSpec
from extract.loaders import PREFETCH, InlineLoader, ThreadLoader, make_loader, resolve_loader
from extract.preprocess import build_transform
from extract.rows import ImageRows, collate
from extract.runner import ExtractConfig, extract
from featcache.store import read_info, read_rows
from tests.badimages import make_corpus
from tests.samples import copy_sample

SMALL = TransformSpec(resize=40, crop=32, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class Slow(Dataset):
    """Item i is i, and early items take longest, so threads finish out of order."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.calls += 1
        time.sleep(0.002 * ((self.n - i) % 5))
        return i


def as_list(batch: list[int]) -> list[int]:
    return batch


@pytest.fixture(scope="module")
def corpus_rows(tmp_path_factory):
    """ImageRows over the awkward-file corpus (loads and errors mixed) at a small crop."""
    folder = tmp_path_factory.mktemp("corpus")
    paths = sorted(e.file for e in make_corpus(folder).values())
    return ImageRows(folder, paths, range(len(paths)), build_transform(SMALL), max_pixels=10_000_000)


@pytest.mark.parametrize("cls", [ThreadLoader, InlineLoader])
@pytest.mark.parametrize("threads", [1, 3])
def test_thread_batches_equal_dataloader_batches(corpus_rows, threads, cls):
    ref = list(DataLoader(corpus_rows, batch_size=4, shuffle=False, num_workers=0, collate_fn=collate))
    got = list(cls(corpus_rows, 4, collate, threads))
    assert len(got) == len(ref) == -(-len(corpus_rows) // 4)
    assert sum(len(e) for _, _, e in got) >= 5  # the corpus's broken files are error rows, not crashes
    for (rows, images, errors), (rows0, images0, errors0) in zip(got, ref):
        assert np.array_equal(rows, rows0) and errors == errors0
        assert (images is None and images0 is None) or torch.equal(images, images0)


@pytest.mark.parametrize("cls", [ThreadLoader, InlineLoader])
def test_order_kept_when_threads_finish_out_of_order(cls):
    got = list(cls(Slow(23), 3, as_list, threads=4))
    assert got == [list(range(s, min(s + 3, 23))) for s in range(0, 23, 3)]


def test_leaving_early_cancels_the_rest_and_joins_the_threads():
    data = Slow(400)
    for _ in ThreadLoader(data, 4, as_list, threads=2):
        break
    assert not [t for t in threading.enumerate() if t.name.startswith("decode")]
    assert data.calls <= 4 * (1 + PREFETCH * 2)  # the batch taken plus those already queued


def test_inline_loader_decodes_nothing_ahead():
    data = Slow(40)
    for i, _ in enumerate(InlineLoader(data, 4, as_list, threads=2)):
        assert data.calls == 4 * (i + 1)  # the forward never shares the cores with a decoder
        if i == 2:
            break
    assert not [t for t in threading.enumerate() if t.name.startswith("decode")]


@pytest.mark.parametrize("cls", [ThreadLoader, InlineLoader])
def test_warning_filters_come_back(corpus_rows, cls):
    before = list(warnings.filters)
    for _ in cls(corpus_rows, 2, collate, threads=3):
        pass
    assert warnings.filters == before


def test_loader_choice(corpus_rows):
    for kind in ("thread", "process", "inline"):  # 0 workers: the main thread decodes, no torch DataLoader
        main = make_loader(corpus_rows, 4, collate, kind, 0)
        assert isinstance(main, InlineLoader) and main.threads == 0
    assert isinstance(make_loader(corpus_rows, 4, collate, "process", 0, pin_memory=True), DataLoader)
    assert isinstance(make_loader(corpus_rows, 4, collate, "thread", 2), ThreadLoader)
    assert isinstance(make_loader(corpus_rows, 4, collate, "inline", 2), InlineLoader)
    assert make_loader(corpus_rows, 4, collate, "process", 2).num_workers == 2
    assert resolve_loader("auto", torch.device("cpu")) == "inline"
    assert resolve_loader("auto", torch.device("cuda")) == "process"
    assert resolve_loader("auto", "cpu") == "inline" and resolve_loader("auto", "cuda:1") == "process"
    assert resolve_loader("process", torch.device("cpu")) == "process"


@pytest.mark.parametrize("value", ["threads", "", "Process"])
def test_bad_loader_is_a_one_line_value_error(tmp_path, value):
    data = copy_sample(tmp_path / "imgs", 1)
    with pytest.raises(ValueError) as e:
        extract(ExtractConfig(data=str(data), backbone="efficientnet_lite0", out=str(tmp_path / "f.h5"),
                              loader=value, progress=False))
    assert str(e.value).startswith(f"loader {value!r}: expected one of auto, inline, thread, process")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "f.h5").exists()


def datasets(path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file by name (features, flips, views, error table...)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("views", [0, 1])
def test_thread_loader_writes_the_same_store_as_worker_processes(tmp_path, views):
    data = copy_sample(tmp_path / "imgs", 3, broken="train/bees/zz_broken.jpg")
    stores = {}
    for loader, workers in (("process", 1), ("thread", 2), ("inline", 2)):
        out = tmp_path / f"{loader}.h5"
        s = extract(ExtractConfig(data=str(data), backbone="efficientnet_lite0", out=str(out), batch_size=4,
                                  workers=workers, loader=loader, views=views, progress=False))
        assert s.status == "new" and s.rows == 13 and s.skipped == 1
        stores[loader] = out
    a, b = (read_rows(stores[k]) for k in ("process", "thread"))
    assert list(a["paths"]) == list(b["paths"]) and np.array_equal(a["y"], b["y"])
    assert np.array_equal(a["X"], b["X"])
    ia, ib = read_info(stores["process"]), read_info(stores["thread"])
    assert ia.errors == ib.errors and ia.cache_key == ib.cache_key  # the loader is not part of the key
    da = datasets(stores["process"])
    for other in ("thread", "inline"):
        db = datasets(stores[other])
        assert da.keys() == db.keys()
        for name in da:
            assert np.array_equal(da[name], db[name], equal_nan=da[name].dtype.kind == "f"), (other, name)
