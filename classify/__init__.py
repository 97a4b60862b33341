"""The classification stage: compare classifiers on cached features, on a CPU.

``features`` loads a store's splits, ``protocol`` sizes model selection to the store,
``models`` is the registry (``list_models``, ``build_model``), ``linear_probe``/``lbfgs`` the
scalable linear solvers, ``knn`` and ``sweep`` the other selections, ``budget`` the time
estimates, ``evaluate`` scores, ``persist`` saves and verifies models, ``train`` runs the zoo
(``run_classify``) and ``cli`` is ``pipeline.py classify``. Python API: :func:`compare` (``classify.api``). Nothing here imports torch until a
torch head or an L-BFGS probe is fitted.
"""


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: sklearn loads only when used
    if name == "compare":
        from classify.api import compare

        return compare
    raise AttributeError(f"module 'classify' has no attribute {name!r}")


__all__ = ["compare"]
