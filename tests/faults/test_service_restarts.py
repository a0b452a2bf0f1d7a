"""What a user's long waits do when a service crashes under them (issue 19): ``kill -9`` of the trainer,
the registry, the deployer or the data service in the middle of SDK calls, restarted 2 s later, on a
platform of this module's own (real nats-server, Triton and the six services as processes).

Proves: every ``fit()`` in flight returns its model (the SDK's watch of the job and its wait for the
version ride through the outage, the progress saying so), the trainer finishes each job exactly once
(one version a job, no more), and a ``deploy(wait=True)`` whose deployer died mid-rollout returns the
deployment ready, and an upload cut off mid-way is sent again and stored once. Before the SDK rode out
restarts, each of these waits raised UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from lepton.deployer.v1 import deployer_pb2
from nats.js.errors import KeyNotFoundError
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_ai.jobs import state_name
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect, stored_events

from .fits import fits_in_flight, wait_running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

#: How long a killed service stays down before it is started again.
DOWN_S = 2.0


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPlatform]:
    """A platform for this module alone: its services are killed here, which no other test should see."""
    workdir: Path = tmp_path_factory.mktemp("faults")
    # The monitor checks every 2 s, so a drift incident opens in seconds, not minutes.
    settings = {"monitor": {"evaluation_interval_s": "2"}}
    with EmbeddedPlatform(workdir, api_key=secrets.token_urlsafe(16), settings=settings) as platform:
        yield platform


@pytest.fixture(scope="module")
def diabetes(own: EmbeddedPlatform) -> str:
    with la.Client(own.api_key, own.url) as client:
        frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
        return client.datasets.upload(frame, name="faults-diabetes", progress=False).version_id


def crash(platform: EmbeddedPlatform, service: str) -> None:
    platform.kill(service)
    time.sleep(DOWN_S)
    platform.restart(service)


@pytest.mark.parametrize("service", ["trainer", "registry"])
def test_fits_in_flight_return_their_models_when_a_service_restarts(
    own: EmbeddedPlatform, diabetes: str, service: str
) -> None:
    names = [f"faults-{service}-{i}-{secrets.token_hex(2)}" for i in range(3)]
    futures = fits_in_flight(own, diabetes, names, epochs=400 if service == "trainer" else 60)
    wait_running(own, names)  # the trainer dies mid-fit; the registry while the jobs end and register
    crash(own, service)
    models = [f.result(timeout=300) for f in futures]
    with la.Client(own.api_key, own.url) as client:
        for name, model in zip(names, models, strict=True):
            assert model.model_name == name and model.version == 1, (name, model.version)
            versions = client.models.versions(name)
            assert [v.version for v in versions] == [1], (name, [v.version for v in versions])  # exactly once
            job = client.jobs.get(versions[0].lineage.training_job_id)
            assert state_name(job.state) == "succeeded"


def test_a_deploy_waiting_on_a_deployer_that_dies_mid_rollout_returns_it_ready(
    own: EmbeddedPlatform, diabetes: str
) -> None:
    name = f"faults-deploy-{secrets.token_hex(2)}"
    with la.Client(own.api_key, own.url) as client:
        model = la.models.Ridge().fit(client.datasets.get(diabetes), "target", model_name=name, progress=False)
        result: dict[str, object] = {}

        def deploy() -> None:
            try:
                result["deployment"] = client.deployments.deploy(f"{name}-d", name, model.version)
            except BaseException as exc:  # reported below, not lost on the thread
                result["error"] = exc

        waiting = threading.Thread(target=deploy)
        waiting.start()
        deadline = time.monotonic() + 30
        while client.deployments.get_or_none(f"{name}-d") is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the deployer has taken the request: the rollout is under way
        crash(own, "deployer")
        waiting.join(300)
        assert not waiting.is_alive() and "error" not in result, result.get("error")
        deployment = result["deployment"]
        assert isinstance(deployment, deployer_pb2.Deployment)
        assert deployment.state == deployer_pb2.DEPLOYMENT_STATE_READY
        assert deployment.lineage.model_version == model.version
        rows = pl.from_pandas(load_diabetes(as_frame=True).frame).drop("target").head(3)
        assert client.deployments.predict(f"{name}-d", rows).shape == (3,)


#: How soon after its restart a deployer must finish a rollout that its predecessor died in, when nobody
#: calls ``Deploy`` again (an alias moved): the event comes back within ``ack_wait_s`` (15 s) of the
#: kill, then a load. With the former ack wait (``load_timeout_s`` + 30 = 210 s), well over three minutes.
RESUMED_WITHIN_S = 90.0


def test_a_rollout_an_alias_move_started_finishes_after_its_deployer_dies(own: EmbeddedPlatform, diabetes: str) -> None:
    """A deployment follows ``champion``; the alias moves to version 2 and the deployer is killed while it
    rolls that out, restarted 2 s later. Nobody calls ``Deploy``: the ``registry.alias.moved`` event comes
    back to the restarted deployer, which rolls version 2 out, within :data:`RESUMED_WITHIN_S`."""
    name = f"faults-follow-{secrets.token_hex(2)}"
    with la.Client(own.api_key, own.url) as client:
        data = client.datasets.get(diabetes)
        first = la.models.Ridge().fit(data, "target", model_name=name, progress=False)
        second = la.models.Lasso().fit(data, "target", model_name=name, progress=False)
        client.models.set_alias(name, "champion", first.version)
        client.deployments.deploy(f"{name}-d", name, first.version, follow="champion")
        client.models.set_alias(name, "champion", second.version)
        poll_until = time.monotonic() + 30
        while time.monotonic() < poll_until:
            found = client.deployments.get_or_none(f"{name}-d")
            if found is not None and found.target_version == second.version:
                break  # the deployer has taken the alias's move: the rollout is under way
            time.sleep(0.02)
        else:
            raise AssertionError("the deployer never started rolling out the champion's new version")
        own.kill("deployer")
        time.sleep(DOWN_S)
        own.restart("deployer")
        restarted = time.monotonic()
        deployment = None
        while time.monotonic() - restarted < RESUMED_WITHIN_S + 60:
            deployment = client.deployments.get_or_none(f"{name}-d")
            ready = deployment is not None and deployment.state == deployer_pb2.DEPLOYMENT_STATE_READY
            if ready and deployment.lineage.model_version == second.version:
                break
            time.sleep(0.25)
        resumed_s = time.monotonic() - restarted
        print(f"\nthe rollout its predecessor died in was finished {resumed_s:.1f} s after the deployer's restart")
        assert deployment is not None and deployment.lineage.model_version == second.version, deployment
        assert resumed_s < RESUMED_WITHIN_S, resumed_s


def test_an_upload_cut_by_a_data_service_restart_is_sent_again_and_stored_once(
    own: EmbeddedPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 of the data service while it receives an upload, restarted 2 s later: the SDK's upload is
    sent again once the service answers and returns the version; the dataset has exactly one version, and
    the restarted service removed the dead one's half-received file."""
    rng = np.random.default_rng(3)
    frame = pl.DataFrame(rng.normal(size=(600_000, 10)), schema=[f"x{i}" for i in range(10)])
    name = f"faults-upload-{secrets.token_hex(2)}"
    dead = own.processes["data"].pid
    spool = Path(tempfile.gettempdir())
    with la.Client(own.api_key, own.url) as client:
        pool = ThreadPoolExecutor(1)
        upload = pool.submit(client.datasets.upload, frame, name=name, progress=False)
        pool.shutdown(wait=False)
        deadline = time.monotonic() + 30
        while not list(spool.glob(f"lepton-upload-{dead}-*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(spool.glob(f"lepton-upload-{dead}-*")), "the upload never reached the data service"
        crash(own, "data")
        version = upload.result(timeout=120)
        assert "data unavailable (restarting?)" in caplog.text  # the first send was cut off
        assert version.row_count == 600_000
        assert [v.version_id for v in client.datasets.versions(name)] == [version.version_id]  # stored once
    assert not list(spool.glob(f"lepton-upload-{dead}-*"))


async def incident_recorded(platform: EmbeddedPlatform, deployment: str, timeout: float) -> None:
    """Returns as soon as the monitor has written an incident of ``deployment`` (its outbox record)."""
    nc = await admin_connect(platform.nats_url, "faults-monitor")
    try:
        kv = await nc.jetstream().key_value("monitor")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await kv.get(f"{platform.tenant}.alerts.{deployment}"):
                    return
            except KeyNotFoundError:
                pass
            await asyncio.sleep(0.01)
        raise AssertionError(f"no incident of {deployment} within {timeout} s")
    finally:
        await nc.close()


def test_a_monitor_killed_mid_window_and_mid_incident_opens_one_incident_and_one_retraining(
    own: EmbeddedPlatform,
) -> None:
    """kill -9 of the monitor while drifted traffic fills its window, and again the moment it records the drift
    incident (before or while it announces it); each time restarted 2 s later. The restarted monitor reads the
    window back from the logs, announces what its predecessor recorded but did not announce, and opens no
    second incident: one ``monitor.drift.detected``, one ``monitor.retraining.requested``, one retraining job."""
    name = f"faults-drift-{secrets.token_hex(2)}"
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    moved = frame.with_columns([pl.col(c) + 2 * frame[c].std() for c in ("bmi", "bp")])
    with la.Client(own.api_key, own.url) as client:
        trained_on = client.datasets.upload(frame, name=name, progress=False)
        model = la.models.Ridge().fit(trained_on, "target", model_name=name, progress=False)
        client.datasets.upload(moved, name=name, progress=False)  # the world moved: a newer version to retrain on
        client.deployments.deploy(name, name, model.version)
        client.monitor.set_retraining_policy(name, on_drift=True)
        rows = moved.drop("target").sample(1280, seed=3, with_replacement=True)
        for i, chunk in enumerate(rows.iter_slices(32)):
            client.deployments.predict(name, chunk)
            if i == 20:
                crash(own, "monitor")  # mid-window: half the drifted rows are logged
        asyncio.run(incident_recorded(own, name, timeout=120))
        crash(own, "monitor")  # mid-incident: recorded, its announcements maybe not yet

        def named(kind: str) -> list[Any]:
            return asyncio.run(stored_events(own, kind, lambda e: e.lineage.model_name == name))

        deadline = time.monotonic() + 60
        while not named("monitor.retraining.requested") and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(8)  # four more checks by the restarted monitor: none may open another incident
        assert len(named("monitor.drift.detected")) == 1
        (drift,) = [a for a in client.monitor.alerts(name) if a.kind == "drift"]
        assert drift.retraining == "requested", drift.retraining
        (requested,) = named("monitor.retraining.requested")
        jobs = [j for j in client.jobs.list() if j.model_name == name]
        assert sorted(j.job_id for j in jobs) == sorted({model.job_id, requested.data.job_id})
