"""The classification stage: compare classifiers on cached features, on a CPU.

Three layers, each pure: :mod:`~classify.plan` (every "auto" and the budget resolved once),
:mod:`~classify.fit` (one planned model on arrays -> its rows, fitted estimator and out-of-fold
predictions in memory) and :mod:`~classify.zoo` (plans + data -> a
:class:`~classify.leaderboard.Leaderboard`). Writing is separate: :mod:`~classify.outputs`
(model files, the resume ledger :mod:`~classify.ledger`, the reports), attached by
:mod:`~classify.job` (``pipeline.py classify``) and by ``run``. Around them: ``features`` loads a
store's splits, ``protocol`` sizes model selection, ``models`` is the registry, ``selection``
the repeated CV, ``ranking`` what "best" and "tied" mean, ``persist`` the model files.

Python API: :func:`compare` (``classify.api``). Nothing here imports torch until a torch head or
an L-BFGS probe is fitted.
"""


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: scikit-learn loads only when used
    if name == "compare":
        from classify.api import compare

        return compare
    if name == "Leaderboard":
        from classify.leaderboard import Leaderboard

        return Leaderboard
    raise AttributeError(f"module 'classify' has no attribute {name!r}")


__all__ = ["Leaderboard", "compare"]
