"""What every image source shares: the split names and the error a source raises.

``extract.sources`` (folders, CSVs, file lists) and ``extract.tarsource`` (webdataset tar shards)
both import these; ``sources`` also imports ``tarsource`` (``build_manifest`` picks the kind),
so they live below both rather than in either. ``extract.sources`` re-exports them.
"""

from __future__ import annotations

from featcache.common.errors import BadInput

SPLITS = ("train", "val", "test")


class SourceError(BadInput):
    """A data source that cannot be read as asked; the message names the file or folder."""
