"""The drift of a deployment: its recent live rows against the reference of the model version it serves.

:class:`DriftCheck` is what both a ``GetDriftReport`` call and the evaluation loop run; the figures rules
and alerts take from its report (:func:`drifted_count`, :func:`psi_max`, :func:`psi_map`) are here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_core.errors import InvalidArgument
from lepton_monitor.drift import INSUFFICIENT_DATA, DriftReport, DriftThresholds, drift_report
from lepton_monitor.live import LiveData
from lepton_monitor.lookups import References
from lepton_monitor.reference import PREDICTION


@dataclass
class DriftOut:
    """A drift report of one deployment and version over a span of live data."""

    deployment: str
    version: int
    start: float
    end: float
    report: DriftReport
    reference_dataset_version_id: str
    png: bytes = b""


class DriftCheck:
    """Computes drift reports from the in-memory live rows and the model versions' references.

    Args:
        live: The in-memory logs (their drift samples).
        references: The model versions' drift references.
        thresholds: Where the verdicts draw their lines.
    """

    def __init__(self, live: LiveData, references: References, thresholds: DriftThresholds) -> None:
        self._live = live
        self._references = references
        self._thresholds = thresholds

    async def run(
        self, tenant: str, deployment: str, model: str, version: int, seconds: float, at: float, features: list[str]
    ) -> DriftOut:
        """Drift of ``deployment``'s rows of ``version`` over the ``seconds`` before ``at``.

        Args:
            tenant: The tenant.
            deployment: The deployment whose logs are the live side.
            model: The model whose ``version`` gives the reference.
            version: The model version.
            seconds: The span of live data.
            at: The end of that span.
            features: The features to check, in order; every reference feature when empty.

        Raises:
            FailedPrecondition: When the reference cannot be built (yet).
            InvalidArgument: For a feature named twice or one the reference lacks.
        """
        reference = await self._references.get(tenant, model, version)
        columns = {c["name"]: c for c in reference.columns}
        sample = self._live.drift_sample(tenant, deployment, version, seconds=seconds, at=at)
        if features:
            if len(set(features)) != len(features):
                raise InvalidArgument("lists a feature twice", field="features")
            unknown = [f for f in features if f not in columns]
            if unknown:
                raise InvalidArgument(
                    f"unknown feature(s) {unknown}; the reference has {sorted(columns)}", field="features"
                )
            names = list(features)
        else:
            names = [n for n in reference.features if n in columns]
        empty = np.empty(0, dtype=np.float64)
        live: dict[str, Any] = {n: sample.columns.get(n, empty) for n in names}
        live[PREDICTION] = sample.predictions
        report = drift_report(
            columns,
            live,
            names,
            prediction_reference=reference.prediction,
            prediction_column=PREDICTION,
            thresholds=self._thresholds,
        )
        return DriftOut(
            deployment=deployment,
            version=version,
            start=sample.start,
            end=sample.end,
            report=report,
            reference_dataset_version_id=reference.dataset_version_id,
        )


def drifted_count(report: DriftReport | None) -> float | None:
    """How many features (and the prediction) drifted; None when no column had enough data to tell."""
    if report is None:
        return None
    results = [*report.features, *([report.prediction] if report.prediction else [])]
    if not any(r.verdict != INSUFFICIENT_DATA for r in results):
        return None
    return float(len(report.drifted))


def psi_max(report: DriftReport | None) -> float | None:
    """The greatest PSI over the features, or None."""
    if report is None:
        return None
    values = [f.psi for f in report.features if f.psi is not None]
    return max(values) if values else None


def psi_map(report: DriftReport) -> dict[str, float]:
    """The PSI of each feature (and of the prediction) that has one."""
    out = {f.name: f.psi for f in report.features if f.psi is not None}
    if report.prediction is not None and report.prediction.psi is not None:
        out[PREDICTION] = report.prediction.psi
    return out


__all__ = ["DriftCheck", "DriftOut", "drifted_count", "psi_map", "psi_max"]
