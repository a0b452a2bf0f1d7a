"""The inference gateway (issue 16, items 4 and 5), played as a user and as an attacker on the embedded platform.

The user's paths: ``tritonclient.grpc`` and plain HTTP with ``authorization: Bearer <key>`` and the
deployment's name get the model's predictions, as the SDK does, and so does a key of the
``inference`` role. The attacker's: no key or a wrong one (UNAUTHENTICATED, 401); a key of the
tenant whose role cannot predict (``viewer``: PERMISSION_DENIED, 403, naming
``deployments.predict``); another tenant's key (the fixture's ``intruder``) asking for the
deployment by its name or by Triton's name gets NOT_FOUND for inference, metadata, config and
readiness; model control through the gateway is refused; a tenant over its rate is
RESOURCE_EXHAUSTED; and a client that goes to Triton's port directly, without the gateway's
secret or with a guessed one, is refused by the serving model. Afterwards the deployment still serves.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as triton_grpc
from lepton.deployer.v1 import deployer_pb2
from sklearn.datasets import load_diabetes
from tritonclient.utils import InferenceServerException

import lepton_ai as la
from lepton_ml import serving
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform, grpc_serving
from lepton_platform.processes import free_port, start_service, wait_until
from lepton_platform.testing import set_keys

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NAME = "gateway-probe"
_STATE: dict[str, Any] = {}


def _rows() -> pl.DataFrame:
    return pl.from_pandas(load_diabetes(as_frame=True, scaled=False).frame).drop("target").head(4)


def _deployed(platform: EmbeddedPlatform, pipeline: PipelineResult) -> tuple[deployer_pb2.Deployment, np.ndarray]:
    if not _STATE:
        with la.Client(platform.api_key, url=platform.url) as client:
            d = client.deployments.deploy(NAME, pipeline.model_version.model_name, pipeline.model_version.version)
            _STATE["d"] = d
            _STATE["predictions"] = client.deployments.predict(NAME, _rows())  # the SDK, through the gateway
    return _STATE["d"], _STATE["predictions"]


def _inputs(d: deployer_pb2.Deployment) -> list[Any]:
    return serving.input_tensors(_rows(), d.feature_columns, d.text_columns)


def _bearer(key: str | None) -> dict[str, str] | None:
    return {"authorization": f"Bearer {key}"} if key else None


def test_tritonclient_and_plain_http_with_a_key_get_predictions(
    platform: EmbeddedPlatform, pipeline: PipelineResult
) -> None:
    d, expected = _deployed(platform, pipeline)
    assert len(expected) == 4
    client = triton_grpc.InferenceServerClient(platform.gateway_url)
    try:
        result = client.infer(NAME, _inputs(d), headers=_bearer(platform.api_key), client_timeout=30)
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy(serving.OUTPUT).reshape(-1), expected)
    rows = _rows().select(list(d.feature_columns)).to_numpy().astype(np.float64)
    body = {
        "inputs": [
            {"name": serving.INPUT, "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
        ]
    }
    status, answer = _http(f"{platform.gateway_http_url}/v2/models/{NAME}/infer", platform.api_key, body)
    assert status == 200, answer
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected)


def _http(url: str, key: str | None, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("key", [None, "not-a-key-of-this-platform"])
def test_no_key_or_a_wrong_key_is_unauthenticated(
    platform: EmbeddedPlatform, pipeline: PipelineResult, key: str | None
) -> None:
    d, _ = _deployed(platform, pipeline)
    client = triton_grpc.InferenceServerClient(platform.gateway_url)
    try:
        with pytest.raises(InferenceServerException) as exc:
            client.infer(NAME, _inputs(d), headers=_bearer(key), client_timeout=30)
        assert str(exc.value.status()) == "StatusCode.UNAUTHENTICATED"
    finally:
        client.close()
    assert _http(f"{platform.gateway_http_url}/v2/models/{NAME}", key)[0] == 401


def test_a_key_whose_role_cannot_predict_is_refused_and_an_inference_key_predicts(
    platform: EmbeddedPlatform, pipeline: PipelineResult
) -> None:
    d, expected = _deployed(platform, pipeline)
    viewer, inference = (f"lep_{role}_{secrets.token_urlsafe(24)}" for role in ("viewer", "inference"))
    set_keys(platform.nats_url, {viewer: platform.tenant}, role="viewer")
    set_keys(platform.nats_url, {inference: platform.tenant}, role="inference")
    client = triton_grpc.InferenceServerClient(platform.gateway_url)
    try:
        # The gateway follows the key records: the new ones arrive within moments.
        deadline = time.monotonic() + 15
        while True:
            try:
                result = client.infer(NAME, _inputs(d), headers=_bearer(inference), client_timeout=30)
                break
            except InferenceServerException as exc:
                assert str(exc.status()) == "StatusCode.UNAUTHENTICATED" and time.monotonic() < deadline, exc
                time.sleep(0.05)
        np.testing.assert_allclose(result.as_numpy(serving.OUTPUT).reshape(-1), expected)
        for call in (
            lambda: client.infer(NAME, _inputs(d), headers=_bearer(viewer), client_timeout=30),
            lambda: client.get_model_metadata(NAME, headers=_bearer(viewer)),
        ):
            with pytest.raises(InferenceServerException) as refused:
                call()
            assert str(refused.value.status()) == "StatusCode.PERMISSION_DENIED", refused.value
            assert "deployments.predict" in (refused.value.message() or "")
    finally:
        client.close()
    status, answer = _http(f"{platform.gateway_http_url}/v2/models/{NAME}", viewer)
    assert status == 403 and "deployments.predict" in answer["error"], answer


def test_another_tenant_finds_nothing(platform: EmbeddedPlatform, pipeline: PipelineResult) -> None:
    d, _ = _deployed(platform, pipeline)
    intruder = _bearer(platform.key_for("intruder"))
    client = triton_grpc.InferenceServerClient(platform.gateway_url)
    try:
        for name in (NAME, d.triton_model):  # by the deployment's name, and by Triton's
            for what, call in {
                "infer": lambda n=name: client.infer(n, _inputs(d), headers=intruder, client_timeout=30),
                "metadata": lambda n=name: client.get_model_metadata(n, headers=intruder),
                "config": lambda n=name: client.get_model_config(n, headers=intruder),
                "ready": lambda n=name: client.is_model_ready(n, headers=intruder),
            }.items():
                with pytest.raises(InferenceServerException) as exc:
                    call()
                assert str(exc.value.status()) == "StatusCode.NOT_FOUND", (name, what)
        assert client.is_model_ready(NAME, headers=_bearer(platform.api_key))  # its owner's
    finally:
        client.close()
    assert _http(f"{platform.gateway_http_url}/v2/models/{NAME}", platform.key_for("intruder"))[0] == 404


def test_model_control_through_the_gateway_is_refused(platform: EmbeddedPlatform, pipeline: PipelineResult) -> None:
    d, expected = _deployed(platform, pipeline)
    client = triton_grpc.InferenceServerClient(platform.gateway_url)
    owner = _bearer(platform.api_key)
    try:
        for call in (
            lambda: client.unload_model(NAME, headers=owner),
            lambda: client.unload_model(d.triton_model, headers=owner),
            lambda: client.load_model(NAME, headers=owner, config="{}", files={"file:1/model.py": b"import os"}),
            lambda: client.get_model_repository_index(headers=owner),
            lambda: client.get_inference_statistics(headers=owner),
            lambda: client.update_trace_settings(headers=owner, settings={"trace_level": ["TIMESTAMPS"]}),
        ):
            with pytest.raises(InferenceServerException) as exc:
                call()
            assert str(exc.value.status()) == "StatusCode.PERMISSION_DENIED"
        result = client.infer(NAME, _inputs(d), headers=owner, client_timeout=30)  # still serving
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy(serving.OUTPUT).reshape(-1), expected)


def test_direct_triton_inference_without_the_gateways_secret_is_refused_by_the_model(
    platform: EmbeddedPlatform, pipeline: PipelineResult
) -> None:
    d, expected = _deployed(platform, pipeline)
    client = triton_grpc.InferenceServerClient(platform.triton_url)
    try:
        for headers in (None, _bearer(platform.api_key), {"lepton-inference-secret": "x" * 43}):
            with pytest.raises(InferenceServerException, match="through the Lepton gateway"):
                client.infer(d.triton_model, _inputs(d), headers=headers, client_timeout=30)
        assert platform.triton is not None
        secret = platform.triton.inference_headers()  # the gateway's header opens it: the refusal was the secret
        result = client.infer(d.triton_model, _inputs(d), headers=secret, client_timeout=30)
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy(serving.OUTPUT).reshape(-1), expected)


def test_a_tenant_over_its_rate_is_resource_exhausted(
    platform: EmbeddedPlatform, pipeline: PipelineResult, tmp_path: Any
) -> None:
    """A second gateway on the same platform with a rate of 1 request a second for the tenant."""
    d, _ = _deployed(platform, pipeline)
    assert platform.triton is not None and platform.nats_secrets is not None
    port = free_port()
    process = start_service(
        "gateway",
        {
            "nats_url": platform.nats_url,
            "nats_nkey_seed_file": str(platform.nats_secrets.seed_file("gateway")),
            "grpc_port": str(port),
            # The keys are the platform's records (the gateway follows them): the operator key is one.
            "triton_url": platform.triton.url,
            "inference_secret_file": str(platform.triton.inference_secret_file),
            "rate_per_s": "1",
        },
        tmp_path,
    )
    try:
        wait_until(lambda: grpc_serving(f"127.0.0.1:{port}"), 60, "gateway", process.proc)
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        codes = []
        try:
            for _ in range(3):
                try:
                    client.infer(NAME, _inputs(d), headers=_bearer(platform.api_key), client_timeout=30)
                    codes.append("OK")
                except InferenceServerException as exc:
                    codes.append(str(exc.status()))
        finally:
            client.close()
        assert codes[0] == "OK" and "StatusCode.RESOURCE_EXHAUSTED" in codes[1:], codes
    finally:
        process.stop()
