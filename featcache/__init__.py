"""featcache: transfer learning on cached CNN features.

    from featcache import extract_features, compare
    extract_features("data/sample", "efficientnet_lite0", "lite0.h5")
    board = compare("lite0.h5")          # or compare(X, y, splits=splits) on any embeddings
    board.best.predict(X_new); board.to_pandas(); board.save("out/")

Names are exported lazily (PEP 562): importing this package loads neither torch nor
scikit-learn, and no stage imports it, so no import cycle can form.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"extract_features": "extract.api", "compare": "classify.api", "Leaderboard": "classify.leaderboard"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featcache' has no attribute {name!r}")
