"""Alert rules per deployment, and the state machine that decides when one fires and resolves.

A :class:`Rule` compares a metric (usually one of :data:`lepton_monitor.windows.METRICS`, taken over the
last ``window_seconds``) to a threshold. Its :class:`RuleState` is evaluated once per tick with the
metric's current value and returns a :class:`Transition` when the alert fires or resolves:

* **Breach**: ``value > threshold`` for ``>``, ``value < threshold`` for ``<``.
* **Clear**: the value is back past the hysteresis band, ``value <= threshold - resolve_margin`` for ``>``,
  ``value >= threshold + resolve_margin`` for ``<``. A value inside the band is neither.
* **Fire**: while not firing, after ``for_evaluations`` consecutive breaches, provided the cool-down
  (``cooldown_seconds`` after the last resolve) is over. Breaches during the cool-down still count, so a
  condition that persists through it fires at the first evaluation after it.
* **Resolve**: while firing, after ``for_evaluations`` consecutive clears.
* **No data**: a value of None (or NaN) neither breaches nor clears; it breaks a run of consecutive
  evaluations, so it can delay a fire or a resolve but never cause one.

A value oscillating around the threshold therefore fires once and stays firing until it settles below the
band, instead of raising an alert per crossing. States are pydantic models: ``model_dump_json`` stores one in
KV and ``model_validate_json`` restores it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Comparison = Literal[">", "<"]
Severity = Literal["info", "warning", "critical"]
TransitionKind = Literal["fired", "resolved"]


class Rule(BaseModel):
    """An alert rule.

    Attributes:
        name: Unique among the deployment's rules.
        metric: What to compare, e.g. ``latency_p95_ms`` or ``error_rate``.
        comparison: ``>`` fires on values above the threshold, ``<`` on values below it.
        threshold: The limit.
        window_seconds: The span the metric is computed over (the caller computes it).
        severity: ``info``, ``warning`` or ``critical``.
        for_evaluations: Consecutive breaching evaluations before firing, and consecutive clear ones
            before resolving.
        resolve_margin: Width of the hysteresis band: a firing alert resolves only once the value is this
            far back on the good side of the threshold.
        cooldown_seconds: After a resolve, the rule cannot fire again for this long.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    comparison: Comparison
    threshold: float
    window_seconds: float = Field(default=300.0, gt=0)
    severity: Severity = "warning"
    for_evaluations: int = Field(default=3, ge=1)
    resolve_margin: float = Field(default=0.0, ge=0)
    cooldown_seconds: float = Field(default=300.0, ge=0)

    @field_validator("threshold", "resolve_margin", "cooldown_seconds", "window_seconds")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def breaches(self, value: float) -> bool:
        """Whether ``value`` is on the alerting side of the threshold."""
        return value > self.threshold if self.comparison == ">" else value < self.threshold

    def clears(self, value: float) -> bool:
        """Whether ``value`` is past the hysteresis band on the good side."""
        if self.comparison == ">":
            return value <= self.threshold - self.resolve_margin
        return value >= self.threshold + self.resolve_margin


class Transition(BaseModel):
    """A rule fired or resolved.

    Attributes:
        rule: The rule's name.
        kind: ``fired`` or ``resolved``.
        metric: The rule's metric.
        comparison: The rule's comparison.
        value: The value that completed the transition.
        threshold: The rule's threshold.
        severity: The rule's severity.
        at: When, seconds since the epoch.
    """

    rule: str
    kind: TransitionKind
    metric: str
    comparison: Comparison
    value: float
    threshold: float
    severity: Severity
    at: float


class RuleState(BaseModel):
    """Where one rule stands; :meth:`evaluate` advances it.

    Attributes:
        rule: The rule.
        firing: Whether the alert is firing.
        streak: Consecutive evaluations so far toward the next transition: breaches while not firing,
            clears while firing.
        fired_at: When it last fired.
        resolved_at: When it last resolved (the cool-down counts from here).
        last_value: The last value evaluated (None for no data).
        last_evaluated_at: When it was last evaluated.
    """

    rule: Rule
    firing: bool = False
    streak: int = 0
    fired_at: float | None = None
    resolved_at: float | None = None
    last_value: float | None = None
    last_evaluated_at: float | None = None

    @classmethod
    def for_rule(cls, rule: Rule) -> RuleState:
        """A fresh, quiet state of ``rule``."""
        return cls(rule=rule)

    def cooling_down(self, at: float) -> bool:
        """Whether ``at`` is within the cool-down after the last resolve."""
        return self.resolved_at is not None and at < self.resolved_at + self.rule.cooldown_seconds

    def evaluate(self, value: float | None, at: float) -> Transition | None:
        """Feeds one evaluation and updates this state in place.

        Args:
            value: The metric's value, or None when there is no data.
            at: When, seconds since the epoch; not before the previous evaluation.

        Returns:
            The transition, when this evaluation fired or resolved the alert; else None.

        Raises:
            ValueError: When ``at`` is before the previous evaluation or not finite.
        """
        if not math.isfinite(at):
            raise ValueError(f"at must be a finite timestamp, got {at!r}")
        if self.last_evaluated_at is not None and at < self.last_evaluated_at:
            raise ValueError(
                f"at={at} is before the previous evaluation of rule {self.rule.name!r} at {self.last_evaluated_at}"
            )
        self.last_evaluated_at = at
        if value is None or math.isnan(value):
            self.last_value = None
            self.streak = 0
            return None
        value = float(value)
        self.last_value = value
        rule = self.rule
        if not self.firing:
            self.streak = self.streak + 1 if rule.breaches(value) else 0
            if self.streak >= rule.for_evaluations and not self.cooling_down(at):
                self.firing, self.streak, self.fired_at = True, 0, at
                return self._transition("fired", value, at)
            return None
        self.streak = self.streak + 1 if rule.clears(value) else 0
        if self.streak >= rule.for_evaluations:
            self.firing, self.streak, self.resolved_at = False, 0, at
            return self._transition("resolved", value, at)
        return None

    def _transition(self, kind: TransitionKind, value: float, at: float) -> Transition:
        rule = self.rule
        return Transition(
            rule=rule.name,
            kind=kind,
            metric=rule.metric,
            comparison=rule.comparison,
            value=value,
            threshold=rule.threshold,
            severity=rule.severity,
            at=at,
        )


def evaluate_all(states: Mapping[str, RuleState], values: Mapping[str, float | None], at: float) -> list[Transition]:
    """Evaluates several rules at once.

    Args:
        states: States by rule name (updated in place).
        values: Each rule's current value by rule name; a missing name counts as no data.
        at: When, seconds since the epoch.

    Returns:
        The transitions, in ``states`` order.
    """
    out: list[Transition] = []
    for name, state in states.items():
        transition = state.evaluate(values.get(name), at)
        if transition is not None:
            out.append(transition)
    return out


__all__ = ["Comparison", "Rule", "RuleState", "Severity", "Transition", "TransitionKind", "evaluate_all"]
