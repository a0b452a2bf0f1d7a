"""Lepton's infrastructure: what every service runs on, and nothing about models.

Services and the SDK depend on this package; it imports neither the model runtime
(:mod:`lepton_ml`) nor the launchers (:mod:`lepton_platform`), and no service.
Modules:

- :mod:`lepton_core.errors`: the error tree, mapped to gRPC status codes in one place.
- :mod:`lepton_core.settings`: the settings base class (pydantic-settings).
- :mod:`lepton_core.logs`: structured JSON logging with trace ids.
- :mod:`lepton_core.telemetry`: OpenTelemetry set-up and W3C context propagation.
- :mod:`lepton_core.tls`: certificates and gRPC credentials.
- :mod:`lepton_core.store`: the key-value store interface; :mod:`lepton_core.bus` its NATS
  implementation, the topology, KV records and the object store.
- :mod:`lepton_core.events`: CloudEvents over NATS with protobuf payloads, and the catalogue;
  :mod:`lepton_core.event_stream` serves the stream to clients over gRPC;
  :mod:`lepton_core.trust` checks that a message claims no more than its subject grants.
- :mod:`lepton_core.rpc`: the gRPC server bootstrap, interceptors and client channels.
- :mod:`lepton_core.validation`: request validation errors as :class:`~lepton_core.errors.InvalidArgument`.
- :mod:`lepton_core.wire`: conversions between protobuf and domain types shared by services.
- :mod:`lepton_core.service`: one service's process: settings, NATS, gRPC server, handlers, shutdown.
- :mod:`lepton_core.quotas`: plans and their limits, the refusal past one; :mod:`lepton_core.usage`
  each tenant's usage, metered from the events.
"""
