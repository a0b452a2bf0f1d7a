"""The deployer service: registered model versions served on Triton.

Depends on :mod:`lepton_core` and :mod:`lepton_ml` (artifacts, serving tensors, ONNX export);
never on another service. Modules:

- :mod:`lepton_deployer.api`: the gRPC servicer and the registry event handlers.
- :mod:`lepton_deployer.core`: the ``Deployer``: admission, deploy, rollback, delete.
- :mod:`lepton_deployer.rollout`: the rollout state machine: stage, smoke, canary, swap, rollback.
- :mod:`lepton_deployer.reconcile`: restores hosts that lost their models, rolls back interrupted rollouts.
- :mod:`lepton_deployer.fleet`: loads, readiness waits, smoke and canary checks across hosts.
- :mod:`lepton_deployer.hosts`: ``TritonHost``, the one interface to a Triton, and its tritonclient implementation.
- :mod:`lepton_deployer.smoke`: the smoke test and its tolerances.
- :mod:`lepton_deployer.triton_config`: Triton model names, configs and load requests.
- :mod:`lepton_deployer.backends`: which runtime serves a model (scikit-learn, ONNX).
- :mod:`lepton_deployer.serving_files`: artifact and backend file caches.
- :mod:`lepton_deployer.records`: the deployment records in KV.
- :mod:`lepton_deployer.errors`: ``RolloutFailed``, ``HostError``.
- :mod:`lepton_deployer.settings`: ``LEPTON_DEPLOYER_*`` settings; ``python -m lepton_deployer`` runs it.
"""
