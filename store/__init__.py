"""The contract between the stages: the HDF5 feature store, the split rules and the run results.

extract writes stores through this package; classify, report and finetune read them through
it, and none of them imports another stage's internals for it (tests/test_boundaries.py).
No torch and no scikit-learn here.

- :mod:`store.schema`: schema version, :class:`FeatureSpec`, :class:`StoreInfo`, :class:`Manifest`;
- :mod:`store.read` / :mod:`store.write`: the readers, and the lock and resumable writer;
- :mod:`store.files`: atomic files and sha256;
- :mod:`store.splits`: train / val / test, and the seeded holdout when a store has no val;
- :mod:`store.results`: a run's ``results.json``, its one reader and writer.
"""

from store.files import atomic_write, replace_atomically, sha256_file
from store.read import (read_blob, read_features, read_flip, read_index, read_info, read_rows, read_views,
                        resolve_feature)
from store.schema import (ERROR_DTYPE, PARTIAL_SUFFIX, SCHEMA_VERSION, FeatureSpec, Manifest, StoreError, StoreInfo,
                          partial_path, resolve_path)
from store.write import StoreWriter, ViewLayout, open_for_write, store_status, write_lock

__all__ = [
    "ERROR_DTYPE", "PARTIAL_SUFFIX", "SCHEMA_VERSION", "FeatureSpec", "Manifest", "StoreError", "StoreInfo",
    "StoreWriter", "ViewLayout", "atomic_write", "open_for_write", "partial_path", "read_blob", "read_features",
    "read_flip", "read_index", "read_info", "read_rows", "read_views", "replace_atomically", "resolve_feature",
    "resolve_path", "sha256_file", "store_status", "write_lock",
]
