"""The classification stage: compare classifiers on cached features, on a CPU.

``features`` loads a store's splits, ``models`` is the registry (``list_models``,
``build_model``), ``evaluate`` scores, ``persist`` saves and verifies models, ``train``
runs the zoo (``run_classify``) and ``cli`` is ``pipeline.py classify``. Nothing here
imports torch until a torch head is fitted.
"""
