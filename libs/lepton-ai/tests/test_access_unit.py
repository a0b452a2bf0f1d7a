"""``client.keys``, ``client.whoami()``, ``client.audit()``, ``client.tenants`` and
``lepton keys|whoami|audit|tenants`` against the fake.

The fake's AccessService (fake_access.py) is served on the registry's port, as the platform
serves it; its keys' secrets can call the fake, so a key made here can say who it is.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from lepton.access.v1 import access_pb2
from typer.testing import CliRunner, Result

import lepton_ai as la
from lepton_ai._durations import parse_duration
from lepton_ai.access import DELETION_POLL_S, TenantDeletion, TenantPurge
from lepton_ai.cli import app, main

from .fake_access import PURGED
from .fakes import API_KEY, TENANT, FakePlatform

pytestmark = pytest.mark.timeout(30)

DAY = 86400
DOC = Path(__file__).resolve().parents[3] / "docs" / "sdk.md"
DELETE = "/lepton.data.v1.DataService/DeleteDataset"


def lepton(fake: FakePlatform, *args: str) -> Result:
    """``lepton --url <fake> --api-key <its key> ARGS``, run in this process; stdout and stderr apart."""
    return CliRunner().invoke(app, ["--url", fake.url, "--api-key", API_KEY, *args])


def flat(text: str) -> str:
    """Text out of rich's error box, its lines joined: what a reader sees, wrapping aside."""
    return " ".join(text.replace("│", " ").split())


def audit_record(fake: FakePlatform, minutes_ago: float, **fields: Any) -> access_pb2.AuditRecord:
    """A refusal of a dataset deletion in the fake's tenant, ``minutes_ago`` (fields override)."""
    values: dict[str, Any] = {
        "time": datetime.now(UTC) - timedelta(minutes=minutes_ago),
        "tenant": TENANT,
        "principal": "key:key_00000000beef",
        "key_id": "key_00000000beef",
        "service": "data",
        "method": DELETE,
        "resource": "dataset/ds_1",
        "permission": "datasets.write",
        "outcome": "PERMISSION_DENIED",
        "detail": "datasets.write: key key_00000000beef (role viewer) may not write datasets",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    return fake.access.add_record(**(values | fields))


# -- client.keys ----------------------------------------------------------------------------------


def test_create_sends_the_request_to_the_registrys_port_and_returns_the_secret_once(
    client: la.Client, fake: FakePlatform
) -> None:
    created = client.keys.create("editor", name="ci", expires="30d", grants={"model/churn": "deployer"})
    (call,) = fake.calls_to("CreateKey")
    assert (call.service, call.path) == ("registry", "/lepton.access.v1.AccessService/CreateKey")
    request = call.request
    assert (request.role, request.name, request.tenant, request.ttl_seconds) == ("editor", "ci", "", 30 * DAY)
    assert [(g.resource, g.role) for g in request.grants] == [("model/churn", "deployer")]
    key = created.key
    assert isinstance(key, la.KeyInfo) and key.id.startswith("key_")
    assert (key.name, key.tenant, key.role, key.state, key.creator) == ("ci", TENANT, "editor", "active", fake.key.id)
    assert key.grants == (("model/churn", "deployer"),)
    assert created.secret.startswith("lk_") and created.secret in fake.api_keys
    # The secret is for storing, never for showing: not in repr, str or the key's record.
    for shown in (repr(created), str(created), repr(key)):
        assert created.secret not in shown
    assert "secret" not in repr(created) and key.id in repr(created)
    # ... and it is a key: the platform knows who it is.
    with fake.client(created.secret) as ci:
        me = ci.whoami()
    assert (me.key_id, me.key_name, me.role, me.grants) == (key.id, "ci", "editor", (("model/churn", "deployer"),))


def test_timestamps_are_aware_utc_datetimes_and_unset_ones_are_none(client: la.Client, fake: FakePlatform) -> None:
    before = datetime.now(UTC)
    lasting = client.keys.create("viewer", name="dashboards", expires=timedelta(hours=12))
    forever = client.keys.create("viewer", name="notebook").key
    assert not fake.calls_to("CreateKey")[1].request.ttl_seconds  # None: until revoked
    assert (forever.expires, forever.revoked, forever.last_used) == (None, None, None)
    assert forever.created.tzinfo is UTC and before - timedelta(seconds=1) <= forever.created <= datetime.now(UTC)
    expires = lasting.key.expires
    assert expires is not None and expires.tzinfo is UTC
    assert abs(expires - (before + timedelta(hours=12))) < timedelta(seconds=5)
    used = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)
    fake.access.keys[forever.id].last_used.FromDatetime(used)
    listed = {k.id: k for k in client.keys.list()}
    assert listed[forever.id].last_used == used and listed[forever.id].last_used.tzinfo is UTC


def test_list_is_newest_first_and_asks_for_inactive_keys_only_when_told(client: la.Client, fake: FakePlatform) -> None:
    first = client.keys.create("viewer", name="first").key
    second = client.keys.create("editor", name="second").key
    client.keys.revoke(first)
    assert [k.name for k in client.keys.list()] == ["second", "unit"]
    everything = client.keys.list(include_inactive=True)
    assert [(k.id, k.state) for k in everything] == [
        (second.id, "active"),
        (first.id, "revoked"),
        (fake.key.id, "active"),
    ]
    requests = [c.request for c in fake.calls_to("ListKeys")]
    assert [(r.tenant, r.include_inactive) for r in requests] == [("", False), ("", True)]
    client.keys.list(tenant="acme")
    assert fake.calls_to("ListKeys")[-1].request.tenant == "acme"


def test_revoke_by_record_id_or_name_and_the_secret_stops_working(client: la.Client, fake: FakePlatform) -> None:
    created = client.keys.create("viewer", name="laptop")
    revoked = client.keys.revoke(created.key)
    request = fake.calls_to("RevokeKey")[0].request
    assert (request.key, request.tenant) == (created.key.id, TENANT)  # a KeyInfo names its tenant
    assert (revoked.id, revoked.state) == (created.key.id, "revoked")
    assert revoked.revoked is not None and revoked.revoked.tzinfo is UTC
    with fake.client(created.secret) as laptop, pytest.raises(la.Unauthenticated):
        laptop.whoami()
    other = client.keys.create("viewer", name="laptop").key  # the name is free again
    assert client.keys.revoke("laptop").id == other.id
    assert fake.calls_to("RevokeKey")[1].request.tenant == ""  # by name: the caller's tenant


def test_rotate_gives_a_new_secret_for_the_same_key_and_keeps_the_old_one_for_the_grace(
    client: la.Client, fake: FakePlatform
) -> None:
    old = client.keys.create("deployer", name="ci", expires="30d", grants=[("model/churn", "editor")])
    new = client.keys.rotate("ci", grace="1h")
    request = fake.calls_to("RotateKey")[0].request
    assert (request.key, request.tenant, request.grace_seconds) == ("ci", "", 3600)
    assert new.key.id != old.key.id and new.secret != old.secret
    assert (new.key.name, new.key.role, new.key.grants) == ("ci", "deployer", (("model/churn", "editor"),))
    assert new.key.expires is not None and abs(new.key.expires - old.key.expires) < timedelta(seconds=5)
    with fake.client(old.secret) as during_grace:
        assert during_grace.whoami().key_id == old.key.id
    at_once = client.keys.rotate(new.key)
    assert fake.calls_to("RotateKey")[1].request.grace_seconds == 0
    with fake.client(new.secret) as rotated, pytest.raises(la.Unauthenticated):
        rotated.whoami()
    assert at_once.secret not in repr(at_once)


# -- durations and grants -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30d", 30 * DAY),
        ("12h", 12 * 3600),
        ("90m", 90 * 60),
        ("45s", 45),
        (" 1.5h ", 5400),
        (timedelta(days=2, minutes=1), 2 * DAY + 60),
        (3600, 3600),
        (2.2, 3),  # a fraction of a second is rounded up
    ],
)
def test_a_duration_is_a_string_a_timedelta_or_seconds(
    client: la.Client, fake: FakePlatform, value: Any, seconds: int
) -> None:
    client.keys.create("viewer", name="k", expires=value)
    assert fake.calls_to("CreateKey")[0].request.ttl_seconds == seconds


def test_one_parser_serves_the_sdk_and_the_cli() -> None:
    assert parse_duration("1.5h", "--grace") == timedelta(minutes=90)
    assert parse_duration(timedelta(0), "--grace") == timedelta(0)
    with pytest.raises(la.InvalidArgument) as caught:
        parse_duration("90 minutes", "--grace")
    assert caught.value.message == "--grace: expected a duration such as 30d, 12h, 90m or 45s, got '90 minutes'"


@pytest.mark.parametrize("value", ["30 days", "1w", "", "d", "12", "-5m", "1h30m", -1, timedelta(hours=-1), True, [30]])
def test_a_bad_duration_is_refused_before_any_call_naming_the_field_and_the_form(
    client: la.Client, fake: FakePlatform, value: Any
) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        client.keys.create("viewer", name="k", expires=value)
    assert caught.value.field == "expires"
    assert "30d, 12h, 90m or 45s" in caught.value.message and repr(value) in caught.value.message
    with pytest.raises(la.InvalidArgument) as caught:
        client.keys.rotate("k", grace=value)
    assert caught.value.field == "grace"
    assert fake.calls == []


def test_a_zero_lifetime_is_refused_but_a_zero_grace_means_revoked_at_once(
    client: la.Client, fake: FakePlatform
) -> None:
    with pytest.raises(la.InvalidArgument, match=r"^expires: .*above zero \(None: the key never expires\)"):
        client.keys.create("viewer", name="k", expires="0s")
    client.keys.create("viewer", name="k")
    client.keys.rotate("k", grace=0)
    assert fake.calls_to("RotateKey")[0].request.grace_seconds == 0


def test_grants_are_a_mapping_or_pairs(client: la.Client, fake: FakePlatform) -> None:
    client.keys.create("viewer", name="a", grants={"model/churn": "editor", "dataset/ds_1": "viewer"})
    client.keys.create("viewer", name="b", grants=[("model/churn", "editor"), ("dataset/ds_1", "viewer")])
    client.keys.create("viewer", name="c", grants=(("model/churn", "deployer") for _ in range(1)))
    sent = [[(g.resource, g.role) for g in c.request.grants] for c in fake.calls_to("CreateKey")]
    assert sent == [
        [("model/churn", "editor"), ("dataset/ds_1", "viewer")],
        [("model/churn", "editor"), ("dataset/ds_1", "viewer")],
        [("model/churn", "deployer")],
    ]


@pytest.mark.parametrize(
    ("grants", "field"),
    [
        ("model/churn=editor", "grants"),
        (["model/churn=editor"], "grants[0]"),
        ([("model/churn", "editor"), ("model/churn",)], "grants[1]"),
        ([("", "editor")], "grants[0]"),
        ([("model/churn", 3)], "grants[0]"),
        ({"model/churn": None}, "grants[0]"),
    ],
)
def test_a_grant_that_is_not_a_resource_and_a_role_is_refused_naming_it(
    client: la.Client, fake: FakePlatform, grants: Any, field: str
) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        client.keys.create("viewer", name="k", grants=grants)
    assert caught.value.field == field and "('model/churn', 'editor')" in caught.value.message
    assert fake.calls == []


# -- whoami, audit --------------------------------------------------------------------------------


def test_whoami_maps_the_principal(client: la.Client, fake: FakePlatform) -> None:
    me = client.whoami()
    assert isinstance(me, la.Principal)
    assert (me.tenant, me.key_id, me.key_name, me.role, me.expires) == (TENANT, fake.key.id, "unit", "admin", None)
    assert "keys.manage" in me.permissions and isinstance(me.permissions, tuple) and me.grants == ()
    assert fake.calls_to("WhoAmI")[0].service == "registry"
    temporary = client.keys.create("viewer", name="temp", expires="1h")
    with fake.client(temporary.secret) as c:
        assert c.whoami().expires == temporary.key.expires


def test_audit_sends_the_filters_and_maps_every_field(client: la.Client, fake: FakePlatform) -> None:
    old = audit_record(fake, 120)
    recent = audit_record(fake, 5, outcome="OK", detail="", via="trainer", resource="dataset/ds_2")
    trail = client.audit(since=timedelta(hours=1))
    request = fake.calls_to("QueryAudit")[0].request
    since = request.since.ToDatetime(tzinfo=UTC)
    assert abs(since - (datetime.now(UTC) - timedelta(hours=1))) < timedelta(seconds=5)
    assert (request.principal, request.resource, request.limit, request.tenant) == ("", "", 1000, "")
    assert isinstance(trail, la.AuditTrail) and len(trail) == 1 and not trail.truncated
    (record,) = trail
    assert isinstance(record, la.AuditRecord) and record == trail[0] and trail.index(record) == 0
    assert record.time == recent.time.ToDatetime(tzinfo=UTC) and record.time.tzinfo is UTC
    assert (record.tenant, record.principal, record.key_id, record.via, record.service) == (
        TENANT, "key:key_00000000beef", "key_00000000beef", "trainer", "data",
    )  # fmt: skip
    assert (record.method, record.method_name, record.resource, record.permission) == (
        DELETE, "DeleteDataset", "dataset/ds_2", "datasets.write",
    )  # fmt: skip
    assert (record.outcome, record.detail, record.trace_id) == ("OK", "", old.trace_id)
    client.audit()  # unset: the platform's default, the last 24 hours
    assert not fake.calls_to("QueryAudit")[1].request.HasField("since")
    assert len(client.audit()) == 2


def test_audit_filters_limit_and_truncation(client: la.Client, fake: FakePlatform) -> None:
    for minutes in (30, 20, 10):
        audit_record(fake, minutes, resource=f"model/m{minutes}")
    audit_record(fake, 5, principal="key:key_0000000000aa", key_id="key_0000000000aa")
    start = datetime.now() - timedelta(hours=2)  # naive: local time
    trail = client.audit(start, principal="key_00000000beef", resource="model/", limit=2, tenant=TENANT)
    request = fake.calls_to("QueryAudit")[0].request
    assert request.since.ToDatetime(tzinfo=UTC) == start.astimezone(UTC)
    assert (request.principal, request.resource, request.limit, request.tenant) == (
        "key_00000000beef", "model/", 2, TENANT,
    )  # fmt: skip
    assert [r.resource for r in trail] == ["model/m30", "model/m20"] and trail.truncated
    assert trail.count(trail[0]) == 1 and list(trail[1:]) == [trail[1]]
    with pytest.raises(la.InvalidArgument, match=r"^limit: must be at least 1"):
        client.audit(limit=0)


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["CreateKey", "ListKeys", "RevokeKey", "RotateKey", "WhoAmI", "QueryAudit"])
def test_permission_denied_is_the_sdks_error_with_the_platforms_message(
    client: la.Client, fake: FakePlatform, method: str
) -> None:
    message = "keys.manage: key key_00000000beef (role viewer) may not manage keys"
    fake.fail(method, grpc.StatusCode.PERMISSION_DENIED, message)
    calls = {
        "CreateKey": lambda: client.keys.create("viewer", name="k"),
        "ListKeys": lambda: client.keys.list(),
        "RevokeKey": lambda: client.keys.revoke("k"),
        "RotateKey": lambda: client.keys.rotate("k"),
        "WhoAmI": lambda: client.whoami(),
        "QueryAudit": lambda: client.audit(),
    }
    with pytest.raises(la.PermissionDenied) as caught:
        calls[method]()
    assert (caught.value.message, caught.value.code, caught.value.field) == (
        message,
        "PERMISSION_DENIED",
        "keys.manage",
    )


def test_a_taken_name_is_a_conflict_and_an_unknown_key_not_found(client: la.Client) -> None:
    client.keys.create("viewer", name="ci")
    with pytest.raises(la.Conflict) as taken:
        client.keys.create("editor", name="ci")
    assert taken.value.field == "name"
    with pytest.raises(la.NotFound) as unknown:
        client.keys.revoke("key_0123456789ab")
    assert unknown.value.field == "key"


# -- the CLI --------------------------------------------------------------------------------------


def test_keys_create_prints_the_secret_once_with_the_key_id(fake: FakePlatform) -> None:
    result = lepton(
        fake, "keys", "create", "--role", "editor", "--name", "ci", "--expires", "12h",
        "--grant", "model/churn=deployer", "--grant", "dataset/ds_1=viewer",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request = fake.calls_to("CreateKey")[0].request
    assert (request.role, request.name, request.ttl_seconds) == ("editor", "ci", 12 * 3600)
    assert [(g.resource, g.role) for g in request.grants] == [("model/churn", "deployer"), ("dataset/ds_1", "viewer")]
    (key,) = [k for k in fake.access.keys.values() if k.name == "ci"]
    (secret,) = [s for s, i in fake.access.secrets.items() if i == key.id]
    assert result.stdout.count(secret) == 1 and secret not in result.stderr
    assert f"secret: {secret}\n" in result.stdout and key.id in result.stdout
    assert "shown now and never again" in result.stdout


def test_keys_create_without_a_name_lets_the_platform_name_it(fake: FakePlatform) -> None:
    result = lepton(fake, "keys", "create", "--role", "viewer")
    assert result.exit_code == 0, result.output
    assert fake.calls_to("CreateKey")[0].request.name == ""
    assert f"({fake.calls_to('CreateKey')[0].request.role}-" in result.stdout


def test_keys_create_as_json_has_the_secret_and_the_notice_on_stderr(fake: FakePlatform) -> None:
    result = lepton(fake, "--output", "json", "keys", "create", "--role", "viewer", "--name", "ci")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["secret"] in fake.access.secrets and printed["key"]["name"] == "ci"
    assert printed["key"]["expires"] is None and printed["key"]["created"].endswith("Z")
    assert "never again" in result.stderr and printed["secret"] not in result.stderr


@pytest.mark.parametrize(("option", "value"), [("--expires", "soon"), ("--expires", "30 days"), ("--grant", "model")])
def test_keys_create_refuses_a_bad_option_naming_it(fake: FakePlatform, option: str, value: str) -> None:
    result = lepton(fake, "keys", "create", "--role", "viewer", option, value)
    assert result.exit_code == 2 and option in result.stderr and fake.calls == []
    assert ("30d, 12h, 90m or 45s" if option == "--expires" else "KEY=VALUE") in flat(result.stderr)


def test_keys_list_is_a_table_without_any_secret(client: la.Client, fake: FakePlatform) -> None:
    created = client.keys.create("editor", name="ci", expires="30d")
    revoked = client.keys.create("viewer", name="gone")
    client.keys.revoke(revoked.key)
    result = lepton(fake, "keys", "list")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1]
    for column in ("id", "name", "tenant", "role", "state", "created", "expires", "last used"):
        assert column in header
    assert created.key.id in result.stdout and revoked.key.id not in result.stdout
    assert "never" in result.stdout and created.key.expires.strftime("%Y-%m-%dT%H:%M") in result.stdout
    everything = lepton(fake, "keys", "list", "--all", "--tenant", TENANT)
    assert revoked.key.id in everything.stdout and "revoked" in everything.stdout
    assert fake.calls_to("ListKeys")[-1].request.include_inactive
    as_json = json.loads(lepton(fake, "-o", "json", "keys", "list").stdout)
    assert [k["name"] for k in as_json] == ["ci", "unit"]
    for output in (result.stdout, everything.stdout, json.dumps(as_json)):
        assert not any(secret in output for secret in fake.access.secrets)


def test_keys_revoke_and_rotate(client: la.Client, fake: FakePlatform) -> None:
    client.keys.create("editor", name="ci")
    rotated = lepton(fake, "keys", "rotate", "ci", "--grace", "1h")
    assert rotated.exit_code == 0, rotated.output
    assert fake.calls_to("RotateKey")[0].request.grace_seconds == 3600
    new_id = fake.access.secrets[rotated.stdout.split("secret: ", 1)[1].split()[0]]
    assert rotated.stdout.count("secret: ") == 1 and new_id in rotated.stdout and "never again" in rotated.stdout
    assert "keeps working for 1h" in rotated.stderr
    revoked = lepton(fake, "keys", "revoke", new_id)
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked key {new_id} (ci)" in revoked.stdout
    assert fake.calls_to("RevokeKey")[0].request.key == new_id
    bad = lepton(fake, "keys", "rotate", "ci", "--grace", "an hour")
    assert bad.exit_code == 2 and "--grace" in bad.stderr


def test_whoami_prints_the_caller(fake: FakePlatform) -> None:
    result = lepton(fake, "whoami")
    assert result.exit_code == 0, result.output
    for shown in (TENANT, fake.key.id, "unit", "admin", "keys.manage", "never"):
        assert shown in result.stdout
    assert API_KEY not in result.stdout
    as_json = json.loads(lepton(fake, "-o", "json", "whoami").stdout)
    assert (as_json["key_id"], as_json["role"], as_json["expires"]) == (fake.key.id, "admin", None)


def test_audit_prints_a_table_of_the_records(fake: FakePlatform) -> None:
    audit_record(fake, 90)
    audit_record(fake, 3, outcome="OK", detail="", resource="dataset/ds_2", method="/lepton.data.v1.DataService/Upload")
    result = lepton(fake, "audit", "--since", "2h", "--resource", "dataset/", "--principal", "key_00000000beef")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for column in ("time", "principal", "service", "method", "resource", "outcome", "detail"):
        assert column in lines[1]
    (refused,) = [line for line in lines if "DeleteDataset" in line]
    for shown in ("key:key_00000000beef", "data", "dataset/ds_1", "PERMISSION_DENIED", "may not write datasets"):
        assert shown in refused
    assert DELETE not in result.stdout and "Upload" in result.stdout  # the method's own name
    request = fake.calls_to("QueryAudit")[0].request
    assert (request.resource, request.principal, request.limit) == ("dataset/", "key_00000000beef", 1000)
    assert abs(request.since.ToDatetime(tzinfo=UTC) - (datetime.now(UTC) - timedelta(hours=2))) < timedelta(seconds=5)
    assert "more records matched" not in result.stderr


def test_audit_says_when_more_matched_and_prints_json(fake: FakePlatform) -> None:
    for minutes in (3, 2, 1):
        audit_record(fake, minutes)
    result = lepton(fake, "audit", "--limit", "2", "--tenant", TENANT, "--since", "2025-01-31T09:00:00+00:00")
    assert result.exit_code == 0, result.output
    assert "more records matched than the 2 shown" in result.stderr
    assert fake.calls_to("QueryAudit")[0].request.since.ToDatetime(tzinfo=UTC) == datetime(2025, 1, 31, 9, tzinfo=UTC)
    printed = json.loads(lepton(fake, "-o", "json", "audit").stdout)
    assert printed["truncated"] is False and len(printed["records"]) == 3
    assert printed["records"][0]["method"] == DELETE and printed["records"][0]["time"].endswith("Z")


def test_a_refusal_exits_5_with_the_platforms_message(
    fake: FakePlatform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail("CreateKey", grpc.StatusCode.PERMISSION_DENIED, "keys.manage: role viewer may not manage keys")
    argv = ["lepton", "--url", fake.url, "--api-key", API_KEY, "keys", "create", "--role", "viewer"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 5
    assert "keys.manage: role viewer may not manage keys" in capsys.readouterr().err


# -- the async client -----------------------------------------------------------------------------


@pytest_asyncio.fixture
async def aclient(fake: FakePlatform) -> AsyncIterator[la.AsyncClient]:
    async with la.AsyncClient(API_KEY, fake.url) as client:
        yield client


async def test_the_async_client_awaits_keys_whoami_and_audit(aclient: la.AsyncClient, fake: FakePlatform) -> None:
    audit_record(fake, 1)
    created = await aclient.keys.create("viewer", name="async", expires="1d")
    assert isinstance(created, la.CreatedKey) and created.secret not in repr(created)
    assert [k.name for k in await aclient.keys.list()] == ["async", "unit"]
    rotated = await aclient.keys.rotate(created.key, grace=timedelta(minutes=5))
    assert (await aclient.keys.revoke(rotated.key)).state == "revoked"
    assert (await aclient.whoami()).key_id == fake.key.id
    trail = await aclient.audit(timedelta(minutes=10), resource="dataset/")
    assert [r.method_name for r in trail] == ["DeleteDataset"]
    assert fake.methods() == ["CreateKey", "ListKeys", "RotateKey", "RevokeKey", "WhoAmI", "QueryAudit"]


# -- the documented example -----------------------------------------------------------------------


def test_the_example_in_docs_runs_against_the_fake(fake: FakePlatform) -> None:
    section = DOC.read_text().split("## API keys, whoami and the audit trail", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    audit_record(fake, 10, resource="model/churn", method="/lepton.registry.v1.RegistryService/SetAlias", outcome="OK")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, str(DOC), "exec"), {"URL": fake.url, "API_KEY": API_KEY})
    lines = printed.getvalue().splitlines()
    secrets = [s for s, i in fake.access.secrets.items() if fake.access.keys[i].name == "ci"]
    assert len(secrets) == 2 and not any(s in line for s in secrets for line in lines)  # never printed
    assert lines[0] == "me: unit admin True"
    assert lines[1].startswith("created: CreatedKey(key=KeyInfo(id='key_") and lines[1].endswith("state='active'))")
    assert [line.split()[2:] for line in lines if line.startswith("key:")] == [
        ["ci", "editor", "active", "True"],
        ["unit", "admin", "active", "False"],
    ]
    assert lines[-4:-2] == ["rotated: ci True", "revoked: revoked"]
    assert re.fullmatch(r"audit: \S+ \S+ key:key_00000000beef SetAlias model/churn OK", lines[-2]), lines[-2]
    assert lines[-1] == "truncated: False"


# -- deleting a tenant ----------------------------------------------------------------------------

TENANT_DOC = "## Deleting a tenant"


def cells(text: str) -> str:
    """A table's text without its box (the header's rules too), each line's cells one space apart."""
    return "\n".join(" ".join(re.sub(r"[│┃]", " ", line).split()) for line in text.splitlines())


def operator(fake: FakePlatform) -> tuple[access_pb2.Key, str]:
    """An operator's key in the fake's tenant, and its secret."""
    return fake.access.add_key(TENANT, "operator", "op")


def doomed(
    fake: FakePlatform, tenant: str = "acme", *, services: tuple[str, ...] = ("data", "deployer", "registry")
) -> list[str]:
    """Two keys of ``tenant`` (their secrets), and the services its deletion waits on."""
    fake.access.purging = services
    return [fake.access.add_key(tenant, role, f"{role}-key")[1] for role in ("admin", "viewer")]


def test_delete_sends_the_name_twice_and_waits_until_every_service_has_purged(fake: FakePlatform) -> None:
    key, secret = operator(fake)
    secrets = doomed(fake)
    started = time.monotonic()
    with fake.client(secret) as op:
        deletion = op.tenants.delete("acme", confirm="acme", progress=False)
    elapsed = time.monotonic() - started
    (call,) = fake.calls_to("DeleteTenant")
    assert (call.service, call.request.tenant, call.request.confirm) == ("registry", "acme", "acme")
    assert isinstance(deletion, TenantDeletion) and deletion.done and deletion.pending == ()
    assert deletion.done_at is not None and deletion.done_at.tzinfo is UTC
    assert (deletion.tenant, deletion.requested_by, deletion.keys) == ("acme", key.id, 2)
    assert deletion.requested_at.tzinfo is UTC and deletion.requested_at <= deletion.done_at
    assert [p.service for p in deletion.purged] == ["data", "deployer", "registry"]
    (data, deployer, registry) = deletion.purged
    assert isinstance(data, TenantPurge) and data.purged_at.tzinfo is UTC
    assert (data.records, data.objects, data.messages, data.deployments) == PURGED["data"]
    assert (deployer.deployments, registry.messages) == (PURGED["deployer"][3], PURGED["registry"][2])
    # One look a service, each after a pause: three pauses of DELETION_POLL_S at least, no busy polling.
    assert [c.service for c in fake.calls_to("GetTenantDeletion")] == ["registry"] * 3
    assert elapsed >= 3 * DELETION_POLL_S
    assert not any(s in fake.api_keys for s in secrets)  # the tenant's keys are gone


def test_delete_without_waiting_answers_at_once_and_deletion_follows_it(fake: FakePlatform) -> None:
    _, secret = operator(fake)
    doomed(fake)
    with fake.client(secret) as op:
        started = op.tenants.delete("acme", confirm="acme", wait=False)
        assert (started.done, started.done_at, started.purged) == (False, None, ())
        assert started.pending == ("data", "deployer", "registry")
        assert fake.calls_to("GetTenantDeletion") == []
        later = op.tenants.deletion("acme")
        assert [p.service for p in later.purged] == ["data"] and later.pending == ("deployer", "registry")
        assert fake.calls_to("GetTenantDeletion")[0].request.tenant == "acme"
        with pytest.raises(la.NotFound) as never:
            op.tenants.deletion("globex")
    assert never.value.field == "tenant" and "never deleted" in never.value.message


def test_a_wait_past_its_timeout_is_unavailable_naming_the_services_still_to_report(fake: FakePlatform) -> None:
    _, secret = operator(fake)
    doomed(fake)
    fake.access.stalled = {"deployer"}
    with fake.client(secret) as op:
        with pytest.raises(la.Unavailable) as late:
            op.tenants.delete("acme", confirm="acme", timeout=1.0, progress=False)
        assert (late.value.field, late.value.code) == ("timeout", "DEADLINE_EXCEEDED")
        assert "not done after 1 s; still to report: deployer." in late.value.message
        assert "client.tenants.deletion('acme')" in late.value.message
        after = op.tenants.deletion("acme")  # it goes on: the others have purged
    assert [p.service for p in after.purged] == ["data", "registry"] and after.pending == ("deployer",)


def test_the_platform_decides_on_confirm_and_only_an_operator_deletes(client: la.Client, fake: FakePlatform) -> None:
    _, secret = operator(fake)
    secrets = doomed(fake)
    with fake.client(secret) as op:
        with pytest.raises(la.InvalidArgument) as mismatched:
            op.tenants.delete("acme", confirm="acne")
        assert fake.calls_to("DeleteTenant")[0].request.confirm == "acne"  # sent as given: no check of its own
        assert mismatched.value.field == "confirm" and "cannot be undone" in mismatched.value.message
        with pytest.raises(la.InvalidArgument, match=r"^timeout: must be more than 0"):
            op.tenants.delete("acme", confirm="acme", timeout=0)
    assert len(fake.calls_to("DeleteTenant")) == 1  # the bad timeout was refused before any call
    with pytest.raises(la.PermissionDenied, match=r"tenants\.delete"):
        client.tenants.delete("acme", confirm="acme")  # an admin's key
    assert all(s in fake.api_keys for s in secrets) and fake.access.deletions == {}


def test_the_progress_bar_counts_services_purged_of_all(fake: FakePlatform, capsys: pytest.CaptureFixture[str]) -> None:
    _, secret = operator(fake)
    doomed(fake)
    with fake.client(secret) as op:
        op.tenants.delete("acme", confirm="acme", progress=True)
        drawn = capsys.readouterr().err
        assert "delete tenant acme" in drawn and "3/3" in drawn
        op.tenants.delete("globex", confirm="globex", progress=False)
        assert capsys.readouterr().err == ""


def test_lepton_tenants_delete_refuses_without_yes(fake: FakePlatform) -> None:
    _, secret = operator(fake)
    secrets = doomed(fake)
    result = CliRunner().invoke(app, ["--url", fake.url, "--api-key", secret, "tenants", "delete", "acme"])
    assert result.exit_code == 2, result.output
    assert "cannot be undone" in flat(result.stderr) and "pass --yes" in flat(result.stderr)
    assert fake.calls_to("DeleteTenant") == [] and all(s in fake.api_keys for s in secrets)


def test_lepton_tenants_delete_prints_a_line_per_service_and_the_whole(fake: FakePlatform) -> None:
    _, secret = operator(fake)
    doomed(fake)
    result = CliRunner().invoke(app, ["--url", fake.url, "--api-key", secret, "tenants", "delete", "acme", "--yes"])
    assert result.exit_code == 0, result.output
    request = fake.calls_to("DeleteTenant")[0].request
    assert (request.tenant, request.confirm) == ("acme", "acme")
    lines = cells(result.stdout).splitlines()
    assert "service records objects messages deployments purged at" in lines[1]
    for service in ("data", "deployer", "registry"):
        (line,) = [line for line in lines if line.startswith(service + " ")]
        assert line.split()[1:5] == [str(n) for n in PURGED[service]] and line.endswith("Z")
    assert re.fullmatch(r"tenant acme deleted: 2 keys erased, 3 services purged, done at \S+Z", lines[-1]), lines[-1]


def test_lepton_tenants_delete_no_wait_then_deletion_and_json(fake: FakePlatform) -> None:
    _, secret = operator(fake)
    doomed(fake)
    base = ["--url", fake.url, "--api-key", secret]
    started = CliRunner().invoke(app, [*base, "tenants", "delete", "acme", "--yes", "--no-wait"])
    assert started.exit_code == 0, started.output
    assert fake.calls_to("GetTenantDeletion") == []
    text = cells(started.stdout)
    assert "data - - - - pending" in text and "0 of 3 services purged, 2 keys erased" in text
    assert "still to report: data, deployer, registry (lepton tenants deletion acme follows it)" in flat(text)
    shown = CliRunner().invoke(app, [*base, "tenants", "deletion", "acme"])
    assert shown.exit_code == 0, shown.output
    assert "1 of 3 services purged" in flat(shown.stdout) and "still to report: deployer, registry" in flat(
        shown.stdout
    )
    printed = json.loads(CliRunner().invoke(app, [*base, "-o", "json", "tenants", "deletion", "acme"]).stdout)
    assert (printed["tenant"], printed["keys"], printed["done"], printed["pending"]) == ("acme", 2, False, ["registry"])
    assert printed["requested_at"].endswith("Z") and printed["done_at"] is None
    assert [p["service"] for p in printed["purged"]] == ["data", "deployer"]
    assert printed["purged"][0] == {
        "service": "data",
        "purged_at": printed["purged"][0]["purged_at"],
        **dict(zip(("records", "objects", "messages", "deployments"), PURGED["data"], strict=True)),
    } and printed["purged"][0]["purged_at"].endswith("Z")


def test_lepton_tenants_delete_past_its_timeout_exits_6_naming_the_services(
    fake: FakePlatform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, secret = operator(fake)
    doomed(fake)
    fake.access.stalled = {"deployer"}
    argv = ["lepton", "--url", fake.url, "--api-key", secret, "tenants", "delete", "acme", "--yes", "--timeout", "0.6"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 6
    assert "not done after 0.6 s; still to report: deployer." in flat(capsys.readouterr().err)


async def test_the_async_client_awaits_tenants(fake: FakePlatform) -> None:
    _, secret = operator(fake)
    doomed(fake)
    async with la.AsyncClient(secret, fake.url) as op:
        deletion = await op.tenants.delete("acme", confirm="acme", progress=False)
        assert deletion.done and (await op.tenants.deletion("acme")) == deletion


def test_the_tenant_deletion_example_in_docs_runs_against_the_fake(fake: FakePlatform) -> None:
    section = DOC.read_text().split(TENANT_DOC, 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    _, secret = operator(fake)
    doomed(fake, services=("data", "registry"))
    doomed(fake, "globex", services=("data", "registry"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, str(DOC), "exec"), {"URL": fake.url, "API_KEY": secret})
    assert printed.getvalue().splitlines() == [
        "purged: data " + " ".join(map(str, PURGED["data"])),
        "purged: registry " + " ".join(map(str, PURGED["registry"])),
        "deleted: acme 2 True",
        "pending: data, registry",
        "later: 1 purged",
    ]
