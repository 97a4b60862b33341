"""The store's own failures; every one names the file. Exit codes and the errors every stage
shares (a full disk, not enough memory, :class:`~common.errors.BadInput`) are in :mod:`common.errors`."""

from __future__ import annotations

from featcache.common.errors import BadInput


class StoreError(BadInput):
    """A store that cannot be used as asked; the message names the file."""


class StoreUnreadable(StoreError):
    """HDF5 could not open the file (truncated, not HDF5, or caught mid-write when unfinished)."""


class StoreCorrupted(StoreError):
    """A store whose bytes on disk fail their checksum or cannot be read."""
