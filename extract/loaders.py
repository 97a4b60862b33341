"""Batches of decoded images for the extraction loop: DataLoader worker processes or a thread pool.

Both yield ``collate_fn`` of consecutive slices of the dataset, in order, so the choice
changes speed, never the numbers (it is not part of the cache key). Threads work because
Pillow releases the GIL while it decodes and resizes; they skip the worker start-up and
the shared-memory hand-over of every batch, but share the main process with the forward.
Only the ``process`` loader (and pinning for a GPU) imports torch.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from extract.config import LOADERS
from extract.devices import device_type
from featcache.common.errors import BadInput

PREFETCH = 2  # batches in flight per decode thread (DataLoader's prefetch_factor counts the same way)


def check_loader(loader: str) -> None:
    if loader not in LOADERS:
        raise BadInput(f"loader {loader!r}: expected one of {', '.join(LOADERS)}")


def resolve_loader(loader: str, device: object, runtime: str = "torch") -> str:
    """``auto``: for a CPU forward on torch, inline decoding on every core; on OpenVINO, decode
    threads prefetching beside the forward; for an accelerator, worker processes that prefetch
    (it idles while the host decodes, and processes scale past the GIL).

    On the 2-core VM, torch lite0 bf16 ran at 95 img/s inline on 2 threads, 89 with one
    prefetching thread, 81 with one worker process. On OpenVINO (its streams wait on the host
    between requests, so decoding fits in beside them), 2 prefetching threads ran 1.13x (fp32)
    and 1.05x (bf16) inline's speed. bench/bench.py's levers section measures it on any machine.
    """
    check_loader(loader)
    if loader != "auto":
        return loader
    if device_type(device) != "cpu":
        return "process"
    return "thread" if runtime == "openvino" else "inline"


def default_workers(device: object, loader: str, runtime: str = "torch") -> int:
    """Decoders per loader: every core for inline decoding (it never runs beside the forward), and
    beside an OpenVINO forward."""
    cores = os.cpu_count() or 1
    if device_type(device) == "cuda":
        return min(8, cores)
    if loader == "inline" or runtime == "openvino":
        return cores
    # Beside a CPU forward a decoder competes with it for cores; one overlaps I/O with compute.
    return 1 if cores <= 4 else cores // 4


def make_loader(dataset, batch_size: int, collate_fn: Callable, loader: str, workers: int,  # noqa: ANN001
                pin_memory: bool = False):  # -> DataLoader | _ThreadedLoader
    """An iterable of ``collate_fn(batch)``; ``workers == 0`` decodes in the main thread whatever ``loader``.

    ``dataset`` is any map-style dataset (``len`` and ``[i]``), e.g. :class:`extract.rows.ImageRows`.
    """
    if loader == "thread" and workers > 0:
        return ThreadLoader(dataset, batch_size, collate_fn, workers, pin_memory)
    if loader == "inline" and workers > 0:
        return InlineLoader(dataset, batch_size, collate_fn, workers, pin_memory)
    if workers == 0 and not pin_memory:
        return InlineLoader(dataset, batch_size, collate_fn, 0)  # the main thread, without importing torch
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_fn,
                      pin_memory=pin_memory, persistent_workers=False, prefetch_factor=4 if workers else None,
                      worker_init_fn=_ignore_sigint if workers else None)


def _ignore_sigint(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop


class _ThreadedLoader:
    """What the thread-based loaders share: the dataset's batches in order, ``threads`` decoders."""

    min_threads = 1

    def __init__(self, dataset, batch_size: int, collate_fn: Callable, threads: int,  # noqa: ANN001
                 pin_memory: bool = False):
        if threads < self.min_threads:
            raise BadInput(f"threads must be >= {self.min_threads}, got {threads}")
        self.dataset, self.batch_size, self.collate_fn = dataset, batch_size, collate_fn
        self.threads, self.pin_memory = threads, pin_memory

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    @contextmanager
    def _pool(self) -> Iterator[ThreadPoolExecutor]:
        """A pool of decode threads, all warnings ignored while it lives (see :class:`ThreadLoader`)."""
        with warnings.catch_warnings(), ThreadPoolExecutor(self.threads, thread_name_prefix="decode") as pool:
            warnings.simplefilter("ignore")
            yield pool


class ThreadLoader(_ThreadedLoader):
    """Decode upcoming batches on ``threads`` threads of this process, ``PREFETCH`` per thread ahead.

    Each batch is one task (decode its items, then collate), so batches come back whole and
    in order, as from DataLoader workers. Leaving the loop early (``break``, an exception,
    Ctrl-C) cancels the batches not started and waits for those being decoded.

    ``load_image`` silences PIL's warnings with ``warnings.catch_warnings``, which swaps
    process-wide state and can leave the wrong filters behind when threads overlap; so all
    warnings are ignored while the loop runs and the caller's filters come back at its end.
    """

    def _batch(self, indices: Sequence[int]):
        return self.collate_fn([self.dataset[i] for i in indices])

    def __iter__(self) -> Iterator:
        n = len(self.dataset)
        starts = iter(range(0, n, self.batch_size))
        pending: deque[Future] = deque()
        with self._pool() as pool:
            try:
                while True:
                    for start in starts:
                        pending.append(pool.submit(self._batch, range(start, min(start + self.batch_size, n))))
                        if len(pending) >= PREFETCH * self.threads:
                            break
                    if not pending:
                        return
                    batch = pending.popleft().result()
                    yield _pinned(batch) if self.pin_memory else batch
            finally:
                for f in pending:
                    f.cancel()  # the pool's exit then waits only for the batches being decoded


class InlineLoader(_ThreadedLoader):
    """Decode each batch only when the loop asks for it, its images spread over ``threads`` threads.

    Nothing overlaps the forward: when the forward already keeps every core busy (a CPU
    device), a decoder running beside it only steals cycles from its threads, so the fastest
    schedule is all cores decoding, then all cores computing. Same batches, order and errors
    as the other loaders; warnings are handled as in :class:`ThreadLoader`. With 0 threads the
    calling thread decodes.
    """

    min_threads = 0

    def __iter__(self) -> Iterator:
        n = len(self.dataset)
        if self.threads == 0:  # the main thread decodes (what DataLoader(num_workers=0) does)
            for start in range(0, n, self.batch_size):
                yield self.collate_fn([self.dataset[i] for i in range(start, min(start + self.batch_size, n))])
            return
        with self._pool() as pool:
            for start in range(0, n, self.batch_size):
                batch = self.collate_fn(list(pool.map(self.dataset.__getitem__,
                                                      range(start, min(start + self.batch_size, n)))))
                yield _pinned(batch) if self.pin_memory else batch


def _pinned(batch):
    """Page-locked tensors for a fast, asynchronous copy to the GPU (what DataLoader's pin_memory does);
    numpy arrays become pinned tensors."""
    import numpy as np
    import torch

    return type(batch)(torch.from_numpy(x).pin_memory() if isinstance(x, np.ndarray) and x.dtype == np.uint8
                       else x.pin_memory() if isinstance(x, torch.Tensor) else x for x in batch)
