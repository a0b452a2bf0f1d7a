"""The trainer service: training jobs from the JOBS work queue.

Depends on :mod:`lepton_core` and :mod:`lepton_ml` (artifacts, the shared split, the MLP, with
torch); never on another service. Modules:

- :mod:`lepton_trainer.api`: the gRPC servicer and the event handlers.
- :mod:`lepton_trainer.core`: job records, submission and the worker, independent of gRPC.
- :mod:`lepton_trainer.catalogue`: the algorithms, with typed, range-checked hyper-parameters.
- :mod:`lepton_trainer.fit_worker`: the fit process (``python -m lepton_trainer.fit_worker``).
- :mod:`lepton_trainer.retrain`: ``monitor.retraining.requested`` becomes a training job.
- :mod:`lepton_trainer.settings`: ``LEPTON_TRAINER_*`` settings; ``python -m lepton_trainer`` runs it.
"""
