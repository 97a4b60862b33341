"""The contract between the stages: the HDF5 feature store, the split rules and the result rows.
Atomic files, errors and Ctrl-C handling are :mod:`common`'s.

extract writes stores through this package; classify, report and finetune read them through
it, and none of them imports another stage's internals for it (tests/test_boundaries.py).
No torch and no scikit-learn here.

- :mod:`store.schema`: schema version, :class:`FeatureSpec`, :class:`StoreInfo`, :class:`Manifest`;
- :mod:`store.read` / :mod:`store.write`: the readers, and the lock and resumable writer;
- :mod:`store.splits`: train / val / test, and the seeded holdout when a store has no val;
- :mod:`store.rows`: :class:`ResultRow`, one scored classifier: the row every producer writes;
- :mod:`store.results`: a run's ``results.json`` (classify's output directory has one too), its
  one reader and writer.
"""

from featcache.store.read import (
                        read_blob,
                        read_features,
                        read_flip,
                        read_index,
                        read_info,
                        read_rows,
                        read_views,
                        resolve_feature,
)
from featcache.store.schema import (
                        ERROR_DTYPE,
                        PARTIAL_SUFFIX,
                        SCHEMA_VERSION,
                        FeatureSpec,
                        Manifest,
                        StoreError,
                        StoreInfo,
                        partial_path,
                        resolve_path,
)
from featcache.store.write import StoreWriter, ViewLayout, open_for_write, store_status, write_lock

__all__ = [
    "ERROR_DTYPE", "PARTIAL_SUFFIX", "SCHEMA_VERSION", "FeatureSpec", "Manifest", "StoreError", "StoreInfo",
    "StoreWriter", "ViewLayout", "open_for_write", "partial_path", "read_blob", "read_features",
    "read_flip", "read_index", "read_info", "read_rows", "read_views", "resolve_feature",
    "resolve_path", "store_status", "write_lock",
]
