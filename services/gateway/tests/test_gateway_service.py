"""The gateway as a process, against real NATS and the real Triton: keys, roles, tenants, routes, limits, REST.

Two probe models (``probe_model.py``) play a deployment's stable and staged versions; the
deployment record the deployer would write is put into the ``deployments`` bucket by hand, and
the key records the registry would write into the ``keys`` bucket (``set_keys``: admin keys,
unless a test names another role).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import ssl
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from lepton_core.access import KEYS_BUCKET, KeyRecord, digest
from lepton_core.audit import query
from lepton_core.quotas import TENANTS_BUCKET, PlanRecord, plan_key
from lepton_core.tls import write_self_signed
from lepton_core.usage import USAGE_BUCKET, UsageRecord, month_of
from lepton_platform.processes import TritonServer, free_port
from lepton_platform.testing import StartService, admin_connect, set_keys

KEY, OTHER_KEY, SLOW_KEY = "key-acme-0123456789", "key-beta-0123456789", "key-slow-0123456789"
KEYS = {KEY: "acme", OTHER_KEY: "beta", SLOW_KEY: "slow"}
PROBE = Path(__file__).parent / "probe_model.py"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _probe_config(name: str) -> str:
    return json.dumps(
        {
            "name": name,
            "backend": "python",
            "max_batch_size": 8,
            "input": [{"name": "x", "data_type": "TYPE_FP64", "dims": [1]}],
            "output": [
                {"name": "y", "data_type": "TYPE_FP64", "dims": [1]},
                {"name": "info", "data_type": "TYPE_STRING", "dims": [1]},
            ],
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        }
    )


def _record(tenant: str, name: str, routes: list[tuple[str, int, float]]) -> bytes:
    return json.dumps(
        {
            "tenant": tenant,
            "name": name,
            "state": "ready",
            "triton_model": f"{tenant}--{name}",
            "hosts": ["default"],
            "routes": [{"triton_model": m, "model_version": v, "weight": w} for m, v, w in routes],
        }
    ).encode()


async def _put_records(nats_url: str, records: dict[str, bytes]) -> None:
    nc = await admin_connect(nats_url, "test-gateway-records")
    try:
        kv = await nc.jetstream().key_value("deployments")
        for key, value in records.items():
            await kv.put(key, value)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def models(triton: TritonServer, nats_url: str) -> Iterator[None]:
    """The probe models in Triton, and the records that make them two tenants' deployments."""
    client = triton_grpc.InferenceServerClient(triton.url)
    for model in ("acme--prices", "acme--prices--next", "beta--secret"):
        client.load_model(
            model,
            config=_probe_config(model),
            files={"file:1/model.py": PROBE.read_bytes()},
            headers=triton.control.grpc_headers(),
            client_timeout=120,
        )
    asyncio.run(
        _put_records(
            nats_url,
            {
                "acme.prices": _record("acme", "prices", [("acme--prices", 1, 0.5), ("acme--prices--next", 1, 0.5)]),
                "beta.secret": _record("beta", "secret", [("beta--secret", 1, 1.0)]),
            },
        )
    )
    try:
        yield
    finally:
        for model in ("acme--prices", "acme--prices--next", "beta--secret"):
            client.unload_model(model, headers=triton.control.grpc_headers())
        client.close()


def _start(service: StartService, triton: TritonServer, front: str, **settings: str) -> tuple[str, str]:
    """A gateway on the session's Triton: its gRPC address and its REST base URL (``settings`` added)."""
    http_port = free_port()
    address = service(
        "gateway",
        KEYS,
        triton_url=triton.url,
        inference_secret_file=str(triton.inference_secret_file),
        http_port=str(http_port),
        tenant_rates=json.dumps({"slow": 1}),
        front=front,
        **settings,
    )
    return address, f"http://127.0.0.1:{http_port}"


@pytest.fixture(scope="module", params=["nginx", "none"])
def gateway(
    request: pytest.FixtureRequest, models: None, service: StartService, triton: TritonServer
) -> tuple[str, str]:
    """The gateway's gRPC and REST addresses: every test runs with nginx in front, and without."""
    return _start(service, triton, request.param)


def _nginx_of(pid: int) -> tuple[int, Path]:
    """The nginx master a gateway process started, and its configuration file."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            # nginx rewrites its title: "nginx: master process nginx -p <dir> -c <file>"
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().split()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and "master" in argv and "-c" in argv:
            return int(proc.name), Path(argv[argv.index("-c") + 1])
    raise AssertionError(f"no nginx started by process {pid}")


def _x(rows: int = 2) -> list[triton_grpc.InferInput]:
    inp = triton_grpc.InferInput("x", [rows, 1], "FP64")
    inp.set_data_from_numpy(np.arange(rows, dtype=np.float64).reshape(rows, 1))
    return [inp]


def _infer(address: str, key: str | None, name: str = "prices", **kwargs: Any) -> triton_grpc.InferResult:
    client = triton_grpc.InferenceServerClient(address)
    headers = {"authorization": f"Bearer {key}"} if key else None
    try:
        return client.infer(name, _x(), headers=headers, client_timeout=30, **kwargs)
    finally:
        client.close()


def _status(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


def test_tritonclient_with_a_key_infers_through_the_routes(gateway: tuple[str, str]) -> None:
    seen = set()
    for _ in range(30):
        result = _infer(gateway[0], KEY)
        assert result.as_numpy("y").reshape(-1).tolist() == [0.0, 2.0]
        info = json.loads(result.as_numpy("info")[0][0])
        assert info["secret_ok"] is True  # the gateway's secret reached the model
        assert result.get_response().model_name == "prices"  # the deployment's name, not Triton's
        seen.add(info["model"])
    assert seen == {"acme--prices", "acme--prices--next"}  # both routes of the canary served


def test_the_trace_context_reaches_the_model(gateway: tuple[str, str]) -> None:
    client = triton_grpc.InferenceServerClient(gateway[0])
    try:
        result = client.infer(
            "prices", _x(), headers={"authorization": f"Bearer {KEY}", "traceparent": TRACEPARENT}, client_timeout=30
        )
    finally:
        client.close()
    assert json.loads(result.as_numpy("info")[0][0])["traceparent"] == TRACEPARENT


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_no_key_or_a_wrong_key_is_unauthenticated(gateway: tuple[str, str], key: str | None) -> None:
    with pytest.raises(InferenceServerException) as exc:
        _infer(gateway[0], key)
    assert _status(exc) == "StatusCode.UNAUTHENTICATED"


def _fresh_key(nats_url: str, role: str, tenant: str = "acme") -> tuple[str, KeyRecord]:
    """A new key of ``role`` in ``tenant``, no other test's: its secret and its record."""
    secret = f"key-{role}-{secrets.token_hex(12)}"
    (record,) = set_keys(nats_url, {secret: tenant}, role=role)
    return secret, record


async def _put_key(nats_url: str, record: KeyRecord) -> None:
    """Writes ``record`` into the ``keys`` bucket, as the registry does when a key is revoked or changed."""
    nc = await admin_connect(nats_url, "test-gateway-keys")
    try:
        kv = await nc.jetstream().key_value(KEYS_BUCKET)
        await kv.put(record.id, record.model_dump_json().encode())
    finally:
        await nc.close()


def _outcome(address: str, key: str) -> tuple[str, str]:
    """A ModelInfer of ``prices`` with ``key``: ``OK``, or the status code's name, and the message."""
    try:
        _infer(address, key)
    except InferenceServerException as exc:
        return str(exc.status()).removeprefix("StatusCode."), exc.message() or ""
    return "OK", ""


def _until(what: str, done: Callable[[], bool], timeout: float = 15.0) -> float:
    """Polls ``done`` until it is true; returns the seconds that took."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout:g} s"
        time.sleep(0.02)
    return time.monotonic() - start


_BODY = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}


def _admitted_by_nginx(service: StartService, address: str, key: str, record: KeyRecord) -> None:
    """With the nginx front, waits until nginx admits ``key`` itself (it has the record): not the
    gateway process behind it, so what follows tests nginx's own check."""
    try:
        _, conf = _nginx_of(service.process(address).proc.pid)
    except AssertionError:
        return  # front "none": the gateway process alone
    admin = conf.parent / "admin.sock"
    _until(
        "nginx admits the key itself",
        lambda: _outcome(address, key)[0] == "OK" and record.id in asyncio.run(_nginx_seen(admin)),
    )


def test_a_viewer_key_is_refused_naming_the_permission_and_an_inference_key_predicts(
    gateway: tuple[str, str], nats_url: str
) -> None:
    viewer, viewer_record = _fresh_key(nats_url, "viewer")
    inference, _ = _fresh_key(nats_url, "inference")
    _until("the inference key predicts", lambda: _outcome(gateway[0], inference)[0] == "OK")
    _until("the viewer key is known", lambda: _outcome(gateway[0], viewer)[0] != "UNAUTHENTICATED")
    client = triton_grpc.InferenceServerClient(gateway[0])
    headers = {"authorization": f"Bearer {viewer}"}
    calls: dict[str, Callable[[], object]] = {
        "infer": lambda: client.infer("prices", _x(), headers=headers),
        "metadata": lambda: client.get_model_metadata("prices", headers=headers),
        "config": lambda: client.get_model_config("prices", headers=headers),
        "ready": lambda: client.is_model_ready("prices", headers=headers),
        "server metadata": lambda: client.get_server_metadata(headers=headers),
    }
    try:
        for what, call in calls.items():
            with pytest.raises(InferenceServerException) as exc:
                call()
            assert _status(exc) == "StatusCode.PERMISSION_DENIED", what
            assert "needs the permission deployments.predict" in (exc.value.message() or ""), what
            assert "has role viewer" in (exc.value.message() or ""), what
        assert client.is_server_live()  # probes still need no key
    finally:
        client.close()
    for url, body in ((f"{gateway[1]}/v2/models/prices/infer", _BODY), (f"{gateway[1]}/v2/models/prices", None)):
        status, answer = _http(url, viewer, body)
        assert status == 403 and "needs the permission deployments.predict" in answer["error"], answer
    result = _infer(gateway[0], inference)
    assert result.as_numpy("y").reshape(-1).tolist() == [0.0, 2.0]
    status, answer = _http(f"{gateway[1]}/v2/models/prices/infer", inference, _BODY)
    assert status == 200 and answer["model_name"] == "prices", answer

    async def refusals() -> list[str]:
        nc = await admin_connect(nats_url, "test-gateway-audit")
        try:
            found, _ = await query(nc.jetstream(), "acme", principal=viewer_record.id)
        finally:
            await nc.close()
        return [f"{r.service} {r.outcome} {r.permission}" for r in found]

    # Each refusal is in the audit trail (written beside the answer, not before it).
    _until("the refusals audited", lambda: "gateway PERMISSION_DENIED deployments.predict" in asyncio.run(refusals()))


def test_a_revoked_key_is_refused_within_two_seconds(
    gateway: tuple[str, str], nats_url: str, service: StartService
) -> None:
    secret, record = _fresh_key(nats_url, "inference")
    _until("the new key predicts", lambda: _outcome(gateway[0], secret)[0] == "OK")
    _admitted_by_nginx(service, gateway[0], secret, record)
    asyncio.run(_put_key(nats_url, record.model_copy(update={"revoked": datetime.now(UTC)})))
    took = _until("the revoked key refused", lambda: _outcome(gateway[0], secret)[0] == "UNAUTHENTICATED")
    assert took < 2.0, f"the revoked key was served for {took:.2f} s"
    code, message = _outcome(gateway[0], secret)  # and from then on
    assert code == "UNAUTHENTICATED" and f"the API key {record.id} was revoked at" in message
    status, answer = _http(f"{gateway[1]}/v2/models/prices/infer", secret, _BODY)
    assert status == 401 and "was revoked at" in answer["error"], answer


def test_an_expired_key_is_refused_and_a_key_stops_working_when_it_expires(
    gateway: tuple[str, str], nats_url: str, service: StartService
) -> None:
    expired, record = _fresh_key(nats_url, "inference")
    asyncio.run(_put_key(nats_url, record.model_copy(update={"expires": datetime.now(UTC) - timedelta(minutes=1)})))
    _until("the expired key refused", lambda: "expired at" in _outcome(gateway[0], expired)[1])
    assert _outcome(gateway[0], expired)[0] == "UNAUTHENTICATED"
    status, answer = _http(f"{gateway[1]}/v2/models/prices/infer", expired, _BODY)
    assert status == 401 and "expired at" in answer["error"], answer
    # A key that expires while it is used: no record changes then, so nginx checks the time itself.
    expiring, record = _fresh_key(nats_url, "inference")
    expires = datetime.now(UTC) + timedelta(seconds=5)
    record = record.model_copy(update={"expires": expires})
    asyncio.run(_put_key(nats_url, record))
    _until("the expiring key predicts", lambda: _outcome(gateway[0], expiring)[0] == "OK")
    _admitted_by_nginx(service, gateway[0], expiring, record)
    assert datetime.now(UTC) < expires, "the test's key expired before nginx knew it: a slow machine?"
    _until("the key refused once expired", lambda: _outcome(gateway[0], expiring)[0] == "UNAUTHENTICATED")
    refused = datetime.now(UTC)
    assert expires <= refused < expires + timedelta(seconds=2), (expires, refused)
    assert "expired at" in _outcome(gateway[0], expiring)[1]


def test_another_tenants_deployment_is_not_found_for_everything(gateway: tuple[str, str]) -> None:
    client = triton_grpc.InferenceServerClient(gateway[0])
    headers = {"authorization": f"Bearer {KEY}"}
    calls = {
        "infer": lambda: client.infer("secret", _x(), headers=headers),
        "metadata": lambda: client.get_model_metadata("secret", headers=headers),
        "config": lambda: client.get_model_config("secret", headers=headers),
        "ready": lambda: client.is_model_ready("secret", headers=headers),
        "triton's own name": lambda: client.infer("beta--secret", _x(), headers=headers),
    }
    try:
        for what, call in calls.items():
            with pytest.raises(InferenceServerException) as exc:
                call()
            assert _status(exc) == "StatusCode.NOT_FOUND", what
        # Its owner gets them.
        owner = {"authorization": f"Bearer {OTHER_KEY}"}
        assert client.is_model_ready("secret", headers=owner)
        assert client.get_model_metadata("secret", headers=owner).name == "secret"
        config = client.get_model_config("secret", headers=owner).config
        assert config.name == "secret" and [i.name for i in config.input] == ["x"] and not config.parameters
    finally:
        client.close()


def test_model_control_and_the_like_are_refused(gateway: tuple[str, str], triton: TritonServer) -> None:
    client = triton_grpc.InferenceServerClient(gateway[0])
    headers = {"authorization": f"Bearer {KEY}"}
    try:
        for call in (
            lambda: client.unload_model("prices", headers=headers),
            lambda: client.load_model("prices", headers=headers, config="{}"),
            lambda: client.get_model_repository_index(headers=headers),
            lambda: client.get_inference_statistics(headers=headers),
            lambda: client.get_log_settings(headers=headers),
        ):
            with pytest.raises(InferenceServerException) as exc:
                call()
            assert _status(exc) == "StatusCode.PERMISSION_DENIED"
        assert client.is_server_live()  # probes need no key
    finally:
        client.close()
    assert triton_grpc.InferenceServerClient(triton.url).is_model_ready("acme--prices")  # nothing changed


def test_a_tenant_over_its_rate_is_resource_exhausted(gateway: tuple[str, str]) -> None:
    codes = []
    for _ in range(3):
        try:
            _infer(gateway[0], SLOW_KEY, name="anything")
            codes.append("OK")
        except InferenceServerException as exc:
            codes.append(str(exc.status()))
    assert "StatusCode.RESOURCE_EXHAUSTED" in codes  # 1 a second: the second call within it is refused


def _http(
    url: str, key: str | None, body: dict[str, Any] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_one_bucket_a_tenant_for_grpc_and_rest(gateway: tuple[str, str]) -> None:
    time.sleep(1.2)  # the slow tenant's bucket (1 a second) full again
    with pytest.raises(InferenceServerException) as first:
        _infer(gateway[0], SLOW_KEY, name="anything")
    assert _status(first) == "StatusCode.NOT_FOUND"  # the call took the token, then found nothing
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}
    status, answer = _http(f"{gateway[1]}/v2/models/anything/infer", SLOW_KEY, body)
    assert status == 429, answer
    assert answer["error"] == "tenant 'slow' is over its rate of 1 requests a second; slow down and retry"
    client = triton_grpc.InferenceServerClient(gateway[0])
    try:
        with pytest.raises(InferenceServerException) as metadata:
            client.get_model_metadata("anything", headers={"authorization": f"Bearer {SLOW_KEY}"})
        assert _status(metadata) == "StatusCode.RESOURCE_EXHAUSTED"
    finally:
        client.close()


def test_plain_http_with_a_key_infers_and_keeps_tenants_apart(gateway: tuple[str, str], triton: TritonServer) -> None:
    base = gateway[1]
    body = {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [1.5, 2.5]}]}
    status, answer = _http(f"{base}/v2/models/prices/infer", KEY, body)
    assert status == 200, answer
    assert answer["model_name"] == "prices"
    y = next(o for o in answer["outputs"] if o["name"] == "y")
    assert y["data"] == [3.0, 5.0] and y["shape"] == [2, 1]
    assert _http(f"{base}/v2/models/prices/infer", None, body)[0] == 401
    assert _http(f"{base}/v2/models/prices/infer", "wrong", body)[0] == 401
    assert _http(f"{base}/v2/models/secret/infer", KEY, body)[0] == 404
    assert _http(f"{base}/v2/models/secret", KEY)[0] == 404
    assert _http(f"{base}/v2/models/prices", KEY)[1]["name"] == "prices"
    assert _http(f"{base}/v2/repository/index", KEY, {})[0] == 403
    assert _http(f"{base}/v2/health/live", None)[0] == 200
    # Triton's own readiness, passed on: the session's Triton may hold other tests' unready models.
    with triton_grpc.InferenceServerClient(triton.url) as direct:
        ready = direct.is_server_ready()
    assert _http(f"{base}/v2/health/ready", None)[0] == (200 if ready else 503)
    bad = {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [1.0]}]}
    status, answer = _http(f"{base}/v2/models/prices/infer", KEY, bad)
    assert status == 400 and "inputs[0]" in answer["error"]


def test_a_new_deployment_is_served_and_a_deleted_one_is_not_found(gateway: tuple[str, str], nats_url: str) -> None:
    record = _record("acme", "fresh", [("acme--prices", 1, 1.0)])
    asyncio.run(_put_records(nats_url, {"acme.fresh": record}))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert _infer(gateway[0], KEY, name="fresh").get_response().model_name == "fresh"
                break
            except InferenceServerException:
                assert time.monotonic() < deadline, "the new deployment was not served within 15 s"
                time.sleep(0.1)
    finally:
        asyncio.run(_delete_record(nats_url, "acme.fresh"))
    deadline = time.monotonic() + 15
    while True:
        try:
            _infer(gateway[0], KEY, name="fresh")
        except InferenceServerException as exc:
            assert str(exc.status()) == "StatusCode.NOT_FOUND"
            break
        assert time.monotonic() < deadline, "the deleted deployment was still served after 15 s"
        time.sleep(0.1)


def test_a_deployment_whose_model_its_host_lost_is_unavailable_not_not_found(
    gateway: tuple[str, str], nats_url: str
) -> None:
    """A route to a model its Triton does not have (a host that restarted, until the deployer loads it again)
    is UNAVAILABLE (HTTP 503), which clients retry, in the deployment's words: not Triton's NOT_FOUND, which
    would say the deployment is gone and name the tenant's Triton model."""
    asyncio.run(_put_records(nats_url, {"acme.lost": _record("acme", "lost", [("acme--lost", 1, 1.0)])}))
    expected = "deployment 'lost' is not loaded on its Triton host right now; retry shortly"
    try:
        deadline = time.monotonic() + 15
        while True:  # until the gateway (and nginx, a push later) route it: NOT_FOUND "no deployment" before
            with pytest.raises(InferenceServerException) as exc:
                _infer(gateway[0], KEY, name="lost")
            if _status(exc) != "StatusCode.NOT_FOUND":
                break
            assert time.monotonic() < deadline, f"still {exc.value.message()} after 15 s"
            time.sleep(0.1)
        assert (_status(exc), exc.value.message()) == ("StatusCode.UNAVAILABLE", expected)
        body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}
        assert _http(f"{gateway[1]}/v2/models/lost/infer", KEY, body) == (503, {"error": expected})
    finally:
        asyncio.run(_delete_record(nats_url, "acme.lost"))


async def _delete_record(nats_url: str, key: str) -> None:
    nc = await admin_connect(nats_url, "test-gateway-records")
    try:
        await (await nc.jetstream().key_value("deployments")).delete(key)
    finally:
        await nc.close()


def test_bytes_that_are_not_one_message_are_invalid_and_compressed_requests_served(gateway: tuple[str, str]) -> None:
    import grpc

    with grpc.insecure_channel(gateway[0]) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for garbage in (b"\x0a\xff\xff\xff\xff\x0f", b"\x0b", b"\x12\x05ab"):
            with pytest.raises(grpc.RpcError) as exc:
                infer(garbage, metadata=[("authorization", f"Bearer {KEY}")], timeout=30)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, garbage
            assert "not a valid message" in (exc.value.details() or "")
        with pytest.raises(grpc.RpcError) as exc:
            infer(b"\x0b", metadata=[("authorization", "Bearer wrong")], timeout=30)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the key first, whatever the bytes
    compressed = _infer(gateway[0], KEY, compression_algorithm="gzip")
    assert compressed.as_numpy("y").reshape(-1).tolist() == [0.0, 2.0]
    assert compressed.get_response().model_name == "prices"


async def _nginx_seen(admin_socket: Path) -> dict[str, float]:
    """The keys nginx's fast path admitted (and forgets them, as the gateway's collection does)."""
    connector = aiohttp.UnixConnector(path=str(admin_socket))
    async with aiohttp.ClientSession(connector=connector) as session, session.get("http://front/seen") as answer:
        text = await answer.text()
    return {line.split("\t")[0]: float(line.split("\t")[1]) for line in text.splitlines()}


def test_nginx_holds_no_secret_in_its_files_and_dies_with_the_gateway(
    models: None, service: StartService, triton: TritonServer, nats_url: str
) -> None:
    address, _ = _start(service, triton, "nginx")
    gateway = service.process(address).proc
    nginx, conf = _nginx_of(gateway.pid)
    assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o700  # its sockets: the gateway's user's alone
    text = conf.read_text()
    secret = triton.inference_secret_file.read_text().strip()
    # Nor the keys' digests, which nginx holds in shared memory only (what the gateway pushes).
    values = (*KEYS, secret, *(digest(k) for k in KEYS))
    for value in values:
        assert value not in text
    for path in conf.parent.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(v.encode() in data for v in values), path
    assert _infer(address, KEY).as_numpy("y").reshape(-1).tolist() == [0.0, 2.0]
    # The fast path is nginx's own: with the gateway process stopped, nginx hashes the key (SHA-256
    # in Lua), finds its record's digest, and the prediction comes back; nginx noted the key's use.
    (record,) = set_keys(nats_url, {KEY: KEYS[KEY]})
    os.kill(gateway.pid, signal.SIGSTOP)
    try:
        stopped = _infer(address, KEY)
        seen = asyncio.run(_nginx_seen(conf.parent / "admin.sock"))
    finally:
        os.kill(gateway.pid, signal.SIGCONT)
    assert stopped.as_numpy("y").reshape(-1).tolist() == [0.0, 2.0]
    assert abs(seen[record.id] - time.time()) < 60, seen
    os.kill(gateway.pid, signal.SIGKILL)  # not a clean stop: nginx must not outlive it, holding the port
    deadline = time.monotonic() + 15
    while Path(f"/proc/{nginx}").exists() and (Path(f"/proc/{nginx}/stat").read_text().split()[2] != "Z"):
        assert time.monotonic() < deadline, "nginx outlived the gateway"
        time.sleep(0.05)


def test_nginx_serves_tls_with_the_gateways_certificate(
    models: None, service: StartService, triton: TritonServer, tmp_path: Path
) -> None:
    files = write_self_signed(tmp_path / "tls")
    address, rest = _start(
        service,
        triton,
        "nginx",
        tls_cert_file=str(files.cert_file),
        tls_key_file=str(files.key_file),
        tls_ca_file=str(files.ca_file),
    )
    # REST too, through nginx, over TLS.
    context = ssl.create_default_context(cafile=str(files.ca_file))
    body = {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [1.5, 2.5]}]}
    status, answer = _http(rest.replace("http://", "https://") + "/v2/models/prices/infer", KEY, body, context)
    assert status == 200 and answer["model_name"] == "prices", answer
    client = triton_grpc.InferenceServerClient(address, ssl=True, root_certificates=str(files.ca_file))
    try:
        result = client.infer("prices", _x(), headers={"authorization": f"Bearer {KEY}"}, client_timeout=30)
        assert result.as_numpy("y").reshape(-1).tolist() == [0.0, 2.0]
        assert client.get_model_metadata("prices", headers={"authorization": f"Bearer {KEY}"}).name == "prices"
    finally:
        client.close()
    plaintext = triton_grpc.InferenceServerClient(address)
    try:
        with pytest.raises(InferenceServerException):
            plaintext.infer("prices", _x(), headers={"authorization": f"Bearer {KEY}"}, client_timeout=10)
    finally:
        plaintext.close()


def _field(number: int, kind: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    key = varint(number << 3 | kind)
    return key + (varint(len(payload)) + payload if kind == 2 else payload)


_NAMES = ["prices", "secret", "beta--secret", "acme--prices", "", "prices\x00", "pricés", "p" * 300]
_request_bytes = st.one_of(
    # A request naming anything, a version or none, tensors, and fields a client may add.
    st.builds(
        lambda name, version, extra: (
            _field(1, 2, name.encode()) + (_field(2, 2, version.encode()) if version is not None else b"") + extra
        ),
        st.sampled_from(_NAMES) | st.text(max_size=12),
        st.none() | st.sampled_from(["1", "2", "x", ""]),
        st.lists(
            st.tuples(st.integers(1, 40), st.sampled_from([0, 2, 5, 1]), st.binary(max_size=16)).map(
                lambda f: _field(f[0], f[1], f[2] if f[1] == 2 else {0: b"\x01", 1: b"\x00" * 8, 5: b"\x00" * 4}[f[1]])
            ),
            max_size=4,
        ).map(b"".join),
    ),
    # Any bytes at all, and cut or bit-flipped requests.
    st.binary(max_size=64),
    st.tuples(st.sampled_from(_NAMES), st.integers(0, 40)).map(lambda t: _field(1, 2, t[0].encode())[: t[1]]),
    st.tuples(st.integers(0, 7), st.integers(0, 7)).map(
        lambda t: bytes(b ^ (1 << t[1]) if i == t[0] else b for i, b in enumerate(_field(1, 2, b"prices")))
    ),
)


def test_nginx_answers_whatever_bytes_come_as_the_gateway_process_does(
    models: None, service: StartService, triton: TritonServer
) -> None:
    """The attacker's path into the Lua parser: any bytes, the same status (and answer) both ways."""
    import grpc
    from hypothesis import HealthCheck, given, settings

    fronts = {front: _start(service, triton, front)[0] for front in ("nginx", "none")}
    channels = {front: grpc.insecure_channel(address) for front, address in fronts.items()}
    infer = {f: c.unary_unary("/inference.GRPCInferenceService/ModelInfer") for f, c in channels.items()}
    metadata = [("authorization", f"Bearer {KEY}")]

    def outcome(front: str, data: bytes) -> tuple[str, bytes]:
        try:
            return "OK", infer[front](data, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            return exc.code().name, b""

    @settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(_request_bytes)
    def same_both_ways(data: bytes) -> None:
        through_nginx, alone = outcome("nginx", data), outcome("none", data)
        assert through_nginx[0] == alone[0], data
        if alone[0] == "OK":  # the same prediction, named the same; the canary may pick either route
            got = service_pb2.ModelInferResponse.FromString(through_nginx[1])
            want = service_pb2.ModelInferResponse.FromString(alone[1])
            assert (got.model_name, list(got.raw_output_contents)[:1]) == (
                want.model_name,
                list(want.raw_output_contents)[:1],
            )

    try:
        same_both_ways()
    finally:
        for channel in channels.values():
            channel.close()


def test_a_request_larger_than_nginx_keeps_in_memory_gets_the_same_answer(gateway: tuple[str, str]) -> None:
    """Over 1 MB nginx writes the body to a file; the fast path reads it from there."""
    client = triton_grpc.InferenceServerClient(gateway[0])
    try:
        with pytest.raises(InferenceServerException) as exc:  # 300,000 rows: over the probe's batch of 8
            client.infer("prices", _x(300_000), headers={"authorization": f"Bearer {KEY}"}, client_timeout=60)
    finally:
        client.close()
    assert _status(exc) == "StatusCode.INVALID_ARGUMENT"
    assert "batch" in str(exc.value).lower(), exc.value  # Triton's words: the request reached it whole


def test_nginx_with_several_workers_serves_and_follows_changes(
    models: None, service: StartService, triton: TritonServer, nats_url: str
) -> None:
    address, _ = _start(service, triton, "nginx", front_workers="3")
    models_seen = {json.loads(_infer(address, KEY).as_numpy("info")[0][0])["model"] for _ in range(30)}
    assert models_seen == {"acme--prices", "acme--prices--next"}
    asyncio.run(_put_records(nats_url, {"acme.workers": _record("acme", "workers", [("acme--prices", 1, 1.0)])}))
    try:
        deadline = time.monotonic() + 15
        served = 0
        while served < 10:  # ten in a row: every worker sees the new generation
            try:
                _infer(address, KEY, name="workers")
                served += 1
            except InferenceServerException:
                served = 0
                assert time.monotonic() < deadline, "not every nginx worker served the new deployment"
                time.sleep(0.1)
    finally:
        asyncio.run(_delete_record(nats_url, "acme.workers"))


async def _put_entry(nats_url: str, bucket: str, key: str, value: bytes | None) -> None:
    """Writes (or, with ``None``, deletes) one entry of ``bucket``, as the registry's process does."""
    nc = await admin_connect(nats_url, "test-gateway-plans")
    try:
        kv = await nc.jetstream().key_value(bucket)
        if value is None:
            await kv.delete(key)
        else:
            await kv.put(key, value)
    finally:
        await nc.close()


def test_the_plans_prediction_limits_hold_at_both_fronts(gateway: tuple[str, str], nats_url: str) -> None:
    """acme's plan: its month's predictions used up, then one a second; REST answers 429 alike."""
    address, rest = gateway
    month = month_of(datetime.now(UTC))
    plan = plan_key("acme")
    limited = PlanRecord(tenant="acme", plan="trial", overrides={"predictions_per_month": 5})
    try:
        asyncio.run(_put_entry(nats_url, TENANTS_BUCKET, plan, limited.model_dump_json().encode()))
        used = UsageRecord(tenant="acme", predictions={month: 5})
        asyncio.run(_put_entry(nats_url, USAGE_BUCKET, "acme", used.model_dump_json().encode()))
        _until("the month's refusal", lambda: _outcome(address, KEY)[0] == "RESOURCE_EXHAUSTED")
        code, message = _outcome(address, KEY)
        assert "predictions_per_month: 5 of 5 this month on plan trial" in message, (code, message)
        status, body = _http(f"{rest}/v2/models/prices/infer", KEY, _BODY)
        assert status == 429 and "predictions_per_month" in body["error"], body
        # Another tenant's month is its own.
        assert _outcome(address, OTHER_KEY)[0] != "RESOURCE_EXHAUSTED"
        # A new month's count (here: the meter's record gone) serves again.
        asyncio.run(_put_entry(nats_url, USAGE_BUCKET, "acme", None))
        _until("served again", lambda: _outcome(address, KEY)[0] == "OK")
        # The plan's rate: one a second, whatever the gateway's own rate.
        per_second = PlanRecord(tenant="acme", plan="trial", overrides={"predictions_per_second": 1})
        asyncio.run(_put_entry(nats_url, TENANTS_BUCKET, plan, per_second.model_dump_json().encode()))

        def over_rate() -> bool:
            outcomes = [_outcome(address, KEY) for _ in range(3)]
            return any(c == "RESOURCE_EXHAUSTED" and "rate of 1 " in m for c, m in outcomes)

        _until("the plan's rate", over_rate)
    finally:
        asyncio.run(_put_entry(nats_url, TENANTS_BUCKET, plan, None))
        asyncio.run(_put_entry(nats_url, USAGE_BUCKET, "acme", None))
    time.sleep(1.1)  # the bucket refills for the next test
