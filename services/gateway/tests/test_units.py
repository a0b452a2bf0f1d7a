"""The gateway's parts without servers: wire reading and readdressing, routes, rate limits, keys."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tritonclient.grpc import service_pb2

from lepton_core.access import PREDICT, ROLES, GrantRecord, KeyBook, KeyRecord, digest
from lepton_core.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from lepton_core.quotas import PlanBook, PlanRecord
from lepton_core.triton_pool import HostPool, PoolEntry
from lepton_core.usage import UsageRecord
from lepton_gateway import front, grpc_api, permissions
from lepton_gateway.access import Gate, RateLimited
from lepton_gateway.allowance import Allowances
from lepton_gateway.limits import RateLimits
from lepton_gateway.routes import RouteTable
from lepton_gateway.settings import GatewaySettings
from lepton_gateway.wire import MalformedMessage, name_and_version, readdressed
from lepton_ml.triton_model import request_gate


def _infer_request(name: str = "prices", version: str = "") -> bytes:
    request = service_pb2.ModelInferRequest(model_name=name, model_version=version, id="r1")
    request.inputs.add(name="features", datatype="FP64", shape=[1, 3])
    request.raw_input_contents.append(b"\x00" * 24)
    request.parameters["traceparent"].string_param = "00-abc-def-01"
    return bytes(request.SerializeToString())


def test_reads_the_name_and_version_and_readdresses_without_touching_the_tensors() -> None:
    data = _infer_request("prices", "3")
    assert name_and_version(data) == ("prices", "3")
    moved = service_pb2.ModelInferRequest.FromString(readdressed(data, "acme--prices--next", "4"))
    assert (moved.model_name, moved.model_version) == ("acme--prices--next", "4")
    assert moved.raw_input_contents == [b"\x00" * 24] and moved.inputs[0].shape == [1, 3]
    assert moved.parameters["traceparent"].string_param == "00-abc-def-01" and moved.id == "r1"
    # A caller that repeats field 1 is read as a parser reads it: the last value.
    assert name_and_version(data + readdressed(b"", "other"))[0] == "other"


def test_a_long_name_and_an_answer_are_readdressed_too() -> None:
    name = "n" * 300  # a length that takes two varint bytes
    answer = service_pb2.ModelInferResponse(model_name="acme--x", model_version="1").SerializeToString()
    assert service_pb2.ModelInferResponse.FromString(readdressed(answer, name)).model_name == name


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0a", b"\x0b\x00", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"])
def test_bytes_that_are_not_a_message_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        name_and_version(data)


def _record(tenant: str, name: str, routes: list[tuple[str, int, float]], **extra: object) -> bytes:
    doc = {
        "tenant": tenant,
        "name": name,
        "state": extra.pop("state", "ready"),
        "triton_model": f"{tenant}--{name}",
        "hosts": extra.pop("hosts", ["default"]),
        "routes": [{"triton_model": m, "model_version": v, "weight": w} for m, v, w in routes],
        "updated_at": "2026-01-01T00:00:00Z",
        **extra,
    }
    return json.dumps(doc).encode()


def _table() -> RouteTable:
    pool = HostPool.of("10.0.0.1:8001", {"gpu": PoolEntry(url="10.0.0.2:8001", tenants=["acme"])})
    table = RouteTable(pool, random.Random(0))
    table.apply("acme.prices", _record("acme", "prices", [("acme--prices", 1, 0.75), ("acme--prices--next", 2, 0.25)]))
    table.apply("acme.version.prices.1", b"{}")  # what the deployer knows of a version: not a deployment
    table.apply("beta.prices", _record("beta", "prices", [("beta--prices", 5, 1.0)], hosts=["gpu"]))
    table.apply("acme.loading", _record("acme", "loading", [], state="loading"))
    table.apply("acme.broken", _record("acme", "broken", [], state="failed"))
    return table


def test_routes_follow_the_weights_and_a_version_asked_for() -> None:
    table = _table()
    seen = [table.target("acme", "prices").model for _ in range(2000)]
    assert 0.70 < seen.count("acme--prices") / len(seen) < 0.80
    pinned = table.target("acme", "prices", "2")
    assert (pinned.host, pinned.model, pinned.version) == ("10.0.0.1:8001", "acme--prices--next", "2")
    assert table.stable("acme", "prices").model == "acme--prices"
    with pytest.raises(NotFound, match="serves version 1, 2, not 7"):
        table.target("acme", "prices", "7")


def test_another_tenants_deployment_is_not_found_and_unknown_states_say_why() -> None:
    table = _table()
    with pytest.raises(NotFound):
        table.target("acme", "nothing")
    with pytest.raises(NotFound):
        table.target("beta", "loading")  # acme's
    with pytest.raises(Unavailable, match="state loading"):
        table.target("acme", "loading")
    with pytest.raises(FailedPrecondition):
        table.target("acme", "broken")
    # beta's host is open to acme alone in this pool: the gateway will not send beta's requests there.
    with pytest.raises(Unavailable, match="host this gateway does not know"):
        table.target("beta", "prices")
    table.apply("acme.prices", None)
    with pytest.raises(NotFound):
        table.target("acme", "prices")


def test_a_record_under_another_tenants_key_is_ignored() -> None:
    table = _table()
    table.apply("beta.stolen", _record("acme", "stolen", [("acme--stolen", 1, 1.0)]))
    with pytest.raises(NotFound):
        table.target("beta", "stolen")


def test_rate_limits_are_token_buckets_per_tenant() -> None:
    now = [0.0]
    limits = RateLimits(2.0, per_tenant={"big": 0.0}, clock=lambda: now[0])
    assert [limits.allow("a") for _ in range(3)] == [True, True, False]
    assert limits.allow("b")  # its own bucket
    assert all(limits.allow("big") for _ in range(1000))  # 0: no limit
    now[0] += 0.5
    assert limits.allow("a") and not limits.allow("a")


def _key(
    secret: str, role: str, tenant: str = "acme", grants: tuple[tuple[str, str], ...] = (), **times: datetime
) -> KeyRecord:
    return KeyRecord(
        id=f"key_{secret}",
        name=f"{role} key",
        tenant=tenant,
        role=role,
        digest=digest(secret),
        creator="test",
        created=datetime.now(UTC),
        grants=[GrantRecord(resource=r, role=g) for r, g in grants],
        **times,
    )


def test_keys_decide_the_tenant_and_the_rate() -> None:
    gate = Gate(KeyBook.of({"k1": "acme"}), RateLimits(1.0))
    assert gate.admit("Bearer k1", "ModelInfer").tenant == "acme"
    with pytest.raises(RateLimited, match="over its rate of 1 requests a second"):
        gate.admit("Bearer k1", "ModelInfer")
    with pytest.raises(Unauthenticated, match="no API key"):
        gate.authenticate(None, "ModelInfer")
    with pytest.raises(Unauthenticated, match="not valid"):
        gate.authenticate("Bearer nope", "ModelInfer")


def test_a_role_without_predict_is_refused_naming_the_permission_before_it_takes_a_token() -> None:
    book = KeyBook([_key("viewer-0001", "viewer"), _key("infer-0001", "inference")])
    gate = Gate(book, RateLimits(1.0))
    for method in ("ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig", "ServerMetadata"):
        with pytest.raises(PermissionDenied, match=f"{method} needs the permission deployments.predict") as exc:
            gate.admit("Bearer viewer-0001", method)
        assert "has role viewer" in str(exc.value)
    principal = gate.admit("Bearer infer-0001", "ModelInfer")  # the bucket's one token: the viewer took none
    assert (principal.tenant, principal.role) == ("acme", "inference")


def test_every_role_with_predict_is_admitted_and_every_one_without_is_not() -> None:
    secrets = {role: f"secret-of-{role}" for role in ROLES}
    book = KeyBook([_key(secret, role) for role, secret in secrets.items()])
    gate = Gate(book, RateLimits(0.0))
    for role, secret in secrets.items():
        if PREDICT in ROLES[role]:
            assert gate.admit(f"Bearer {secret}", "ModelInfer").role == role
        else:
            with pytest.raises(PermissionDenied, match=r"deployments\.predict"):
                gate.admit(f"Bearer {secret}", "ModelInfer")


def test_revoked_and_expired_keys_are_unauthenticated_saying_which() -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    book = KeyBook([_key("gone-0001", "admin", revoked=past), _key("old-0001", "admin", expires=past)])
    gate = Gate(book, RateLimits(0.0))
    with pytest.raises(Unauthenticated, match="was revoked at"):
        gate.admit("Bearer gone-0001", "ModelInfer")
    with pytest.raises(Unauthenticated, match="expired at"):
        gate.admit("Bearer old-0001", "ModelInfer")


def test_a_grant_on_one_deployment_admits_calls_for_it_alone() -> None:
    book = KeyBook([_key("granted-0001", "viewer", grants=(("deployment/prices", "deployer"),))])
    gate = Gate(book, RateLimits(0.0))
    principal = gate.admit("Bearer granted-0001", "ModelInfer")  # it may predict somewhere
    gate.require(principal, "ModelInfer", "prices")
    with pytest.raises(PermissionDenied, match=r"deployments\.predict on deployment/other"):
        gate.require(principal, "ModelInfer", "other")
    with pytest.raises(PermissionDenied, match=r"deployments\.predict"):
        gate.admit("Bearer granted-0001", "ServerMetadata")  # names no deployment: the role decides


def test_the_permission_table_names_every_method_the_gateway_registers() -> None:
    assert set(permissions.RULES) == {permissions.full_name(m) for m in grpc_api.METHODS}
    for method in grpc_api.METHODS:
        rule = permissions.RULES[permissions.full_name(method)]
        if method in grpc_api.REFUSED:
            assert rule.permission == "deployments.write"
        else:
            assert rule.permission == PREDICT, method


def test_refusals_are_written_to_the_audit_trail() -> None:
    written: list[dict[str, str]] = []

    class Trail:
        async def write(self, **record: str) -> None:
            written.append(record)

    async def run() -> None:
        book = KeyBook([_key("viewer-0002", "viewer")])
        gate = Gate(book, RateLimits(0.0), Trail())  # type: ignore[arg-type]
        for authorization in ("Bearer nope", "Bearer viewer-0002"):
            with pytest.raises((Unauthenticated, PermissionDenied)):
                gate.admit(authorization, "ModelInfer")
        await asyncio.sleep(0)

    asyncio.run(run())
    assert [(r["outcome"], r["tenant"], r["permission"]) for r in written] == [
        ("UNAUTHENTICATED", "", PREDICT),
        ("PERMISSION_DENIED", "acme", PREDICT),
    ]
    assert written[1]["method"] == "/inference.GRPCInferenceService/ModelInfer"


def test_settings_and_the_models_gate_agree_on_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_GATEWAY_HOSTS", '{"gpu": {"url": "10.0.0.2:8001", "tenants": ["acme"]}}')
    pool = GatewaySettings().pool()
    assert pool.address("acme", "gpu") == "10.0.0.2:8001" and pool.name_of("beta", "gpu") is None
    from lepton_gateway.access import SECRET_HEADER

    assert SECRET_HEADER == request_gate.SECRET_PARAMETER


def test_the_models_gate_refuses_requests_without_the_secret(tmp_path: object) -> None:
    import pathlib

    secret_file = pathlib.Path(str(tmp_path)) / "secret"
    secret_file.write_text("s3cret-s3cret-s3cret\n")
    gate = request_gate.InferenceGate.from_environment({request_gate.SECRET_FILE_ENV: str(secret_file)})
    gate.check({request_gate.SECRET_PARAMETER: "s3cret-s3cret-s3cret"})
    for params in ({}, {request_gate.SECRET_PARAMETER: "guess"}, {request_gate.SECRET_PARAMETER: 1}):
        with pytest.raises(ValueError, match="through the Lepton gateway"):
            gate.check(params)
    closed = request_gate.InferenceGate.from_environment({})
    with pytest.raises(ValueError, match="no inference secret"):
        closed.check({request_gate.SECRET_PARAMETER: "s3cret-s3cret-s3cret"})


def test_the_nginx_front_says_what_to_install_when_nginx_or_its_lua_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = HostPool.of("127.0.0.1:8001", {})
    monkeypatch.setattr(front, "MODULES", (*front.MODULES[:1], tmp_path / "ngx_http_lua_module.so"))
    with pytest.raises(FailedPrecondition, match=r"needs .*ngx_http_lua_module.so: apt-get install nginx libnginx"):
        front.NginxFront("127.0.0.1", 1, pool)


def test_the_state_pushed_to_nginx_holds_digests_not_keys_and_every_route() -> None:
    pool = HostPool.of("127.0.0.1:8001", {"gpu": PoolEntry(url="10.0.0.5:8001", tenants=["acme"])})
    table = RouteTable(pool)
    table.apply("acme.prices", _record("acme", "prices", [("acme--prices", 1, 0.9), ("acme--prices--next", 2, 0.1)]))
    limits = RateLimits(100.0, 0.0, {"slow": 1.0})
    book = KeyBook.of({"k-acme-secret": "acme"}, role="inference")
    state = front.FrontState(book, "the-secret", limits, table, pool)
    lines = state.render().decode().splitlines()
    assert "k-acme-secret" not in "\n".join(lines)
    (record,) = book.records()
    sha256 = hashlib.sha256(b"k-acme-secret").hexdigest()
    assert f"key\t{sha256}\tacme\t{record.id}\t0\tall" in lines
    assert "secret\tthe-secret" in lines and "rate\t100.0\t0.0" in lines and "tenantrate\tslow\t1.0" in lines
    route = next(line for line in lines if line.startswith("route\t"))
    assert route.split("\t")[1:] == [
        "acme/prices",
        "ready",
        "triton_0",
        "acme--prices\x1f1\x1f0.9",
        "acme--prices--next\x1f2\x1f0.1",
    ]
    # The record's separators cannot be smuggled in through a deployment's name.
    table.apply("acme.bad\tname", _record("acme", "bad\tname", [("acme--x", 1, 1.0)]))
    # Nor through a Triton model's name in a record.
    table.apply("acme.odd", _record("acme", "odd", [("acme--o\x1fdd", 1, 1.0)]))
    assert sum(line.startswith("route\t") for line in state.render().decode().splitlines()) == 1


def test_the_gateways_plaintext_rest_api_stays_on_loopback_unless_told() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"http_host: 0\.0\.0\.0 reaches beyond this machine"):
        GatewaySettings(http_port=8080, http_host="0.0.0.0")
    GatewaySettings(http_port=8080, http_host="0.0.0.0", insecure=True)
    GatewaySettings(http_port=0, http_host="0.0.0.0")  # no REST API served


def test_nginx_is_sent_the_keys_that_may_predict_with_when_they_end_and_each_change() -> None:
    pool = HostPool.of("127.0.0.1:8001", {})
    now = datetime.now(UTC)
    soon, later, past = now + timedelta(hours=1), now + timedelta(hours=2), now - timedelta(seconds=1)
    book = KeyBook(
        [
            _key("admin-0001", "admin"),
            _key("viewer-0001", "viewer"),  # cannot predict: its calls are the gateway process's to refuse
            _key("granted-0001", "viewer", grants=(("deployment/prices", "deployer"),)),
            _key("readonly-0001", "viewer", grants=(("deployment/prices", "viewer"),)),  # a grant without predict
            _key("expiring-0001", "inference", expires=soon),
            _key("revoking-0001", "inference", expires=later, revoked=soon),
            _key("revoked-0001", "admin", revoked=past),
            _key("expired-0001", "admin", expires=past),
            _key("odd-0001", "admin", tenant="ac\tme"),
        ]
    )
    state = front.FrontState(book, None, RateLimits(0.0), RouteTable(pool), pool)
    keys = {
        line.split("\t")[1]: line.split("\t")[2:]
        for line in state.render().decode().splitlines()
        if line.startswith("key")
    }
    assert not state.stale
    end = str(int(soon.timestamp()))
    assert keys == {
        digest("admin-0001"): ["acme", "key_admin-0001", "0", "all"],
        digest("granted-0001"): ["acme", "key_granted-0001", "0", "granted"],
        digest("expiring-0001"): ["acme", "key_expiring-0001", end, "all"],
        digest("revoking-0001"): ["acme", "key_revoking-0001", end, "all"],
    }
    record = book.get("key_admin-0001")
    assert record is not None
    book.put(record.model_copy(update={"revoked": now}))
    assert state.stale
    assert digest("admin-0001") not in state.render().decode()


def test_a_plan_lowers_a_tenants_rate_and_a_used_up_month_refuses_everywhere() -> None:
    month = datetime.now(UTC)
    plans = PlanBook(
        records=[
            PlanRecord(
                tenant="acme", plan="trial", overrides={"predictions_per_second": 2, "predictions_per_month": 3}
            ),
            PlanRecord(tenant="big", plan="unlimited"),
        ]
    )
    allowances = Allowances(plans, clock=lambda: month)
    now = [0.0]
    limits = RateLimits(5.0, per_tenant={"big": 100.0}, clock=lambda: now[0], plan_rate=allowances.plan_rate)
    assert limits.rate_of("acme") == 2.0  # the plan's, lower than the gateway's 5
    assert limits.rate_of("big") == 100.0  # unlimited plan: the configured rate stands
    assert limits.default_rate == 5.0  # the default plan (unlimited) leaves the configured default
    assert [limits.allow("acme") for _ in range(3)] == [True, True, False]
    allowances.apply_usage(
        "acme", UsageRecord(tenant="acme", predictions={f"{month:%Y-%m}": 3}).model_dump_json().encode()
    )
    refusal = allowances.refusal("acme")
    assert refusal is not None and str(refusal).startswith("predictions_per_month: 3 of 3 this month on plan trial")
    assert allowances.refusal("big") is None
    gate = Gate(KeyBook.of({"k" * 40: "acme"}, role="inference"), RateLimits(0.0), allowances=allowances)
    with pytest.raises(ResourceExhausted, match="predictions_per_month"):
        gate.admit("Bearer " + "k" * 40, "ModelInfer")
    # nginx is told the lower rate and the refusal, word for word.
    pool = HostPool.of("127.0.0.1:8001", {})
    state = front.FrontState(KeyBook(), None, limits, RouteTable(pool), pool, allowances)
    pushed = state.render().decode().splitlines()
    assert "tenantrate\tacme\t2.0" in pushed and "tenantrate\tbig\t100.0" in pushed
    assert f"blocked\tacme\t{refusal}" in pushed
    assert not state.stale
    allowances.apply_usage("acme", None)  # a new month
    assert state.stale
