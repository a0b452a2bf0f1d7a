"""The evaluator service: metrics of trained models on their held-out split.

Depends on :mod:`lepton_core` and :mod:`lepton_ml` (artifacts, the shared split, scores); never
on another service. Modules:

- :mod:`lepton_evaluator.api`: the gRPC servicer and the ``training.completed`` handler.
- :mod:`lepton_evaluator.core`: evaluations and champion/challenger comparisons, independent of gRPC.
- :mod:`lepton_evaluator.metrics`: metrics as pure functions, bootstrap intervals, cross-validation.
- :mod:`lepton_evaluator.plots`: evaluation plots as PNG bytes.
- :mod:`lepton_evaluator.settings`: ``LEPTON_EVALUATOR_*`` settings; ``python -m lepton_evaluator`` runs it.
"""
