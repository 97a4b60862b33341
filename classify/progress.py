"""One progress bar per model (fits done / total, with tqdm's ETA), reachable from inside a fit.

The zoo opens a bar around each model; a sweep or a solver deep inside advances it through
:func:`advance` without being handed the bar. Bars go to stderr and show only on a terminal
(tqdm's ``disable=None``), so logs and CI output stay clean; ``set_enabled(False)`` (``-q``)
hides them everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_BAR: ContextVar = ContextVar("classify_progress_bar", default=None)
_ENABLED: list[bool | None] = [None]  # None: on a terminal only


def set_enabled(enabled: bool | None) -> None:
    _ENABLED[0] = enabled


def enabled() -> bool | None:
    return _ENABLED[0]


@contextmanager
def model_bar(desc: str, total: int | None = None, unit: str = "fit") -> Iterator[object]:
    from tqdm.auto import tqdm

    enabled = _ENABLED[0]
    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
               disable=None if enabled is None else not enabled)
    token = _BAR.set(bar)
    try:
        yield bar
    finally:
        _BAR.reset(token)
        bar.close()


def set_total(total: int) -> None:
    """Grow or shrink the current bar's total (a sweep learns its size when it starts)."""
    bar = _BAR.get()
    if bar is not None and bar.total != total:
        bar.total = total
        bar.refresh()


def advance(n: int = 1) -> None:
    bar = _BAR.get()
    if bar is not None:
        bar.update(n)
