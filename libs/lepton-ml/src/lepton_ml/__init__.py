"""Lepton's model runtime: what it takes to train, store, convert and serve a model.

The trainer, evaluator, deployer and the SDK (to predict from a downloaded artifact) use it.
It imports only the infrastructure's errors, never the launchers (:mod:`lepton_platform`)
or a service; torch is optional (``lepton-ml[torch]``): only MLPs need it. Modules:

- :mod:`lepton_ml.artifacts`: the model bundle (skops or safetensors, signature, preprocessing).
- :mod:`lepton_ml.splits`: the deterministic train/test split trainer and evaluator share.
- :mod:`lepton_ml.recipes`: dataset recipes (typed steps) and their application with polars.
- :mod:`lepton_ml.mlp`: the PyTorch MLP estimator (needs torch).
- :mod:`lepton_ml.onnx_export`: exact ONNX conversion and the edge bundle (whose standalone
  ``runner.py`` is :mod:`lepton_ml.onnx_export.edge_runner`).
- :mod:`lepton_ml.profiling`: dataset profiles, the drift reference.
- :mod:`lepton_ml.scoring`: metric names and how to compute them.
- :mod:`lepton_ml.serving`: the tensor names (their one definition) and how rows become Triton inputs.
- ``lepton_ml/triton_model/model.py``: the Python-backend model Triton runs (loaded by file).
"""
