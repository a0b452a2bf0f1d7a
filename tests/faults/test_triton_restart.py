"""What users' predictions do when Triton is killed under them (issue 19): ``kill -9`` of the Triton server
(its Python backend stubs too) while clients predict through the inference gateway, started again 2 s later
on the same address, on a platform of this module's own (real nats-server, Triton, the six services and the
gateway's nginx front as processes; the deployer's reconcile loop every second, ``reconcile_interval_s``).

Proves: every request that fails (in flight at the kill, sent while Triton is down, or sent before its model
is loaded again) fails at once with a retryable status, gRPC UNAVAILABLE or HTTP 503, none past its deadline;
the deployer's reconcile loop loads the model again by itself (the test makes no call to the deployer but
reads, and no rollout is added to the deployment's history); serving resumes with the same predictions; an
SDK ``predict`` sent meanwhile rides through the outage and returns them. The seconds without service
(first failure to first success after it) are printed and recorded (``seconds_without_service``).

Before the gateway answered Triton's NOT_FOUND for a deployment's model with UNAVAILABLE, requests between
Triton's restart and the reload got NOT_FOUND, naming the tenant's Triton model, and an SDK predict raised it.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_diabetes
from tritonclient.grpc import service_pb2, service_pb2_grpc

import lepton_ai as la
from lepton_ml import serving
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

#: How long the killed Triton stays down before it is started again.
DOWN_S = 2.0
#: Each request's deadline (gRPC) or socket timeout (REST); a failure must come before it.
DEADLINE_S = 5.0
#: What a failed request may take beyond its deadline (a loaded machine's scheduling).
SLACK_S = 1.0
#: How often the deployer checks that every host serves its models: 1 s here, to keep the test short (the
#: deployer's default is 5 s: ``LEPTON_FAULTS_RECONCILE_S=5`` measures the outage at the default).
RECONCILE_S = os.environ.get("LEPTON_FAULTS_RECONCILE_S", "1")
#: The longest the test waits for serving to resume after Triton is started again.
RESUME_S = 90.0
NAME = "triton-faults-api"


@dataclass(frozen=True)
class Attempt:
    """One prediction request and how it ended."""

    client: str
    started: float
    ended: float
    status: str  # "OK", a gRPC status name ("UNAVAILABLE"), "HTTP 503", or the exception's type
    detail: str = ""
    answer: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "OK"


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPlatform]:
    """A platform for this module alone: its Triton is killed here, which no other test should see."""
    workdir: Path = tmp_path_factory.mktemp("faults-triton")
    settings = {"deployer": {"reconcile_interval_s": RECONCILE_S}}
    with EmbeddedPlatform(workdir, api_key=secrets.token_urlsafe(16), settings=settings) as platform:
        yield platform


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    return pl.from_pandas(load_diabetes(as_frame=True).frame).drop("target").head(4)


@pytest.fixture(scope="module")
def deployed(own: EmbeddedPlatform) -> str:
    """A linear regression fitted on the diabetes data set, deployed as :data:`NAME`."""
    with la.Client(own.api_key, own.url) as client:
        frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
        dataset = client.datasets.upload(frame, name="faults-triton-diabetes", progress=False)
        model = la.models.LinearRegression().fit(dataset, "target", model_name="faults-triton", progress=False)
        client.deployments.deploy(NAME, "faults-triton", model.version)
    return NAME


def grpc_client(
    platform: EmbeddedPlatform, channel: grpc.Channel, rows: pl.DataFrame, columns: list[str]
) -> Callable[[], Attempt]:
    """One KServe V2 ``ModelInfer`` through the gateway's gRPC port (``channel``), with the API key and a deadline."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    features = rows.select(columns).to_numpy().astype(np.float64)
    request = service_pb2.ModelInferRequest(model_name=NAME)
    request.inputs.add(name=serving.INPUT, datatype="FP64", shape=list(features.shape))
    request.raw_input_contents.append(features.tobytes())
    request.outputs.add(name=serving.OUTPUT)
    metadata = [("authorization", f"Bearer {platform.api_key}")]

    def attempt() -> Attempt:
        started = time.monotonic()
        try:
            answer = stub.ModelInfer(request, metadata=metadata, timeout=DEADLINE_S)
        except grpc.RpcError as exc:
            return Attempt("grpc", started, time.monotonic(), exc.code().name, exc.details() or "")
        values = np.frombuffer(answer.raw_output_contents[0], dtype=np.float64)
        return Attempt("grpc", started, time.monotonic(), "OK", answer=tuple(values.tolist()))

    return attempt


def rest_client(platform: EmbeddedPlatform, rows: pl.DataFrame, columns: list[str]) -> Callable[[], Attempt]:
    """One ``POST /v2/models/<name>/infer`` through the gateway's REST port, with the API key and a timeout."""
    features = rows.select(columns).to_numpy().astype(np.float64)
    body = json.dumps(
        {"inputs": [{"name": serving.INPUT, "shape": list(features.shape), "datatype": "FP64",
                     "data": features.reshape(-1).tolist()}]}
    ).encode()  # fmt: skip
    headers = {"Authorization": f"Bearer {platform.api_key}", "Content-Type": "application/json"}
    url = f"{platform.gateway_http_url}/v2/models/{NAME}/infer"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy

    def attempt() -> Attempt:
        started = time.monotonic()
        try:
            with opener.open(urllib.request.Request(url, body, headers), timeout=DEADLINE_S) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return Attempt("rest", started, time.monotonic(), f"HTTP {exc.code}", exc.read().decode(errors="replace"))
        except OSError as exc:  # a refused connection or a timeout: not a status the gateway chose
            return Attempt("rest", started, time.monotonic(), type(exc).__name__, str(exc))
        values = answer["outputs"][0]["data"]
        return Attempt("rest", started, time.monotonic(), "OK", answer=tuple(float(v) for v in values))

    return attempt


def sdk_client(client: la.Client, rows: pl.DataFrame) -> Callable[[], Attempt]:
    """One ``client.deployments.predict``: it rides out UNAVAILABLE for up to a minute, so it has no deadline here."""

    def attempt() -> Attempt:
        started = time.monotonic()
        try:
            values = client.deployments.predict(NAME, rows)
        except la.errors.LeptonError as exc:
            return Attempt("sdk", started, time.monotonic(), type(exc).__name__, str(exc))
        return Attempt("sdk", started, time.monotonic(), "OK", answer=tuple(values.tolist()))

    return attempt


class Load:
    """Clients predicting in a loop, one thread each, every attempt kept, until :meth:`stop`."""

    def __init__(self, clients: list[Callable[[], Attempt]]) -> None:
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in clients]
        for thread in self._threads:
            thread.start()

    def _run(self, client: Callable[[], Attempt]) -> None:
        while not self._stop.is_set():
            attempt = client()
            with self._lock:
                self.attempts.append(attempt)
            self._stop.wait(0.02 if attempt.ok else 0.05)  # a client retries a failure after a pause

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self.attempts)

    def wait_until(self, what: str, done: Callable[[list[Attempt]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.snapshot()):
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
            time.sleep(0.05)

    def stop(self) -> list[Attempt]:
        self._stop.set()
        for thread in self._threads:
            thread.join(RESUME_S)
        return sorted(self.snapshot(), key=lambda a: a.started)


CLIENTS = ("grpc", "rest", "sdk")


def each_client_succeeded(attempts: list[Attempt], since: float, times: int = 3) -> bool:
    """Whether every kind of client had ``times`` answers to requests it sent at ``since`` or later."""
    return all(sum(a.ok and a.started >= since for a in attempts if a.client == c) >= times for c in CLIENTS)


def test_requests_through_a_triton_kill_fail_retryably_and_serving_resumes_by_itself(
    own: EmbeddedPlatform, deployed: str, rows: pl.DataFrame, record_property: Callable[[str, object], None]
) -> None:
    with la.Client(own.api_key, own.url) as client, grpc.insecure_channel(own.gateway_url) as channel:
        deployment = client.deployments.get(deployed)
        before = client.deployments.predict(deployed, rows)
        columns = list(deployment.feature_columns)
        load = Load(
            [
                grpc_client(own, channel, rows, columns),
                grpc_client(own, channel, rows, columns),
                rest_client(own, rows, columns),
                sdk_client(client, rows),
            ]
        )
        try:
            load.wait_until("serving before the kill", lambda a: each_client_succeeded(a, 0.0), 60)
            killed = time.monotonic()
            own.kill_triton()
            time.sleep(DOWN_S)
            started_again = time.monotonic()
            own.restart_triton()
            restarted = time.monotonic()
            load.wait_until("serving after the restart", lambda a: each_client_succeeded(a, restarted), RESUME_S)
        finally:
            attempts = load.stop()

    failed = [a for a in attempts if not a.ok]
    assert any(a.client == "grpc" for a in failed), "no request failed: the kill was not felt"
    # Each failure said "retry" (UNAVAILABLE, 503) and came before its deadline: nothing hung.
    statuses = {(a.client, a.status) for a in failed}
    assert statuses <= {("grpc", "UNAVAILABLE"), ("rest", "HTTP 503")}, sorted({(a.status, a.detail) for a in failed})
    slowest = max((a for a in attempts if a.client != "sdk"), key=lambda a: a.ended - a.started)
    assert slowest.ended - slowest.started <= DEADLINE_S + SLACK_S, slowest
    # The SDK rode it out; every answer, during the recovery too, is the one from before.
    assert not [a for a in failed if a.client == "sdk"]
    for a in attempts:
        if a.ok:
            np.testing.assert_array_equal(
                np.asarray(a.answer), before, err_msg=f"{a.client} at {a.started - killed:.2f} s"
            )

    first_failure = min(a.started for a in failed)
    resumed = min(a.ended for a in attempts if a.ok and a.client != "sdk" and a.started >= first_failure)
    without_service = resumed - first_failure
    in_flight = sum(a.started < killed < a.ended for a in attempts)
    record_property("seconds_without_service", round(without_service, 2))
    print(
        f"\nTriton killed, down {DOWN_S:g} s, reconcile every {RECONCILE_S} s: {without_service:.2f} s without service "
        f"(first failure {first_failure - killed:+.2f} s after the kill, first success "
        f"{resumed - killed:.2f} s after it; Triton started again {started_again - killed:.2f} s after it); "
        f"{len(failed)} of {len(attempts)} requests failed, {in_flight} in flight at the kill"
    )
    assert without_service < RESUME_S

    # The deployer's reconcile loop loaded it again by itself: no rollout, the host ready, its log says so.
    with la.Client(own.api_key, own.url) as client:
        after = client.deployments.get(deployed)
        np.testing.assert_array_equal(client.deployments.predict(deployed, rows), before)
    assert [(r.to_version, r.outcome) for r in after.history] == [(r.to_version, r.outcome) for r in deployment.history]
    assert after.host_states and all(h.ready for h in after.host_states), after.host_states
    repairs = [line for line in (own.workdir / "logs" / "deployer.log").read_text().splitlines() if "repaired" in line]
    assert any(f"{deployed} v{deployment.lineage.model_version} on " in line for line in repairs), repairs
