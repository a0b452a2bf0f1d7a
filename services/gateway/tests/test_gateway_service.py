"""The gateway as a process, against real NATS and the real Triton: keys, tenants, routes, limits, REST.

Two probe models (``probe_model.py``) play a deployment's stable and staged versions; the
deployment record the deployer would write is put into the ``deployments`` bucket by hand.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from lepton_platform.processes import TritonServer, free_port
from lepton_platform.testing import StartService, admin_connect

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
def gateway(service: StartService, triton: TritonServer, nats_url: str) -> Iterator[tuple[str, str]]:
    import asyncio

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
    http_port = free_port()
    address = service(
        "gateway",
        KEYS,
        triton_url=triton.url,
        inference_secret_file=str(triton.inference_secret_file),
        http_port=str(http_port),
        tenant_rates=json.dumps({"slow": 1}),
    )
    try:
        yield address, f"http://127.0.0.1:{http_port}"
    finally:
        for model in ("acme--prices", "acme--prices--next", "beta--secret"):
            client.unload_model(model, headers=triton.control.grpc_headers())
        client.close()


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


def _http(url: str, key: str | None, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


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
