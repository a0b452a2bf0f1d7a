"""The closed loop, by events alone: drift → retraining → evaluation → promotion → rollout.

Real NATS, real Triton, the six services as processes. A Ridge model serves the diabetes
data; traffic from the training distribution shows no drift; traffic with `bmi` and `bp`
shifted drifts on exactly those two; the monitor opens one incident and requests one
retraining on the newer dataset version (the shifted rows with their true targets); the
new version wins its comparison, becomes champion, and the deployment that follows
`champion` rolls it out.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from lepton.deployer.v1 import deployer_pb2
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_core.rpc import client_channel
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import lepton_cli, stored_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NAME = "loop"
SHIFTED = ("bmi", "bp")


async def _wait(what: str, check: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_drift_retrains_promotes_and_rolls_out(platform: EmbeddedPlatform, tmp_path: Path) -> None:
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    calm = frame.sample(640, with_replacement=True, seed=1)
    moved = frame.with_columns([pl.col(c) + 2 * frame[c].std() for c in SHIFTED])
    client = la.Client(platform.api_key, url=platform.url)
    dataset = client.datasets.upload(frame, name=NAME, progress=False)
    model = la.models.Ridge(alpha=1.0)
    await asyncio.to_thread(model.fit, dataset, target="target", model_name=NAME, progress=False)
    assert await asyncio.to_thread(model.wait_deployed)
    # Production follows the champion; the registry promotes a better version by itself.
    client.models.set_alias(NAME, "champion", model.version, expected_version=0)
    client.deployments.deploy(NAME, NAME, model.version, follow="champion")
    async with client_channel(platform.addresses["registry"], platform.api_key) as ch:
        await registry_pb2_grpc.RegistryServiceStub(ch).SetPromotionPolicy(
            registry_pb2.SetPromotionPolicyRequest(
                model_name=NAME, policy=events_pb2.PromotionPolicy(auto_promote=True)
            )
        )
    client.monitor.set_retraining_policy(NAME, on_drift=True)
    # Traffic like the training data: no drift.
    for chunk in calm.drop("target").iter_slices(32):
        await asyncio.to_thread(client.deployments.predict, NAME, chunk)

    async def calm_report() -> Any:
        report = await asyncio.to_thread(client.monitor.drift, NAME)
        return report if all(f.verdict != "insufficient_data" for f in report.features) else None

    report = await _wait("a drift verdict on calm traffic", calm_report, timeout=120)
    assert list(report.drifted) == []
    # The world moves: a newer dataset version, then traffic from it.
    newer = client.datasets.upload(moved, name=NAME, progress=False)
    for _ in range(2):
        for chunk in moved.drop("target").sample(640, seed=3, with_replacement=True).iter_slices(32):
            await asyncio.to_thread(client.deployments.predict, NAME, chunk)

    async def incident() -> Any:
        return [a for a in await asyncio.to_thread(client.monitor.alerts, NAME) if a.kind == "drift"]

    (drift,) = await _wait("a drift incident", incident, timeout=180)
    assert sorted(drift.drifted) == sorted(SHIFTED), list(drift.drifted)

    # One retraining, on the newer version, that ends as the champion serving in production. (The platform is
    # shared with other test modules: their models' retrainings are not this one's.)
    def ours(event: Any) -> bool:
        return bool(event.model_name == NAME)

    requested = await _wait(
        "retraining.requested", lambda: stored_events(platform, "monitor.retraining.requested", ours), timeout=120
    )
    assert len(requested) == 1 and requested[0].data.dataset_version_id == newer.version_id

    async def serving_v2() -> Any:
        d = await asyncio.to_thread(client.deployments.get, NAME)
        return d if d.lineage.model_version > model.version and d.state == deployer_pb2.DEPLOYMENT_STATE_READY else None

    d = await _wait("the retrained version serving", serving_v2, timeout=400)
    champion = client.models.version(NAME, alias="champion")
    assert champion.version == d.lineage.model_version and champion.lineage.dataset_version_id == newer.version_id
    assert champion.lineage.training_job_id == requested[0].data.job_id
    # Still one incident and one retraining: no loop.
    await asyncio.sleep(5)
    assert len(await stored_events(platform, "monitor.retraining.requested", ours)) == 1
    assert len(await stored_events(platform, "monitor.drift.detected", lambda e: e.lineage.model_name == NAME)) == 1
    # The chain is one trace from the drift to the rollout.
    job_id = requested[0].data.job_id
    chain = [
        *requested,
        *(await stored_events(platform, "training.completed", lambda e: e.lineage.training_job_id == job_id)),
        *(await stored_events(platform, "evaluation.completed", lambda e: e.lineage.training_job_id == job_id)),
        *(await stored_events(platform, "registry.version.created", lambda e: e.lineage.training_job_id == job_id)),
        *(
            await stored_events(
                platform,
                "deployment.ready",
                lambda e: e.lineage.deployment == NAME and e.lineage.model_version == d.lineage.model_version,
            )
        ),
    ]
    assert len(chain) == 5
    traces = {e.headers["traceparent"].split("-")[1] for e in chain}
    assert len(traces) == 1, traces
    moved_rows = moved.drop("target").head(5)
    served = await asyncio.to_thread(client.deployments.predict, NAME, moved_rows)
    assert np.all(np.isfinite(served))
    # The same story from a shell.
    shown = lepton_cli(platform, "-o", "json", "monitor", "alerts", NAME)
    assert shown.returncode == 0 and any(a["kind"] == "drift" for a in json.loads(shown.stdout)), shown.stderr
    picture = tmp_path / "drift.png"
    report_cli = lepton_cli(platform, "-o", "json", "monitor", "drift", NAME, "--png", str(picture))
    assert report_cli.returncode == 0, report_cli.stderr
    assert picture.read_bytes().startswith(b"\x89PNG")
    metrics = lepton_cli(platform, "monitor", "metrics", NAME)
    assert metrics.returncode == 0 and "requests" in metrics.stdout, metrics.stderr
