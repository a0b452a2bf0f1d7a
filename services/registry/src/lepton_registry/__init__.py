"""The registry service: registered models, versions and their lineage.

Depends on :mod:`lepton_core` only; never on another service (it asks them over gRPC for
lineage). Modules:

- :mod:`lepton_registry.api`: the gRPC servicer and the evaluation event handlers.
- :mod:`lepton_registry.core`: models, versions, aliases and policies in KV, compare-and-set on every change.
- :mod:`lepton_registry.lineage`: a version's lineage gathered from the services that own each part.
- :mod:`lepton_registry.settings`: ``LEPTON_REGISTRY_*`` settings; ``python -m lepton_registry`` runs it.
"""
