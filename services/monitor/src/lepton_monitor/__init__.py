"""The monitor service: statistics from the sampled prediction logs.

Depends on :mod:`lepton_core` and :mod:`lepton_ml` (profiles); never on another service.
Modules:

- :mod:`lepton_monitor.api`: the gRPC servicer and the event handlers.
- :mod:`lepton_monitor.core`: the ``Monitor``, a small core that builds the parts below and delegates.
- :mod:`lepton_monitor.intake`: logs and platform events in; :mod:`lepton_monitor.streams` reads them.
- :mod:`lepton_monitor.lookups`: deployments and drift references known to the monitor.
- :mod:`lepton_monitor.queries`: serving, drift, label and performance queries.
- :mod:`lepton_monitor.log_search`: searching and summarising prediction logs.
- :mod:`lepton_monitor.incidents`: alert rules, rule states and incidents; :mod:`lepton_monitor.rules` the rule model.
- :mod:`lepton_monitor.evaluation`: the periodic evaluation of rules and drift.
- :mod:`lepton_monitor.retraining`: the retraining policy an incident triggers.
- :mod:`lepton_monitor.metrics`: Prometheus figures; :mod:`lepton_monitor.prometheus` the exposition.
- :mod:`lepton_monitor.drift`, :mod:`lepton_monitor.drift_stats`, :mod:`lepton_monitor.drift_profile`,
  :mod:`lepton_monitor.drift_check`, :mod:`lepton_monitor.drift_plot`: drift reports, statistics,
  reference profiles, the check of a window, the picture.
- :mod:`lepton_monitor.windows`, :mod:`lepton_monitor.live`, :mod:`lepton_monitor.records`,
  :mod:`lepton_monitor.reference`, :mod:`lepton_monitor.triton`, :mod:`lepton_monitor.ports`,
  :mod:`lepton_monitor.options`: serving windows, live samples, KV records, the drift reference,
  Triton's statistics, the interfaces the core needs, its options.
- :mod:`lepton_monitor.settings`: ``LEPTON_MONITOR_*`` settings; ``python -m lepton_monitor`` runs it.
"""
