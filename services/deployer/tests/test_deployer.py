"""The deployer against real NATS and real Triton servers: deploy, roll out under load, roll back,
reconcile a restarted host, two hosts, follow an alias, and bad input.

Versions reach the deployer the way they do in production: as ``registry.version.created``
events with the artifact and the training data in the object store.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as triton_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression, Ridge

from lepton_core import events
from lepton_core.bus import ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.wire import lineage, ref_to_pb
from lepton_ml import artifacts, splits
from lepton_platform.processes import TritonServer
from lepton_platform.testing import StartService, artifact_keys, find_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
TENANT = "dep" + uuid.uuid4().hex[:6]
KEY = "key-" + uuid.uuid4().hex
OTHER_KEY = "key-" + uuid.uuid4().hex
SEED, FRACTION = 3, 0.2


@dataclass
class Env:
    nats_url: str
    address: str
    hosts: list[TritonServer]
    frame: pl.DataFrame
    features: list[str]
    models: dict[int, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def second_triton(tmp_path_factory: pytest.TempPathFactory, triton: TritonServer) -> Iterator[TritonServer]:
    # Hosts of one platform share its secrets.
    server = TritonServer(
        tmp_path_factory.mktemp("triton-b"),
        secrets_dir=triton.secrets_dir,
        nats_url=triton.nats_url,
        nats_seed_file=triton.nats_seed_file,
        artifact_public_key_file=triton.artifact_public_key_file,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def env(nats_url: str, triton: TritonServer, second_triton: TritonServer, service: StartService) -> Env:
    address = service(
        "deployer",
        {KEY: TENANT, OTHER_KEY: TENANT + "x"},
        triton_url=triton.url,
        # The host pool: the second Triton by name, shared; the default entry is triton_url.
        hosts=json.dumps({"b": {"url": second_triton.url}}),
        triton_control_secret_file=str(triton.control_secret_file),
        triton_statistics_secret_file=str(triton.statistics_secret_file),
        inference_secret_file=str(triton.inference_secret_file),
        reconcile_interval_s="1",
        drain_s="0.5",
        log_sample_rate="0",
    )
    INFERENCE.update(triton.inference_headers())  # what the gateway sends: this test calls Triton directly
    frame = pl.from_pandas(load_diabetes(as_frame=True, scaled=False).frame)
    features = [c for c in frame.columns if c != "target"]
    # A column no deployed version takes, so a version trained on it is one today's traffic cannot feed.
    frame = frame.with_columns((pl.col("bmi") * pl.col("bp")).alias("bmi_bp"))
    return Env(nats_url, address, [triton, second_triton], frame, features)


async def _publish_version(nc: NATS, env: Env, model: str, version: int, estimator: Any, columns: list[str]) -> None:
    """Stores a fitted estimator and its training data, and announces the version."""
    frame = env.frame.select([*columns, "target"])
    train, _ = splits.holdout_split(frame.height, SEED, FRACTION)
    x, y = frame.select(columns).to_numpy(), frame["target"].to_numpy()
    estimator.fit(x[train], y[train])
    env.models[version] = estimator
    objects = ObjectStore(nc.jetstream())
    blob = artifacts.seal(
        artifacts.pack(estimator, artifacts.Signature(columns, "target", "regression", "ridge")),
        artifact_keys().signer(),
    )
    ref = await objects.put("artifacts", f"{TENANT}/test/{model}-{version}.zip", blob)
    buf = io.BytesIO()
    frame.write_parquet(buf)
    data = await objects.put("datasets", f"{TENANT}/test/{model}-{version}.parquet", buf.getvalue())
    await events.publish(
        nc.jetstream(),
        events_pb2.ModelVersionCreated(
            tenant=TENANT,
            lineage=lineage(model_name=model, model_version=version, training_job_id=f"job_{model}_{version}"),
            artifact=ref_to_pb(ref),
            dataset_object=ref_to_pb(data),
            split_seed=SEED,
            test_fraction=FRACTION,
            features=columns,
            target="target",
            algorithm="ridge",
        ),
        tenant=TENANT,
        event_id=f"test:{TENANT}:{model}:{version}",
        source="/lepton/test",
    )


async def _deployment(env: Env, name: str, key: str = KEY) -> deployer_pb2.Deployment:
    async with client_channel(env.address, key) as ch:
        return await deployer_pb2_grpc.DeploymentServiceStub(ch).GetDeployment(
            deployer_pb2.GetDeploymentRequest(name=name)
        )


async def _until(env: Env, name: str, done: Any, timeout: float = 120) -> deployer_pb2.Deployment:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await _deployment(env, name)
            if done(last):
                return last
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"deployment {name} never got there; last: {last}")


#: The header the served models require of inference (the platform's gateway sends it).
INFERENCE: dict[str, str] = {}


def _infer(url: str, model: str, x: np.ndarray, version: str = "") -> np.ndarray:
    client = triton_grpc.InferenceServerClient(url)
    try:
        inp = triton_grpc.InferInput("features", list(x.shape), "FP64")
        inp.set_data_from_numpy(x)
        result = client.infer(model, [inp], model_version=version, headers=INFERENCE, client_timeout=30)
        return np.asarray(result.as_numpy("prediction")).reshape(-1)
    finally:
        client.close()


def _ready(d: deployer_pb2.Deployment, version: int) -> bool:
    return d.state == deployer_pb2.DEPLOYMENT_STATE_READY and d.lineage.model_version == version


async def test_a_new_version_is_deployed_and_predicts_like_in_process(env: Env, nc: NATS) -> None:
    await _publish_version(nc, env, "diab", 1, Ridge(alpha=1.0), env.features)
    d = await _until(env, "diab", lambda d: _ready(d, 1))
    assert d.follow == "latest" and d.triton_version == "1" and list(d.feature_columns) == env.features
    assert [(h.url, h.ready) for h in d.host_states] == [("default", True)] and list(d.hosts) == ["default"]
    assert d.triton_url == ""  # Triton is private: the deployment names its hosts, clients use the gateway
    assert d.history[-1].outcome == "completed" and d.history[-1].smoke_rows == 16
    x = env.frame.select(env.features).to_numpy()[:20]
    np.testing.assert_allclose(_infer(env.hosts[0].url, d.triton_model, x), env.models[1].predict(x), atol=1e-9)


async def test_rollout_under_steady_load_fails_no_request(env: Env, nc: NATS) -> None:
    """Unrouted clients (no version) and routed ones (weighted routes) keep getting answers."""
    await _until(env, "diab", lambda d: _ready(d, 1))
    x = env.frame.select(env.features).to_numpy()[:1]
    stop = threading.Event()
    failures: list[str] = []
    answered: dict[str, int] = {"unrouted": 0, "routed": 0}
    seen_versions: set[str] = set()
    first = await _deployment(env, "diab")
    routes = [list(first.routes)]

    def unrouted() -> None:
        while not stop.is_set():
            try:
                _infer(env.hosts[0].url, first.triton_model, x)
                answered["unrouted"] += 1
            except Exception as exc:
                failures.append(f"unrouted: {exc}")

    def routed() -> None:
        rng = random.Random(0)
        while not stop.is_set():
            table = routes[0]
            route = rng.choices(table, weights=[r.weight for r in table])[0]
            try:
                _infer(env.hosts[0].url, route.triton_model, x, route.triton_version)
                answered["routed"] += 1
                seen_versions.add(f"{route.triton_model}@{route.triton_version}")
            except Exception as exc:
                failures.append(f"routed {route.triton_model} v{route.triton_version}: {exc}")

    threads = [threading.Thread(target=unrouted) for _ in range(2)] + [threading.Thread(target=routed)]
    for t in threads:
        t.start()
    try:
        async with client_channel(env.address, KEY) as ch:
            stub = deployer_pb2_grpc.DeploymentServiceStub(ch)
            # The next rollout of "diab" goes as a canary: half of the routed traffic for 1 s.
            same = await stub.Deploy(
                deployer_pb2.DeployRequest(
                    name="diab",
                    model_name="diab",
                    version=1,
                    strategy="canary",
                    canary_weights=[0.5],
                    canary_step_seconds=1,
                )
            )
            assert _ready(same, 1) and same.strategy == "canary"
            await _publish_version(nc, env, "diab", 2, Ridge(alpha=0.1), env.features)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # routed clients re-read the routes, as the SDK does
                d = await stub.GetDeployment(deployer_pb2.GetDeploymentRequest(name="diab"))
                routes[0] = list(d.routes)
                if _ready(d, 2):
                    break
                await asyncio.sleep(0.05)
    finally:
        await asyncio.sleep(1)
        stop.set()
        for t in threads:
            t.join()
    assert failures == [], failures[:5]
    assert answered["unrouted"] > 50 and answered["routed"] > 20, answered
    assert _ready(d, 2) and d.history[-1].outcome == "completed" and d.history[-1].from_version == 1
    assert d.history[-1].strategy == "canary"
    assert any(v.endswith("--next@2") for v in seen_versions), seen_versions  # the canary got routed traffic
    x_all = env.frame.select(env.features).to_numpy()[:10]
    np.testing.assert_allclose(_infer(env.hosts[0].url, d.triton_model, x_all), env.models[2].predict(x_all), atol=1e-9)


async def test_a_broken_version_is_rolled_back_and_the_old_one_keeps_serving(env: Env, nc: NATS) -> None:
    before = await _until(env, "diab", lambda d: _ready(d, 2))
    # Version 3 takes other columns than the deployment's recorded traffic: it fails the smoke test.
    await _publish_version(nc, env, "diab", 3, LinearRegression(), ["age", "bmi_bp"])
    d = await _until(env, "diab", lambda d: len(d.history) > len(before.history))
    assert _ready(d, 2) and d.history[-1].outcome == "rolled_back" and d.history[-1].to_version == 3
    assert "smoke test" in d.history[-1].reason and "['bmi_bp']" in d.history[-1].reason, d.history[-1].reason
    event = await find_event(
        env.nats_url, f"lepton.evt.{TENANT}.deployment.rolled_back", lambda e: e.lineage.model_version == 3
    )
    assert event.data.serving_version == 2 and "smoke test" in event.data.reason
    x = env.frame.select(env.features).to_numpy()[:5]
    np.testing.assert_allclose(_infer(env.hosts[0].url, d.triton_model, x), env.models[2].predict(x), atol=1e-9)
    client = triton_grpc.InferenceServerClient(env.hosts[0].url)
    try:
        assert not client.is_model_ready(d.triton_model + "--next")
    finally:
        client.close()


async def test_two_hosts_follow_champion_and_reconcile_a_restarted_host(
    env: Env, nc: NATS, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    a, b = env.hosts
    async with client_channel(env.address, KEY) as ch:
        stub = deployer_pb2_grpc.DeploymentServiceStub(ch)
        d = await stub.Deploy(
            deployer_pb2.DeployRequest(
                name="diab-prod",
                model_name="diab",
                version=1,
                hosts=["default", "b"],
                follow="champion",
                config=deployer_pb2.ServingConfig(max_batch_size=8, preferred_batch_sizes=[4, 8], instance_count=1),
                wait=True,
            )
        )
        assert _ready(d, 1) and {h.url for h in d.host_states if h.ready} == {"default", "b"}
        assert list(d.hosts) == ["default", "b"] and d.triton_url == ""
        x = env.frame.select(env.features).to_numpy()[:8]
        for host in (a, b):
            np.testing.assert_allclose(_infer(host.url, d.triton_model, x, "1"), env.models[1].predict(x), atol=1e-9)
        config = triton_grpc.InferenceServerClient(b.url).get_model_config(
            d.triton_model, headers=b.control.grpc_headers(), as_json=True
        )["config"]
        assert config["max_batch_size"] == 8 and config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
        # The registry moves champion: the deployment follows, on both hosts.
        await events.publish(
            nc.jetstream(),
            events_pb2.ModelAliasMoved(
                tenant=TENANT, lineage=lineage(model_name="diab", model_version=2), alias="champion", previous_version=1
            ),
            tenant=TENANT,
            event_id=f"test-alias:{TENANT}:2",
            source="/lepton/test",
        )
        d = await _until(env, "diab-prod", lambda d: _ready(d, 2))
        status = await stub.GetDeploymentStatus(deployer_pb2.GetDeploymentRequest(name="diab-prod"))
        assert {(s.host, s.triton_version) for s in status.statistics} == {("default", "2"), ("b", "2")}
        assert all(s.ready for s in status.statistics)
        # Host b restarts empty on the same address: the reconcile loop gives it its model back.
        port = b.grpc_port
        b.stop()
        env.hosts[1] = b = TritonServer(
            tmp_path / "triton-b-restarted",
            grpc_port=port,
            secrets_dir=b.secrets_dir,
            nats_url=b.nats_url,
            nats_seed_file=b.nats_seed_file,
            artifact_public_key_file=b.artifact_public_key_file,
        )
        request.addfinalizer(b.stop)
        client = triton_grpc.InferenceServerClient(b.url)
        deadline = time.monotonic() + 120
        while not client.is_model_ready(d.triton_model, "2"):
            assert time.monotonic() < deadline, "the restarted host never got its model back"
            await asyncio.sleep(0.5)
        client.close()
        np.testing.assert_allclose(_infer(b.url, d.triton_model, x, "2"), env.models[2].predict(x), atol=1e-9)
        # Rollback goes to the version served before.
        back = await stub.Rollback(deployer_pb2.RollbackRequest(name="diab-prod", wait=True))
        assert _ready(back, 1)
        gone = await stub.DeleteDeployment(deployer_pb2.GetDeploymentRequest(name="diab-prod"))
        assert gone.name == "diab-prod"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetDeployment(deployer_pb2.GetDeploymentRequest(name="diab-prod"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert not triton_grpc.InferenceServerClient(a.url).is_model_ready(d.triton_model)


@pytest.mark.parametrize(
    ("request_fields", "code", "field_name"),
    [
        ({"name": "", "model_name": "diab"}, grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ({"name": "bad name!", "model_name": "diab"}, grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ({"name": "x", "model_name": ""}, grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
        ({"name": "a--b", "model_name": "diab"}, grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ({"name": "x", "model_name": "diab--next"}, grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
        # A host is a pool name, never an address, even the address of a pool entry.
        (
            {"name": "x", "model_name": "diab", "version": 1, "hosts": ["127.0.0.1:8001"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "hosts[0]",
        ),
        (
            {"name": "x", "model_name": "diab", "version": 1, "hosts": ["b", "nope"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "hosts[1]",
        ),
        (
            {"name": "x", "model_name": "diab", "version": 1, "strategy": "yolo"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "strategy",
        ),
        (
            {"name": "x", "model_name": "diab", "version": 1, "canary_weights": [0.5, 0.2]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "canary_weights",
        ),
        (
            {"name": "x", "model_name": "diab", "version": 1, "config": {"instance_kind": "tpu"}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.instance_kind",
        ),
    ],
)
async def test_bad_deploy_requests_name_the_field(
    env: Env, request_fields: dict[str, Any], code: grpc.StatusCode, field_name: str
) -> None:
    fields = dict(request_fields)
    if "config" in fields:
        fields["config"] = deployer_pb2.ServingConfig(**fields["config"])
    async with client_channel(env.address, KEY) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await deployer_pb2_grpc.DeploymentServiceStub(ch).Deploy(deployer_pb2.DeployRequest(**fields))
    assert err.value.code() == code
    assert (err.value.details() or "").startswith(field_name + ":"), err.value.details()


async def test_gpu_instances_on_a_host_without_a_gpu_fail_with_triton_s_reason(env: Env) -> None:
    """``instance_kind="gpu"`` is valid, but this Triton has no GPU: the deployment fails, saying so."""
    async with client_channel(env.address, KEY) as ch:
        await deployer_pb2_grpc.DeploymentServiceStub(ch).Deploy(
            deployer_pb2.DeployRequest(
                name="on-gpu", model_name="diab", version=1, config=deployer_pb2.ServingConfig(instance_kind="gpu")
            )
        )
    d = await _until(env, "on-gpu", lambda d: d.state == deployer_pb2.DEPLOYMENT_STATE_FAILED)
    assert "KIND_GPU but no GPUs are available" in d.error, d.error
    assert d.history[-1].outcome == "failed" and d.history[-1].reason == d.error
    # The failure is this deployment's alone: another deployment of the same model still answers.
    serving = await _deployment(env, "diab")
    x = env.frame.select(env.features).to_numpy()[:3]
    assert _infer(env.hosts[0].url, serving.triton_model, x).shape == (3,)


@pytest.mark.parametrize(
    "request_fields",
    [{"name": "x", "model_name": "diab", "version": 99}, {"name": "diab", "model_name": "other-model", "version": 1}],
)
async def test_a_version_the_deployer_does_not_know_is_asked_of_the_registry(
    env: Env, request_fields: dict[str, Any]
) -> None:
    """No registry runs here: the deployer says so (UNAVAILABLE), not that the version does not exist.
    With the registry up, an unknown version is NOT_FOUND (tests/test_deployments_e2e.py)."""
    async with client_channel(env.address, KEY) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await deployer_pb2_grpc.DeploymentServiceStub(ch).Deploy(deployer_pb2.DeployRequest(**request_fields))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()


async def test_bad_inputs_get_clear_errors_and_the_model_keeps_serving(env: Env) -> None:
    d = await _until(env, "diab", lambda d: d.state == deployer_pb2.DEPLOYMENT_STATE_READY)
    version = d.triton_version
    client = triton_grpc.InferenceServerClient(env.hosts[0].url)

    def infer(inputs: list[triton_grpc.InferInput]) -> str:
        with pytest.raises(Exception) as err:
            client.infer(d.triton_model, inputs, model_version=version, headers=INFERENCE, client_timeout=30)
        return str(err.value)

    def tensor(name: str, x: np.ndarray, dtype: str) -> triton_grpc.InferInput:
        t = triton_grpc.InferInput(name, list(x.shape), dtype)
        t.set_data_from_numpy(x)
        return t

    try:
        good = env.frame.select(env.features).to_numpy()[:3]
        wrong_shape = infer([tensor("features", good[:, :4].copy(), "FP64")])
        assert "shape" in wrong_shape.lower() or "dims" in wrong_shape.lower(), wrong_shape
        wrong_dtype = infer([tensor("features", good.astype(np.float32), "FP32")])
        assert "data-type" in wrong_dtype.lower() or "datatype" in wrong_dtype.lower() or "FP32" in wrong_dtype
        missing = infer([tensor("inputs", good, "FP64")])
        assert "unexpected inference input 'inputs'" in missing, missing
        nan = good.copy()
        nan[1, 2] = np.nan
        refused = infer([tensor("features", nan, "FP64")])
        assert "row 1, feature 'bmi' is nan" in refused and "Ridge" in refused, refused
        oversized = np.repeat(good, 30, axis=0)  # 90 rows > max_batch_size 64
        too_big = infer([tensor("features", oversized, "FP64")])
        assert "batch" in too_big.lower(), too_big
        # Nothing broke: the model still answers, exactly.
        out = client.infer(d.triton_model, [tensor("features", good, "FP64")], model_version=version, headers=INFERENCE)
        assert out.as_numpy("prediction").shape == (3, 1)
    finally:
        client.close()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _deployment(env, "diab", key=OTHER_KEY)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
