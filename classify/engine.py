"""Where sweeps run: this process's joblib workers, or a Ray cluster through joblib's Ray backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from featcache.common.errors import BadInput

ENGINES = ("local", "ray")


@contextlib.contextmanager
def parallel_engine(engine: str = "local", address: str | None = None) -> Iterator[None]:
    """Inside this context every joblib ``Parallel`` (sklearn's sweeps included) uses the engine."""
    if engine == "local":
        yield
        return
    if engine != "ray":
        raise BadInput(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    try:
        import joblib
        import ray
        from ray.util.joblib import register_ray
    except ImportError:
        raise BadInput("--engine ray needs Ray: pip install 'ray[data]' (or 'featcache[ray]')") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    register_ray()
    with joblib.parallel_backend("ray"):
        yield
