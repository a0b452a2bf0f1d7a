from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings
from lepton_core.triton_pool import PoolSettings


class MonitorSettings(ServiceSettings, PoolSettings):
    """Settings of the monitor service (env prefix ``LEPTON_MONITOR_``); its host pool is the deployer's,
    where it reads Triton's statistics of the hosts that deployments name."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_MONITOR_", extra="ignore")

    window_s: int = Field(
        60, ge=1, description="Width of a serving window in seconds; windows start at multiples of it."
    )
    retention_windows: int = Field(
        60, ge=1, description="Windows kept in memory per deployment and version (and read back at start-up)."
    )
    max_samples: int = Field(
        10_000, ge=1, description="Latencies and predictions kept per window; percentiles are exact up to it."
    )
    drift_rows_per_window: int = Field(
        2_000, ge=1, description="Logged input rows kept per window for drift (a uniform sample beyond it)."
    )
    drift_window_s: float = Field(900.0, gt=0, description="Span of recent logs the continuous drift check looks at.")
    drift_min_samples: int = Field(
        500,
        ge=1,
        description="Fewer live (or reference) values than this give no drift verdict for a feature. PSI over 20 "
        "bins reads about 19 * (1/live + 1/reference) on samples of one distribution, so small samples look drifted.",
    )
    drift_min_reference_samples: int = Field(
        100, ge=1, description="A training column with fewer values than this gives no drift verdict."
    )
    drift_psi: float = Field(0.2, gt=0, description="PSI at or above this is drift.")
    drift_ks_alpha: float = Field(0.01, gt=0, lt=1, description="A KS p-value below this is significant.")
    drift_ks_min_statistic: float = Field(
        0.1, ge=0, le=1, description="KS claims drift only with at least this statistic as well."
    )
    drift_chi2_alpha: float = Field(0.01, gt=0, lt=1, description="A chi-square p-value below this is drift.")
    drift_for_evaluations: int = Field(
        2, ge=1, description="Consecutive drifting checks before a drift incident opens (and clean ones to close it)."
    )
    drift_cooldown_s: float = Field(600.0, ge=0, description="After a drift incident closes, none opens for this long.")
    evaluation_interval_s: float = Field(
        15.0, gt=0, description="How often rules, drift and retraining policies are evaluated."
    )
    reference_max_rows: int = Field(
        100_000,
        ge=1,
        description="Training rows the model predicts to build the prediction reference (a fixed sample beyond it); "
        "feature profiles always use every row.",
    )
    log_scan_limit: int = Field(
        100_000, ge=1, description="Most prediction logs one QueryPredictionLogs or SummarizeLogs call reads."
    )
    triton_timeout_s: float = Field(2.0, gt=0, description="How long to wait for Triton's statistics API.")
    triton_statistics_secret_file: str | None = Field(
        None,
        description="File holding the secret that opens Triton's statistics API (only that: model control "
        "is the deployer's); none: Triton's statistics are not restricted (docs/security.md).",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint; 0 turns it off."
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the Prometheus endpoint binds (it serves every tenant's metrics, unauthenticated).",
    )
    alert_history: int = Field(500, ge=1, description="Alerts kept per deployment in ListAlerts' history.")
    artifact_public_key_file: str | None = Field(
        None,
        description="PEM file of the platform's Ed25519 artifact public key(s): every artifact's signature is "
        "checked against it before a byte is read; the service refuses to start without it.",
    )
