"""Lepton on one machine: launchers, the demo and the test fixtures.

Nothing in a service or in the libraries imports this package; it starts them as
processes. Modules:

- :mod:`lepton_platform.processes`: nats-server, Triton and service processes, free ports.
- :mod:`lepton_platform.embedded`: the whole platform on one machine (``lepton up``, ``make up``).
- :mod:`lepton_platform.demo`: ``make demo``, a real dataset through the whole platform.
- :mod:`lepton_platform.tracesink`: an in-process OTLP receiver the demo and tests read traces from.
- :mod:`lepton_platform.testing`: the pytest fixtures (real NATS, Triton and services).
"""
