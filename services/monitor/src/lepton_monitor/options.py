"""The settings the monitor's core uses, as one frozen value its parts share."""

from __future__ import annotations

from dataclasses import dataclass, field

from lepton_ml.signing import TrustedKeys
from lepton_monitor.drift import DriftThresholds


@dataclass(frozen=True)
class Options:
    """The settings the core uses (built from :class:`~lepton_monitor.settings.MonitorSettings`)."""

    window_s: int = 60
    retention_windows: int = 60
    max_samples: int = 10_000
    drift_rows_per_window: int = 2_000
    drift_window_s: float = 900.0
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    drift_for_evaluations: int = 2
    drift_cooldown_s: float = 600.0
    reference_max_rows: int = 100_000
    log_scan_limit: int = 100_000
    alert_history: int = 500
    #: The artifact public keys (``artifact_public_key_file``); none: no artifact is loaded,
    #: so references get no prediction profile.
    artifact_keys: TrustedKeys = field(default_factory=lambda: TrustedKeys({}))

    @property
    def retention_s(self) -> float:
        """How far back the in-memory windows reach, in seconds."""
        return float(self.window_s * self.retention_windows)


__all__ = ["Options"]
