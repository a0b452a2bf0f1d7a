"""``client.usage()``, ``client.plans`` and ``lepton usage|plans`` against the fake; ``la.ResourceExhausted``.

The fake's AccessService (fake_access.py) answers the usage a test sets and the platform's presets.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import grpc
import pytest
from lepton.access.v1 import access_pb2
from typer.testing import CliRunner, Result

import lepton_ai as la
from lepton_ai.cli import EXIT_CODES, app, main

from .fakes import API_KEY, TENANT, FakePlatform

pytestmark = pytest.mark.timeout(30)


def lepton(fake: FakePlatform, *args: str, key: str = API_KEY) -> Result:
    return CliRunner().invoke(app, ["--url", fake.url, "--api-key", key, *args])


def exits(fake: FakePlatform, monkeypatch: pytest.MonkeyPatch, *args: str, key: str = API_KEY) -> int:
    """``lepton ARGS`` through the entry point, which maps errors to exit codes; the code."""
    monkeypatch.setattr(sys, "argv", ["lepton", "--url", fake.url, "--api-key", key, *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def set_usage(fake: FakePlatform, tenant: str = TENANT) -> None:
    usage = access_pb2.Usage(
        tenant=tenant,
        plan="trial",
        month="2025-03",
        limits=[
            access_pb2.LimitUsage(limit="stored_bytes", used=3 * 1024**2, maximum=2**30, metered=True, unit="bytes"),
            access_pb2.LimitUsage(limit="datasets", used=4, maximum=10, metered=True),
            access_pb2.LimitUsage(limit="job_run_seconds", used=0, maximum=1800, metered=False, unit="s"),
            access_pb2.LimitUsage(limit="deployments", used=1, maximum=0, metered=True),
        ],
    )
    usage.metered_at.FromDatetime(datetime(2025, 3, 4, 5, 6, 7))
    fake.access.usage[tenant] = usage


def operator(fake: FakePlatform) -> str:
    _, secret = fake.access.add_key(TENANT, "operator", "op")
    return secret


def test_usage_maps_every_line_and_a_line_is_found_by_its_limit(client: la.Client, fake: FakePlatform) -> None:
    set_usage(fake)
    usage = client.usage()
    assert (usage.tenant, usage.plan, usage.month) == (TENANT, "trial", "2025-03")
    assert usage.metered_at == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert usage["datasets"] == la.LimitUsage("datasets", 4, 10, True, "")
    assert usage["job_run_seconds"].metered is False and usage["stored_bytes"].unit == "bytes"
    with pytest.raises(KeyError, match="'gpus' is not a limit; expected one of stored_bytes, datasets"):
        usage["gpus"]
    fresh = client.usage("elsewhere")  # nothing metered yet: no time
    assert (fresh.tenant, fresh.metered_at, fresh.limits) == ("elsewhere", None, ())


def test_plans_are_listed_and_set_with_the_limits_named_only(client: la.Client, fake: FakePlatform) -> None:
    plans = client.plans.list()
    assert [(p.name, p.default) for p in plans] == [("trial", False), ("team", False), ("unlimited", True)]
    assert plans[0].limits["datasets"] == 10 and plans[2].limits["datasets"] == 0
    with fake.client(operator(fake)) as op:
        assigned = op.plans.set("acme", "team", limits={"datasets": 3, "deployments": 0})
    assert (assigned.tenant, assigned.plan, assigned.assigned) == ("acme", "team", True)
    assert assigned.overrides == {"datasets": 3, "deployments": 0}
    assert assigned.limits["datasets"] == 3 and assigned.limits["stored_bytes"] == 100 * 2**30
    assert assigned.assigned_at is not None and assigned.assigned_at.tzinfo is not None
    (sent,) = fake.access.set_plans
    assert [f.name for f, _ in sent.overrides.ListFields()] == ["datasets", "deployments"]  # 0 is sent, as set
    # An admin may not; a wrong limit is refused before any call.
    with pytest.raises(la.PermissionDenied, match=r"tenants\.manage"):
        client.plans.set("acme", "trial")
    for limits, message in (({"gpus": 1}, "limits: 'gpus' is not a limit"), ({"datasets": 2.5}, "limits.datasets")):
        with pytest.raises(la.InvalidArgument, match=message):
            client.plans.set("acme", "trial", limits=limits)
    assert len(fake.access.set_plans) == 1


def test_a_limit_is_resource_exhausted_naming_it_and_the_cli_exits_9(
    client: la.Client, fake: FakePlatform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = "datasets: 10 of 10 on plan trial; dataset 'c' would be one more; free some, or ask an operator"
    fake.fail("ListDatasets", grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
    with pytest.raises(la.ResourceExhausted) as err:
        client.datasets.list()
    assert (err.value.field, err.value.code, err.value.message) == ("datasets", "RESOURCE_EXHAUSTED", refusal)
    assert EXIT_CODES[la.ResourceExhausted] == 9
    assert exits(fake, monkeypatch, "data", "list") == 9
    assert "datasets: 10 of 10 on plan trial" in flat(capsys.readouterr().err)


def test_lepton_usage_prints_each_limit_with_its_unit_and_json_for_scripts(fake: FakePlatform) -> None:
    set_usage(fake)
    table = lepton(fake, "usage")
    assert table.exit_code == 0, table.stderr
    text = flat(table.stdout)
    assert "stored_bytes 3.0 MiB 1.0 GiB 1021.0 MiB" in text, text
    assert "datasets 4 10 6" in text and "job_run_seconds - 1800 s -" in text and "deployments 1 none -" in text
    assert f"tenant {TENANT}, plan trial; last metered 2025-03-04T05:06:07Z" in flat(table.stderr)
    data = json.loads(lepton(fake, "-o", "json", "usage").stdout)
    assert data["plan"] == "trial" and data["metered_at"] == "2025-03-04T05:06:07Z"
    assert data["limits"][1] == {"limit": "datasets", "used": 4, "maximum": 10, "metered": True, "unit": ""}


def test_lepton_plans_lists_and_sets(
    fake: FakePlatform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = lepton(fake, "plans", "list")
    assert listed.exit_code == 0 and "unlimited *" in flat(listed.stdout), listed.stdout
    key = operator(fake)
    done = lepton(fake, "plans", "set", "acme", "trial", "--limit", "datasets=50", key=key)
    assert done.exit_code == 0 and "tenant acme is on plan trial with datasets=50" in flat(done.stdout), done.stderr
    as_json = json.loads(lepton(fake, "-o", "json", "plans", "set", "acme", "team", key=key).stdout)
    assert (as_json["plan"], as_json["overrides"], as_json["assigned_at"].endswith("Z")) == ("team", {}, True)
    bad = lepton(fake, "plans", "set", "acme", "trial", "--limit", "datasets=many", key=key)
    assert bad.exit_code == 2 and "--limit: expected NAME=<whole number>, got datasets=many" in flat(bad.stderr)
    assert exits(fake, monkeypatch, "plans", "set", "acme", "gold", key=key) == 3
    assert "plan: 'gold' is not a plan" in flat(capsys.readouterr().err)
    assert [r.plan for r in fake.access.set_plans] == ["trial", "team"]
