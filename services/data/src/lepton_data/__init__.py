"""The data service: dataset upload, immutable content-addressed versions, look-up.

Depends on :mod:`lepton_core` (infrastructure) and :mod:`lepton_ml` (recipes, profiles); never
on another service. Modules:

- :mod:`lepton_data.api`: the gRPC servicer, a thin adapter from protobuf to the core.
- :mod:`lepton_data.core`: datasets and their immutable versions, independent of gRPC.
- :mod:`lepton_data.ingest`: reading uploaded files into polars, with a specific error for each fault.
- :mod:`lepton_data.validation`: per-dataset validation rules and their report.
- :mod:`lepton_data.splits`: deterministic train/validation/test splits.
- :mod:`lepton_data.profiling`: the column profile, re-exported from :mod:`lepton_ml.profiling`.
- :mod:`lepton_data.settings`: ``LEPTON_DATA_*`` settings; ``python -m lepton_data`` runs it.
"""
