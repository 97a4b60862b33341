"""The classification stage: compare classifiers on cached features, on a CPU.

``features`` loads a store's splits, ``protocol`` sizes model selection to the store,
``models`` is the registry (``list_models``, ``build_model``), ``linear_probe``/``lbfgs`` the
scalable linear solvers, ``knn`` and ``sweep`` the other selections, ``budget`` the time
estimates, ``evaluate`` scores, ``persist`` saves and verifies models, ``train`` runs the zoo
(``run_classify``) and ``cli`` is ``pipeline.py classify``. Nothing here imports torch until a
torch head or an L-BFGS probe is fitted.
"""
