"""Alert rules and the incidents they open.

:class:`RuleBook` keeps each deployment's rules and their evaluation states; :class:`Incidents` keeps each
deployment's incidents (KV ``<tenant>.alerts.<deployment>``) and is their outbox: an incident is written
first and announced after, so one whose event failed is announced on the next evaluation, once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import ValidationError

from lepton_core.errors import InvalidArgument
from lepton_core.store import Store
from lepton_core.telemetry import extract_context, inject_context
from lepton_core.validation import invalid_argument_from
from lepton_monitor.drift import DRIFT
from lepton_monitor.drift_check import DriftOut, psi_map
from lepton_monitor.lookups import Deployments, check_name
from lepton_monitor.metrics import Observations
from lepton_monitor.ports import Announcer, mutate
from lepton_monitor.records import (
    AlertKind,
    AlertRecord,
    AlertsRecord,
    DeploymentInfo,
    RulesRecord,
    RuleStatesRecord,
    drop_tenant,
)
from lepton_monitor.retraining import RetrainingPolicies
from lepton_monitor.rules import Rule, RuleState, Transition
from lepton_monitor.windows import METRICS

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("lepton.monitor")

DRIFT_METRICS = {
    "drifted_features": "features (and the prediction) whose drift verdict is drift",
    "psi_max": "the greatest PSI over the features",
}
LIVE_METRICS = {
    "live_accuracy": "accuracy of labelled predictions (classification)",
    "live_rmse": "root mean squared error of labelled predictions (regression)",
    "live_mae": "mean absolute error of labelled predictions (regression)",
}
#: Every metric a rule may name.
RULE_METRICS: dict[str, str] = {**METRICS, **DRIFT_METRICS, **LIVE_METRICS}
DRIFT_RULE_NAME = "drift"
#: Most rules per deployment.
MAX_RULES = 100


@dataclass
class RuleStatus:
    """A rule and where its evaluation stands."""

    rule: Rule
    state: RuleState


def incident_id(tenant: str, deployment: str, rule: str, fired_at: float) -> str:
    """An incident's id, from its natural key (what fired, and when)."""
    digest = hashlib.sha256(f"{tenant}\x00{deployment}\x00{rule}\x00{fired_at!r}".encode()).hexdigest()
    return f"inc_{digest[:20]}"


def parse_rule(values: dict[str, Any], index: int) -> Rule:
    """A :class:`Rule` from request values; InvalidArgument naming ``rules[i].<field>`` when one is wrong."""
    try:
        return Rule.model_validate(values)
    except ValidationError as e:
        raise invalid_argument_from(e, f"rules[{index}]") from None


class RuleBook:
    """Each deployment's alert rules (KV) and their evaluation states (in memory, written to KV on change).

    The states have one writer, the evaluation loop (one monitor process evaluates).

    Args:
        rules: The rules in KV (``<tenant>.rules.<deployment>``).
        states: The rule states in KV (``<tenant>.rulestate.<deployment>``).
        deployments: The known deployments.
        retention_s: The longest window a rule may look at (what the monitor keeps).
    """

    def __init__(
        self,
        rules: Store[RulesRecord],
        states: Store[RuleStatesRecord],
        deployments: Deployments,
        retention_s: float,
    ) -> None:
        self._rules = rules
        self._states_store = states
        self._deployments = deployments
        self._retention_s = retention_s
        self._states: dict[tuple[str, str], RuleStatesRecord] = {}

    def forget_tenant(self, tenant: str) -> None:
        drop_tenant(tenant, self._states)

    async def set_rules(self, tenant: str, deployment: str, rules: Sequence[Rule]) -> list[RuleStatus]:
        """Replaces a deployment's rules; returns them with their states."""
        await self._deployments.get(tenant, deployment)
        if len(rules) > MAX_RULES:
            raise InvalidArgument(f"{len(rules)} rules; at most {MAX_RULES} are allowed", field="rules")
        names = [r.name for r in rules]
        for i, rule in enumerate(rules):
            check_name(rule.name, f"rules[{i}].name")
            if rule.name == DRIFT_RULE_NAME:
                raise InvalidArgument(
                    f"{DRIFT_RULE_NAME!r} is the built-in drift check's name", field=f"rules[{i}].name"
                )
            if rule.name in names[:i]:
                raise InvalidArgument(f"{rule.name!r} names two rules", field=f"rules[{i}].name")
            if rule.metric not in RULE_METRICS:
                raise InvalidArgument(
                    f"unknown metric {rule.metric!r}; use one of {sorted(RULE_METRICS)}", field=f"rules[{i}].metric"
                )
            if rule.window_seconds > self._retention_s:
                raise InvalidArgument(
                    f"{rule.window_seconds:g} s is more than the {self._retention_s:g} s the monitor keeps",
                    field=f"rules[{i}].window_seconds",
                )
        await self._rules.put(
            f"{tenant}.rules.{deployment}", RulesRecord(tenant=tenant, deployment=deployment, rules=list(rules))
        )
        return await self.list_rules(tenant, deployment)

    async def list_rules(self, tenant: str, deployment: str) -> list[RuleStatus]:
        """A deployment's rules with their states (a fresh state for a rule not evaluated as it is now)."""
        await self._deployments.get(tenant, deployment)
        found = await self._rules.get(f"{tenant}.rules.{deployment}")
        states = await self.states(tenant, deployment)
        out = []
        for rule in found.value.rules if found else []:
            state = states.states.get(rule.name)
            if state is None or state.rule != rule:
                state = RuleState.for_rule(rule)
            out.append(RuleStatus(rule=rule, state=state))
        return out

    async def rules(self, tenant: str, deployment: str) -> list[Rule]:
        """A deployment's rules as stored."""
        found = await self._rules.get(f"{tenant}.rules.{deployment}")
        return found.value.rules if found else []

    async def states(self, tenant: str, deployment: str) -> RuleStatesRecord:
        """A deployment's rule states: the live object the evaluation changes (read from KV the first time)."""
        found = self._states.get((tenant, deployment))
        if found is None:
            stored = await self._states_store.get(f"{tenant}.rulestate.{deployment}")
            found = stored.value if stored else RuleStatesRecord(tenant=tenant, deployment=deployment)
            self._states[(tenant, deployment)] = found
        return found

    async def save_states(self, tenant: str, deployment: str, states: RuleStatesRecord) -> None:
        """Writes a deployment's rule states to KV."""
        await self._states_store.put(f"{tenant}.rulestate.{deployment}", states)


class Incidents:
    """Each deployment's incidents: opened and closed by the evaluation, announced by its outbox.

    Args:
        alerts: The incidents in KV, one record per deployment.
        announcer: Publishes incidents and retraining requests.
        retraining: Decides, when an incident opens, whether it asks for a retraining.
        deployments: The known deployments.
        history: The most incidents kept per deployment (the oldest resolved ones go first).
        observations: Where the outbox leaves each deployment's firing incidents (for the metrics).
    """

    def __init__(
        self,
        alerts: Store[AlertsRecord],
        announcer: Announcer,
        retraining: RetrainingPolicies,
        deployments: Deployments,
        history: int,
        observations: Observations,
    ) -> None:
        self._alerts = alerts
        self._announcer = announcer
        self._retraining = retraining
        self._deployments = deployments
        self._history = history
        self._observations = observations

    async def list_alerts(self, tenant: str, deployment: str, firing_only: bool, limit: int) -> list[AlertRecord]:
        """The newest incidents first, of one deployment or (``deployment`` empty) of every one."""
        if limit < 0:
            raise InvalidArgument(f"must be >= 0, got {limit}", field="limit")
        if deployment:
            await self._deployments.get(tenant, deployment)
            keys = [f"{tenant}.alerts.{deployment}"]
        else:
            keys = await self._alerts.keys(f"{tenant}.alerts.*")
        found: list[AlertRecord] = []
        for key in keys:
            record = await self._alerts.get(key)
            if record is not None:
                found.extend(a for a in record.value.alerts if not firing_only or a.state == "firing")
        found.sort(key=lambda a: a.fired_at, reverse=True)
        return found[: limit or 100]

    async def open(
        self, info: DeploymentInfo, rule: Rule, t: Transition, kind: AlertKind, drift: DriftOut | None
    ) -> str:
        """Opens the incident of a fired transition (deciding its retraining) and returns its id."""
        incident = incident_id(info.tenant, info.name, t.rule, t.at)
        alert = AlertRecord(
            incident_id=incident,
            tenant=info.tenant,
            deployment=info.name,
            model_name=info.model_name,
            model_version=info.model_version,
            kind=kind,
            rule=t.rule,
            metric=t.metric,
            comparison=t.comparison,
            threshold=t.threshold,
            severity=t.severity,
            window_seconds=rule.window_seconds,
            value=t.value,
            fired_at=t.at,
        )
        if drift is not None:
            report = drift.report
            alert.drifted = [f.name for f in report.features if f.verdict == DRIFT]
            alert.prediction_drifted = report.prediction is not None and report.prediction.verdict == DRIFT
            alert.psi = psi_map(report)
            alert.live_rows = max((f.n_live for f in report.features), default=0)
            alert.reference_dataset_version_id = drift.reference_dataset_version_id
        with _tracer.start_as_current_span(
            f"monitor {kind} incident", context=otel_context.Context(), attributes={"lepton.incident": incident}
        ):
            alert.traceparent = inject_context({}).get("traceparent", "")
        await self._retraining.apply(info, alert)
        # The alert (the outbox :meth:`flush` announces from) first, then what it changes elsewhere.
        await self._append(alert)
        await self._retraining.remember(info, alert)
        log.info(
            "%s %s on %s/%s: %s %s %g (value %g)",
            kind,
            incident,
            info.tenant,
            info.name,
            t.metric,
            t.comparison,
            t.threshold,
            t.value,
        )
        return incident

    async def recorded(self, info: DeploymentInfo, rule: str) -> AlertRecord | None:
        """The firing incident of ``rule`` recorded for the deployment (for drift: of its served version)."""
        found = await self._alerts.get(f"{info.tenant}.alerts.{info.name}")
        for a in found.value.alerts if found else []:
            same_version = rule != DRIFT_RULE_NAME or a.model_version == info.model_version
            if a.rule == rule and a.state == "firing" and same_version:
                return a
        return None

    async def _append(self, alert: AlertRecord) -> None:
        limit = self._history

        def change(record: AlertsRecord | None) -> AlertsRecord:
            record = record or AlertsRecord(tenant=alert.tenant, deployment=alert.deployment)
            if any(a.incident_id == alert.incident_id for a in record.alerts):
                return record
            alerts = [*record.alerts, alert]
            # Drop the oldest resolved ones first; a firing incident stays until it resolves.
            while len(alerts) > limit:
                oldest = next((a for a in alerts if a.state == "resolved"), alerts[0])
                alerts.remove(oldest)
            return record.model_copy(update={"alerts": alerts})

        await mutate(self._alerts, f"{alert.tenant}.alerts.{alert.deployment}", change)

    async def close(self, info: DeploymentInfo, incident: str, value: float | None, at: float) -> None:
        """Resolves a firing incident (``value``: the metric when it cleared; None when its rule went away)."""

        def change(record: AlertsRecord | None) -> AlertsRecord | None:
            if record is None:
                return None
            alerts = []
            changed = False
            for a in record.alerts:
                if a.incident_id == incident and a.state == "firing":
                    a = a.model_copy(update={"state": "resolved", "resolved_at": at, "resolved_value": value})
                    changed = True
                alerts.append(a)
            return record.model_copy(update={"alerts": alerts}) if changed else None

        await mutate(self._alerts, f"{info.tenant}.alerts.{info.name}", change)

    async def _announce(self, a: AlertRecord, done: dict[str, bool]) -> None:
        if not a.announced_fired:
            await self._announcer.incident(a, "fired")
            done["announced_fired"] = True
        if a.retraining_request is not None and not a.announced_retraining:
            await self._announcer.retraining(a.retraining_request)
            done["announced_retraining"] = True
        if a.state == "resolved" and not a.announced_resolved:
            await self._announcer.incident(a, "resolved")
            done["announced_resolved"] = True

    async def flush(self, info: DeploymentInfo) -> None:
        """Publishes every unannounced fire, resolve and retraining of a deployment (the outbox)."""
        key = f"{info.tenant}.alerts.{info.name}"
        found = await self._alerts.get(key)
        if found is None:
            return
        marks: dict[str, dict[str, bool]] = {}
        for a in found.value.alerts:
            done: dict[str, bool] = {}
            token = otel_context.attach(extract_context({"traceparent": a.traceparent} if a.traceparent else {}))
            try:
                await self._announce(a, done)
            finally:
                otel_context.detach(token)
            if done:
                marks[a.incident_id] = done
        self._observations.firing[(info.tenant, info.name)] = [a for a in found.value.alerts if a.state == "firing"]
        if not marks:
            return

        def change(record: AlertsRecord | None) -> AlertsRecord | None:
            if record is None:
                return None
            return record.model_copy(
                update={"alerts": [a.model_copy(update=marks.get(a.incident_id, {})) for a in record.alerts]}
            )

        await mutate(self._alerts, key, change)


__all__ = [
    "DRIFT_RULE_NAME",
    "RULE_METRICS",
    "Incidents",
    "RuleBook",
    "RuleStatus",
    "incident_id",
    "parse_rule",
]
