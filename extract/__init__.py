"""Stage 1: frozen backbones, forward hooks and pooled features streamed to HDF5.

Importing this package is cheap: torch loads only with the modules that need it
(``backbones``, ``hooks``, ``runner``); ``store`` and ``sources`` use numpy and h5py.
"""

__version__ = "0.2.0"
