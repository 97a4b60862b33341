"""Stage 1: frozen backbones, forward hooks and pooled features streamed to HDF5.

Python API: :func:`extract_features` (``extract.api``). Importing this package is cheap: torch loads only with the modules that need it
(``backbones``, ``hooks``, ``runner``); ``store`` and ``sources`` use numpy and h5py.
"""

from extract.version import __version__  # a leaf module: what the other modules import


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: the API loads torch only when used
    if name == "extract_features":
        from extract.api import extract_features

        return extract_features
    raise AttributeError(f"module 'extract' has no attribute {name!r}")


__all__ = ["__version__", "extract_features"]
