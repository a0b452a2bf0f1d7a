"""Alert rules: K consecutive evaluations, hysteresis band, cool-down, no data, and no alert storms."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from lepton_monitor.rules import Rule, RuleState, Transition, evaluate_all


def run(state: RuleState, values: list[float | None], start: float = 0.0, step: float = 10.0) -> list[Transition]:
    out = []
    for k, value in enumerate(values):
        t = state.evaluate(value, start + k * step)
        if t is not None:
            out.append(t)
    return out


def latency_rule(**overrides: object) -> Rule:
    fields: dict[str, object] = {
        "name": "p95 slow",
        "metric": "latency_p95_ms",
        "comparison": ">",
        "threshold": 100.0,
        "for_evaluations": 3,
        "resolve_margin": 20.0,
        "cooldown_seconds": 0.0,
    }
    fields.update(overrides)
    return Rule.model_validate(fields)


def test_fires_after_k_consecutive_breaches() -> None:
    state = RuleState.for_rule(latency_rule())
    assert run(state, [150, 150, 90, 150, 150]) == []  # a good value breaks the run
    t = state.evaluate(150, 50)
    assert t == Transition(
        rule="p95 slow",
        kind="fired",
        metric="latency_p95_ms",
        comparison=">",
        value=150.0,
        threshold=100.0,
        severity="warning",
        at=50.0,
    )
    assert state.firing and state.fired_at == 50.0
    assert state.evaluate(150, 60) is None  # already firing


def test_resolves_only_below_the_hysteresis_band_for_k_evaluations() -> None:
    state = RuleState.for_rule(latency_rule())
    assert [t.kind for t in run(state, [150, 150, 150])] == ["fired"]
    # Below the threshold but inside the band (80, 100]: still firing.
    assert run(state, [95, 85, 81, 99, 80.5], start=100) == []
    assert state.firing
    # At or below 80 three times in a row resolves; a value in the band breaks the run.
    assert run(state, [80, 70, 90, 70, 60], start=200) == []
    transitions = run(state, [50], start=300)
    assert [(t.kind, t.value, t.at) for t in transitions] == [("resolved", 50.0, 300.0)]
    assert not state.firing and state.resolved_at == 300.0


def test_no_data_neither_fires_nor_resolves() -> None:
    state = RuleState.for_rule(latency_rule(for_evaluations=2))
    assert run(state, [150, None, 150, float("nan"), 150]) == []  # gaps break the run
    assert [t.kind for t in run(state, [150], start=100)] == ["fired"]
    assert run(state, [None] * 20, start=200) == [] and state.firing
    assert state.last_value is None
    assert [t.kind for t in run(state, [10, 10], start=500)] == ["resolved"]


def test_cooldown_after_resolve() -> None:
    state = RuleState.for_rule(latency_rule(for_evaluations=1, cooldown_seconds=60.0))
    assert [t.kind for t in run(state, [150, 10], start=0)] == ["fired", "resolved"]  # resolved at 10
    assert state.evaluate(150, 20) is None and state.evaluate(150, 69.9) is None  # cooling down
    fired = state.evaluate(150, 70)  # breaches kept counting, so it fires as soon as the cool-down ends
    assert fired is not None and fired.kind == "fired"


def test_less_than_rule() -> None:
    rule = Rule(
        name="traffic gone", metric="requests", comparison="<", threshold=10, resolve_margin=5, for_evaluations=2
    )
    state = RuleState.for_rule(rule)
    kinds = [(t.kind, t.value) for t in run(state, [20, 5, 3, 12, 14, 15, 16])]
    assert kinds == [("fired", 3.0), ("resolved", 16.0)]  # 12 and 14 are inside the band [10, 15)


def test_noisy_series_fires_once_per_incident() -> None:
    rng = np.random.default_rng(0)
    threshold = 100.0
    # Quiet, an incident oscillating around the threshold, quiet, a second incident, quiet.
    phases = [(60.0, 60), (100.0, 120), (60.0, 60), (105.0, 90), (60.0, 60)]
    series: list[float] = []
    incident: list[int] = []  # which incident each evaluation belongs to, -1 outside
    for k, (level, length) in enumerate(phases):
        series += (level + rng.uniform(-25, 25, length)).tolist()
        incident += [k // 2 if k % 2 else -1] * length
    naive = RuleState.for_rule(latency_rule(for_evaluations=1, resolve_margin=0.0))
    naive_fires = [t for t in run(naive, list(series)) if t.kind == "fired"]
    assert len(naive_fires) > 20  # the series really crosses the threshold back and forth

    state = RuleState.for_rule(latency_rule(threshold=threshold, cooldown_seconds=300.0))
    transitions = run(state, list(series))
    fires = [t for t in transitions if t.kind == "fired"]
    fired_in = [incident[int(t.at // 10)] for t in fires]
    assert fired_in == [0, 1]  # exactly one per incident, none outside
    resolved_in = [incident[int(t.at // 10)] for t in transitions if t.kind == "resolved"]
    assert resolved_in == [-1, -1]  # each resolves once the quiet phase begins
    assert [t.kind for t in transitions] == ["fired", "resolved", "fired", "resolved"]


def test_state_round_trips_through_json() -> None:
    values: list[float | None] = [150, 150, None, 150, 150, 150, 90, 50, 50, 50, 150, 150, 150]
    whole = RuleState.for_rule(latency_rule(cooldown_seconds=15.0))
    expected = run(whole, values)
    state = RuleState.for_rule(latency_rule(cooldown_seconds=15.0))
    got: list[Transition] = []
    for k, value in enumerate(values):
        state = RuleState.model_validate_json(state.model_dump_json())  # as if read back from KV each time
        t = state.evaluate(value, k * 10.0)
        if t is not None:
            got.append(t)
    assert got == expected and [t.kind for t in got] == ["fired", "resolved", "fired"]
    assert state == whole


def test_evaluate_all_and_bad_inputs() -> None:
    states = {
        "slow": RuleState.for_rule(latency_rule(name="slow", for_evaluations=1)),
        "errors": RuleState.for_rule(
            Rule(name="errors", metric="error_rate", comparison=">", threshold=0.05, for_evaluations=1)
        ),
    }
    fired = evaluate_all(states, {"slow": 500.0}, at=10.0)  # "errors" has no value: no data
    assert [t.rule for t in fired] == ["slow"]
    with pytest.raises(ValueError, match="before the previous evaluation"):
        states["slow"].evaluate(1.0, 5.0)
    bad_fields: list[dict[str, object]] = [
        {"for_evaluations": 0},
        {"resolve_margin": -1.0},
        {"comparison": ">="},
        {"threshold": float("inf")},
    ]
    for bad in bad_fields:
        with pytest.raises(ValidationError):
            latency_rule(**bad)
