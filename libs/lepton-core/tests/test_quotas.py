"""Plans, limits, their refusals and the usage meter, without a server (lepton_core.quotas, lepton_core.usage)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from lepton.access.v1 import access_pb2
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2 as ev

from lepton_core import quotas
from lepton_core.access import MUTATING, ROLES
from lepton_core.access_service import RULES, SERVICE, limits_message
from lepton_core.errors import InvalidArgument, ResourceExhausted
from lepton_core.events import Event
from lepton_core.quotas import PLANS, Limits, PlanBook, PlanRecord, check_at_most, check_room
from lepton_core.rpc import status_code_for
from lepton_core.usage import UsageRecord, meter, usage_of

pytestmark = pytest.mark.timeout(30)


def test_every_plan_names_every_limit_and_the_wire_has_the_same_limits() -> None:
    assert set(PLANS) >= {"trial", "team", "unlimited"}
    assert tuple(access_pb2.Limits.DESCRIPTOR.fields_by_name) == quotas.LIMIT_NAMES
    assert PLANS["unlimited"] == Limits() and all(v == 0 for v in PLANS["unlimited"].model_dump().values())
    trial, team = PLANS["trial"].model_dump(), PLANS["team"].model_dump()
    # Every limit of the free trial is set, and the paid plan gives more of each.
    assert all(trial[name] > 0 for name in quotas.LIMIT_NAMES)
    assert all(team[name] > trial[name] for name in quotas.LIMIT_NAMES)
    assert quotas.DEFAULT_PLAN == "unlimited"
    wire = limits_message(PLANS["trial"])
    assert {f.name: v for f, v in wire.ListFields()} == trial


def test_a_refusal_names_the_limit_the_usage_the_limit_and_the_plan() -> None:
    plan = quotas.TenantPlan("acme", "trial", PLANS["trial"])
    with pytest.raises(ResourceExhausted) as err:
        check_room(plan, "datasets", 10, what="dataset 'x' would be one more")
    exc = err.value
    assert str(exc).startswith("datasets: 10 of 10 on plan trial; dataset 'x' would be one more; ")
    assert (exc.field, exc.limit, exc.used, exc.maximum, exc.plan) == ("datasets", "datasets", 10, 10, "trial")
    assert status_code_for(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED
    check_room(plan, "datasets", 9)  # the tenth fits
    with pytest.raises(ResourceExhausted, match=r"^stored_bytes: 953\.7 MiB \(1000000000 bytes\) of 1\.0 GiB"):
        check_room(plan, "stored_bytes", 1_000_000_000, adding=10**8, what="this version needs 100000000 bytes more")
    check_room(plan, "stored_bytes", 1_000_000_000, adding=quotas.GIB - 1_000_000_000)  # exactly full fits
    # No limit: never refused.
    unlimited = quotas.TenantPlan("acme", "unlimited", PLANS["unlimited"])
    check_room(unlimited, "datasets", 10**9)
    check_at_most(unlimited, "trials_per_search", 10**6, what="a search")
    with pytest.raises(ResourceExhausted, match=r"^trials_per_search: this search of 17 trials asks for 17, more"):
        check_at_most(plan, "trials_per_search", 17, what="this search of 17 trials")
    assert quotas.run_time_exceeded(plan, 1801.2).startswith("job_run_seconds: ran 1801 s of 1800 s on plan trial")


def test_the_book_applies_assignments_the_default_and_refuses_a_broken_record_strictly() -> None:
    book = PlanBook()
    assert book.plan_of("acme").plan == "unlimited" and not book.plan_of("acme").assigned
    book.apply(quotas.DEFAULT_KEY, PlanRecord(plan="team").model_dump_json().encode())
    assert (book.default, book.plan_of("acme").plan) == ("team", "team")
    record = PlanRecord(tenant="acme", plan="trial", overrides={"datasets": 50}, assigned_by="key_1")
    book.apply(quotas.plan_key("acme"), record.model_dump_json().encode())
    acme = book.plan_of("acme")
    assert (acme.plan, acme.assigned, acme.limits.datasets, acme.limits.deployments) == ("trial", True, 50, 2)
    assert acme.record == record and book.tenants() == ["acme"]
    book.apply("usage.acme", b"{}")  # not a plan entry
    book.apply(quotas.plan_key("acme"), None)
    assert book.plan_of("acme").plan == "team"
    book.apply(quotas.plan_key("odd"), b'{"plan": "platinum"}')
    assert book.plan_of("odd").plan == "trial"  # strictest, not unlimited
    book.apply(quotas.DEFAULT_KEY, None)
    assert book.default == "unlimited"


def test_plans_and_overrides_are_checked() -> None:
    assert quotas.check_plan("team") == "team"
    with pytest.raises(InvalidArgument, match="'gold' is not a plan; expected one of trial, team, unlimited"):
        quotas.check_plan("gold")
    assert quotas.check_overrides({"datasets": 0}) == {"datasets": 0}
    with pytest.raises(InvalidArgument) as err:
        quotas.check_overrides({"gpus": 1})
    assert err.value.field == "overrides" and "'gpus' is not a limit" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        quotas.check_overrides({"datasets": -1})
    assert err.value.field == "overrides.datasets"


def test_the_gateway_allowance_refuses_past_the_month() -> None:
    allowance = quotas.prediction_allowance(PlanBook(records=[PlanRecord(tenant="acme", plan="trial")]), "acme")
    assert (allowance.per_second, allowance.per_month) == (10, 100_000)
    assert allowance.refusal(99_999) is None
    refused = allowance.refusal(100_000)
    assert refused is not None and str(refused).startswith("predictions_per_month: 100000 of 100000 this month")
    assert allowance.rate_refusal().field == "predictions_per_second"
    assert quotas.prediction_allowance(PlanBook(), "acme").refusal(10**9) is None


def test_the_access_rules_name_the_new_calls_and_assigning_a_plan_is_audited() -> None:
    assert RULES[f"/{SERVICE}/SetPlan"].permission == "tenants.manage" and "tenants.manage" in MUTATING
    assert RULES[f"/{SERVICE}/GetUsage"].permission == "usage.read"
    assert {r for r, p in ROLES.items() if "usage.read" in p} == {"admin", "operator"}


_seq = iter(range(1, 10**6))


def event(data: Message, tenant: str = "acme", sequence: int | None = None, when: str = "") -> Event[Any]:
    n = next(_seq) if sequence is None else sequence
    return Event("id", "t", "/test", when or "2025-03-04T05:06:07Z", "", data, {}, tenant=tenant, sequence=n)


def lin(**fields: Any) -> common_pb2.Lineage:
    return common_pb2.Lineage(**fields)


def test_the_meter_counts_what_the_events_create_and_remove_once_each() -> None:
    record = UsageRecord(tenant="acme")
    version = ev.DatasetVersionCreated(
        dataset_name="sales", lineage=lin(dataset_version_id="dv_1"), object=common_pb2.ObjectRef(size=1000)
    )
    assert meter(record, event(version)) and not meter(record, event(version))  # a redelivery changes nothing
    other = ev.DatasetVersionCreated(
        dataset_name="stores", lineage=lin(dataset_version_id="dv_2"), object=common_pb2.ObjectRef(size=24)
    )
    meter(record, event(other))
    assert (record.stored_bytes, len(record.datasets)) == (1024, 2)
    assert meter(record, event(ev.DatasetDeleted(dataset_name="stores")))
    assert not meter(record, event(ev.DatasetDeleted(dataset_name="stores")))
    assert (record.stored_bytes, len(record.datasets)) == (1000, 1)

    # Jobs: queued, running (a trial's start runs its search), finished; a late event revives nothing.
    for job in ("job_a", "job_s"):
        meter(record, event(ev.TrainingQueued(lineage=lin(training_job_id=job))))
    assert record.jobs == {"job_a": "queued", "job_s": "queued"} and record.queued_jobs == 2
    meter(record, event(ev.TrainingStarted(lineage=lin(training_job_id="job_s_t3"))))
    meter(record, event(ev.TrainingStarted(lineage=lin(training_job_id="job_a"))))
    assert record.jobs == {"job_a": "running", "job_s": "running"} and record.queued_jobs == 0
    assert not meter(record, event(ev.TrainingCompleted(lineage=lin(training_job_id="job_s_t3"))))
    assert meter(record, event(ev.TrainingFailed(lineage=lin(training_job_id="job_a"))))
    assert meter(record, event(ev.TrainingCancelled(lineage=lin(training_job_id="job_s"))))
    assert not meter(record, event(ev.TrainingStarted(lineage=lin(training_job_id="job_a"))))
    assert record.jobs == {} and record.finished == ["job_a", "job_s"]

    # Deployments: any deployment event says it exists; deleted removes it.
    meter(record, event(ev.DeploymentRolloutStarted(lineage=lin(deployment="api"))))
    meter(record, event(ev.DeploymentReady(lineage=lin(deployment="api"))))
    meter(record, event(ev.DeploymentFailed(lineage=lin(deployment="batch"))))
    assert record.deployments == ["api", "batch"]
    meter(record, event(ev.DeploymentDeleted(lineage=lin(deployment="batch"))))
    assert record.deployments == ["api"]

    # Predictions: a batch counts its logged and unlogged requests, each stream sequence once.
    batch = ev.PredictionLogBatch(logs=[ev.PredictionLogged(), ev.PredictionLogged()], unlogged=5)
    assert meter(record, event(batch, sequence=10))
    assert not meter(record, event(batch, sequence=10))
    assert meter(record, event(ev.PredictionLogged(), sequence=11, when="2025-04-01T00:00:00Z"))
    assert record.predictions == {"2025-03": 7, "2025-04": 1}

    lines = {u.limit: u for u in usage_of(quotas.TenantPlan("acme", "trial", PLANS["trial"]), record, "2025-03")}
    assert list(lines) == list(quotas.LIMIT_NAMES)
    assert (lines["stored_bytes"].used, lines["stored_bytes"].maximum, lines["stored_bytes"].unit) == (
        1000,
        quotas.GIB,
        "bytes",
    )
    assert (lines["datasets"].used, lines["deployments"].used, lines["predictions_per_month"].used) == (1, 1, 7)
    assert not lines["job_run_seconds"].metered and lines["datasets"].metered
    assert datetime.now(UTC).year >= 2025


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` the rest."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def test_only_the_registry_writes_plans_and_usage_and_every_service_reads_the_plans() -> None:
    """The gateway also reads the usage (the month's predictions it enforces), and writes neither."""
    from lepton_core.nats_identity import ADMIN, GRANTS, Permissions, permissions

    for identity, grants in GRANTS.items():
        if identity == ADMIN:
            continue
        perms = permissions(identity)

        def may(subject: str, perms: Permissions = perms) -> bool:
            allowed = any(_matches(p, subject) for p in perms.publish_allow)
            return allowed and not any(_matches(p, subject) for p in perms.publish_deny)

        registry = identity == "registry"
        assert may("$KV.tenants.plan.acme") == registry, identity
        assert may("$KV.usage.acme") == registry, identity
        assert may("$JS.API.STREAM.INFO.KV_tenants") == grants.service, identity  # every service follows the plans
        assert may("$JS.API.STREAM.INFO.KV_usage") == (identity in ("registry", "gateway")), identity
        # The registry meters predictions with a durable of its own; the monitor's stays the monitor's.
        assert may("$JS.API.CONSUMER.DURABLE.CREATE.PREDICTIONS.registry-predictions") == registry, identity
    registry = permissions("registry")
    assert any(_matches(d, "$JS.API.CONSUMER.MSG.NEXT.PREDICTIONS.monitor") for d in registry.publish_deny)
