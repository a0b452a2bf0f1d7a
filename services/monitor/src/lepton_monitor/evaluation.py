"""The evaluation loop: each known deployment's drift check and rules, turned into incidents.

One :meth:`Evaluator.tick` evaluates every deployment with a ``deployment.ready`` record: the built-in drift
rule against the served version's reference, then the deployment's own rules; each fired or resolved
transition opens or closes an incident, and the outbox announces what is new. One monitor process
evaluates (rule states have one writer); see docs/monitoring.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lepton_core.errors import FailedPrecondition
from lepton_monitor import live as live_mod
from lepton_monitor.drift_check import DriftCheck, DriftOut, drifted_count, psi_max
from lepton_monitor.incidents import DRIFT_METRICS, DRIFT_RULE_NAME, Incidents, RuleBook
from lepton_monitor.live import LiveData
from lepton_monitor.lookups import Deployments
from lepton_monitor.metrics import Observations
from lepton_monitor.options import Options
from lepton_monitor.ports import Clock, TritonProbe
from lepton_monitor.records import AlertKind, DeploymentInfo, RuleStatesRecord
from lepton_monitor.rules import Rule, RuleState, Transition
from lepton_monitor.windows import METRICS

log = logging.getLogger(__name__)

#: Parts of the rule states that change on every evaluation; a state is written to KV only when the rest does.
_VOLATILE: Any = {
    "states": {"__all__": {"last_value", "last_evaluated_at"}},
    "drift": {"last_value", "last_evaluated_at"},
}

DriftFor = Callable[[float], Awaitable[DriftOut | None]]
Transitions = list[tuple[Transition, AlertKind, DriftOut | None]]


class Evaluator:
    """Evaluates every known deployment: drift, rules, incidents, retraining, the outbox.

    Args:
        deployments: The known deployments.
        rulebook: The deployments' rules and rule states.
        incidents: Opens, closes and announces incidents.
        drift: Computes drift reports.
        live: The in-memory logs (the rules' serving and live-performance metrics).
        triton: Asks Triton for a model version's statistics.
        observations: Where the last drift report and Triton statistics are left for the metrics.
        options: Settings.
        clock: Seconds since the epoch.
    """

    def __init__(
        self,
        deployments: Deployments,
        rulebook: RuleBook,
        incidents: Incidents,
        drift: DriftCheck,
        live: LiveData,
        triton: TritonProbe,
        observations: Observations,
        options: Options,
        clock: Clock,
    ) -> None:
        self._deployments = deployments
        self._rulebook = rulebook
        self._incidents = incidents
        self._drift = drift
        self._live = live
        self._triton = triton
        self._observations = observations
        self._options = options
        self._clock = clock
        self._lock = asyncio.Lock()
        self.triton_snapshots = False
        """Whether each evaluation also asks Triton for its statistics (for the Prometheus endpoint)."""

    async def tick(self) -> None:
        """One evaluation of every known deployment: drift, rules, incidents, retraining, the outbox."""
        async with self._lock:
            at = self._clock()
            async for info in self._deployments.stored():
                try:
                    await self._evaluate(info, at)
                except Exception:
                    log.exception("evaluation of %s/%s failed", info.tenant, info.name)
            self._live.forget_labels(at - self._options.retention_s)

    def _drift_rule(self) -> Rule:
        """The built-in drift rule, as the settings draw it."""
        return Rule(
            name=DRIFT_RULE_NAME,
            metric="drifted_features",
            comparison=">",
            threshold=0.5,
            window_seconds=self._options.drift_window_s,
            severity="warning",
            for_evaluations=self._options.drift_for_evaluations,
            resolve_margin=0.5,
            cooldown_seconds=self._options.drift_cooldown_s,
        )

    async def _evaluate(self, info: DeploymentInfo, at: float) -> None:
        tenant, name = info.tenant, info.name
        reports: dict[float, DriftOut | None] = {}

        async def drift_for(seconds: float) -> DriftOut | None:
            if seconds not in reports:
                try:
                    reports[seconds] = await self._drift.run(
                        tenant, name, info.model_name, info.model_version, seconds, at, []
                    )
                except FailedPrecondition:
                    reports[seconds] = None
            return reports[seconds]

        states = await self._rulebook.states(tenant, name)
        before = states.model_dump_json(exclude=_VOLATILE)
        rules = await self._rulebook.rules(tenant, name)
        transitions = await self._check_drift(info, states, at, drift_for)
        transitions += await self._check_rules(info, states, rules, at, drift_for)
        for transition, kind, drift in transitions:
            if transition.kind == "fired":
                # A monitor killed after recording an incident but before saving its rule states fires
                # again on restart: the recorded incident is the one, and none opens twice.
                recorded = await self._incidents.recorded(info, transition.rule)
                if recorded is not None:
                    log.info("incident %s was recorded before a restart: not opened again", recorded.incident_id)
                    states.open[transition.rule] = recorded.incident_id
                    continue
                rule = states.drift.rule if kind == "drift" and states.drift else states.states[transition.rule].rule
                states.open[transition.rule] = await self._incidents.open(info, rule, transition, kind, drift)
            else:
                incident = states.open.pop(transition.rule, "")
                if incident:
                    await self._incidents.close(info, incident, transition.value, transition.at)
        after = states.model_dump_json(exclude=_VOLATILE)
        if after != before or transitions:
            await self._rulebook.save_states(tenant, name, states)
        await self._incidents.flush(info)
        if self.triton_snapshots:
            self._observations.last_triton[(tenant, name)] = await self._triton(
                info.triton_url, info.triton_model, info.triton_version or str(info.model_version)
            )

    async def _check_drift(
        self, info: DeploymentInfo, states: RuleStatesRecord, at: float, drift_for: DriftFor
    ) -> Transitions:
        """The built-in drift rule's transition, if any, on the served version's drift report."""
        drift_rule = self._drift_rule()
        if states.drift_version != info.model_version:
            # Drift is a model version's fit to the live data: a new version ends the old one's incident
            # and starts a fresh check against its own reference.
            incident = states.open.pop(DRIFT_RULE_NAME, "")
            if incident:
                await self._incidents.close(info, incident, None, at)
            states.drift, states.drift_version = None, info.model_version
        drift_state = states.drift if states.drift is not None and states.drift.rule == drift_rule else None
        if drift_state is None:
            drift_state = RuleState.for_rule(drift_rule)
            if states.drift is not None:  # settings changed: keep whether it fires
                drift_state.firing = states.drift.firing
                drift_state.resolved_at = states.drift.resolved_at
            states.drift = drift_state
        current = await drift_for(self._options.drift_window_s)
        if current is not None:
            self._observations.last_drift[(info.tenant, info.name)] = (info.model_version, current.report)
        t = drift_state.evaluate(drifted_count(current.report if current else None), at)
        return [(t, "drift", current)] if t is not None else []

    async def _check_rules(
        self, info: DeploymentInfo, states: RuleStatesRecord, rules: list[Rule], at: float, drift_for: DriftFor
    ) -> Transitions:
        """The deployment's own rules' transitions; a deleted rule's incident ends with it."""
        transitions: Transitions = []
        kept: dict[str, RuleState] = {}
        for rule in rules:
            state = states.states.get(rule.name)
            if state is None or state.rule != rule:
                previous = state
                state = RuleState.for_rule(rule)
                if previous is not None and previous.firing:
                    state.firing, state.fired_at = True, previous.fired_at
            kept[rule.name] = state
            value = await self._metric(info, rule, at, drift_for)
            t = state.evaluate(value, at)
            if t is not None:
                transitions.append((t, "alert", None))
        removed = [r for r in states.states if r not in kept]
        states.states = kept
        for rule_name in removed:
            incident = states.open.pop(rule_name, "")
            if incident:
                await self._incidents.close(info, incident, None, at)
        return transitions

    async def _metric(self, info: DeploymentInfo, rule: Rule, at: float, drift_for: DriftFor) -> float | None:
        if rule.metric in METRICS:
            stats = self._live.serving(info.tenant).last(
                info.name, info.model_version, seconds=rule.window_seconds, at=at
            )
            return stats.metric(rule.metric)
        if rule.metric in DRIFT_METRICS:
            found = await drift_for(rule.window_seconds)
            report = found.report if found else None
            return drifted_count(report) if rule.metric == "drifted_features" else psi_max(report)
        task = live_mod.CLASSIFICATION if rule.metric == "live_accuracy" else live_mod.REGRESSION
        overall, _ = self._live.performance(
            info.tenant, info.name, info.model_version, task, seconds=rule.window_seconds, at=at
        )
        value = {"live_accuracy": overall.accuracy, "live_rmse": overall.rmse, "live_mae": overall.mae}[rule.metric]
        return value


__all__ = ["Evaluator"]
