"""Code shared by every Lepton service.

Services depend on this package, never on each other. Modules:

- :mod:`lepton_core.errors`: the error tree, mapped to gRPC status codes in one place.
- :mod:`lepton_core.settings`: the settings base class (pydantic-settings).
- :mod:`lepton_core.logs`: structured JSON logging with trace ids.
- :mod:`lepton_core.telemetry`: OpenTelemetry set-up and W3C context propagation.
- :mod:`lepton_core.bus`: NATS connection, topology, KV records and the object store.
- :mod:`lepton_core.events`: CloudEvents over NATS with protobuf payloads.
- :mod:`lepton_core.rpc`: the gRPC server bootstrap, interceptors and client channels.
- :mod:`lepton_core.triton`: the embedded Triton server launcher.
- :mod:`lepton_core.embedded`: the whole platform on one machine (``make up``).
"""
