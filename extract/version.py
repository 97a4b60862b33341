"""The tool's version, in a module of its own that imports nothing.

Every module that records the version (store provenance, the model cache's keys) imports it
from here, so none of them imports the ``extract`` package's ``__init__`` (whose lazy
``extract_features`` leads back to the runner). ``pyproject.toml`` reads the literal below
without importing anything; ``extract.__version__`` re-exports it.
"""

__version__ = "0.2.0"
