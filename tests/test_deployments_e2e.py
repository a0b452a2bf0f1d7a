"""client.deployments and the `lepton deployments` / `lepton predict` commands on the real platform."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_ml import artifacts
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import lepton_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def lepton(platform: EmbeddedPlatform, *args: str) -> subprocess.CompletedProcess[str]:
    return lepton_cli(platform, *args)


def test_named_deployment_through_the_sdk_and_the_cli(
    pipeline: PipelineResult, platform: EmbeddedPlatform, tmp_path: Path
) -> None:
    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    rows = pl.from_pandas(load_diabetes(as_frame=True, scaled=False).frame).drop("target").head(70)
    with la.Client(platform.api_key, url=platform.url) as client:
        d = client.deployments.deploy(
            "diabetes-api", name, version, config={"max_batch_size": 32, "preferred_batch_sizes": [8, 32]}
        )
        assert d.lineage.model_version == version and d.config.max_batch_size == 32
        assert d.history[-1].outcome == "completed" and d.history[-1].smoke_rows > 0
        # 70 rows go in requests of at most 32, through the routes, equal to the model in-process.
        got = client.deployments.predict("diabetes-api", rows)
        bundle = artifacts.load_bundle(client.models.download(name, version), platform.artifact_keys.trusted())
        np.testing.assert_allclose(got, bundle.predict(rows), atol=1e-6)
        status = client.deployments.status("diabetes-api")
        assert status.statistics and all(s.ready for s in status.statistics)
        assert sum(s.success_count for s in status.statistics) >= 3  # three requests, plus the smoke test's
        with pytest.raises(la.errors.InvalidArgument, match="rows"):
            client.deployments.predict("diabetes-api", rows.drop("bmi"))
        with pytest.raises(la.errors.NotFound):
            client.deployments.get("no-such-deployment")
    path = tmp_path / "rows.csv"
    rows.head(3).write_csv(path)
    predicted = lepton(platform, "-o", "json", "predict", "diabetes-api", str(path))
    assert predicted.returncode == 0, predicted.stderr
    np.testing.assert_allclose(json.loads(predicted.stdout), bundle.predict(rows.head(3)), atol=1e-6)
    listed = json.loads(lepton(platform, "-o", "json", "deployments", "list").stdout)
    assert {"diabetes-api", name} <= {d["name"] for d in listed}
    shown = json.loads(lepton(platform, "-o", "json", "deployments", "show", "diabetes-api").stdout)
    assert shown["version"] == version and shown["statistics"][0]["ready"] is True
    rollback = lepton(platform, "deployments", "rollback", "diabetes-api")
    assert rollback.returncode == 8 and "no earlier version" in rollback.stderr
    assert lepton(platform, "deployments", "delete", "diabetes-api").returncode == 0
    gone = lepton(platform, "deployments", "show", "diabetes-api")
    assert gone.returncode == 4, gone.stderr
    # The same from a shell: `lepton deploy` (an alias of `lepton deployments create`).
    made = lepton(
        platform, "-o", "json", "deploy", "diabetes-cli", "-m", name, "--version", str(version), "--batch", "16",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert (info["state"], info["version"], info["last_rollout"]["outcome"]) == ("ready", version, "completed")
    refused = lepton(platform, "deploy", "diabetes-cli", "-m", name, "--canary", "half")
    assert refused.returncode == 2 and "--canary" in refused.stderr
    assert lepton(platform, "deployments", "delete", "diabetes-cli").returncode == 0


def test_a_version_exports_as_an_edge_bundle_that_runs_without_lepton(
    pipeline: PipelineResult, platform: EmbeddedPlatform, tmp_path: Path
) -> None:
    import zipfile

    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    out = tmp_path / "edge.zip"
    exported = lepton(
        platform, "models", "export", name, "--version", str(version), "--out", str(out),
        "--dataset", pipeline.dataset_version.version_id,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "edge")
    assert {"model.onnx", "signature.json", "check.json", "runner.py"} <= names
    assert any(n.startswith("triton/") and n.endswith("config.pbtxt") for n in names)
    rows = pl.from_pandas(load_diabetes(as_frame=True, scaled=False).frame).drop("target").head(4)
    rows.write_csv(tmp_path / "rows.csv")
    ran = subprocess.run(
        [sys.executable, str(tmp_path / "edge" / "runner.py"), str(tmp_path / "edge"), str(tmp_path / "rows.csv")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    predicted = [json.loads(line)["prediction"] for line in ran.stdout.splitlines() if line.strip()]
    with la.Client(platform.api_key, url=platform.url) as client:
        bundle = artifacts.load_bundle(client.models.download(name, version), platform.artifact_keys.trusted())
    np.testing.assert_allclose(np.asarray(predicted, dtype=float).reshape(-1), bundle.predict(rows), atol=1e-6)


async def test_deploy_of_a_version_the_deployer_has_not_heard_of_and_twice_at_once(
    pipeline: PipelineResult, platform: EmbeddedPlatform
) -> None:
    """Deploy right after training can beat registry.version.created to the deployer; two Deploys of the
    same version at once make one rollout, and both callers get the ready deployment."""
    import asyncio

    from lepton.deployer.v1 import deployer_pb2
    from nats.js.errors import KeyNotFoundError

    from lepton_platform.testing import admin_connect

    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    nc = await admin_connect(platform.nats_url, "test-forget")
    try:
        kv = await nc.jetstream().key_value("deployments")
        key = f"{platform.tenant}.version.{name}.{version}"
        await kv.purge(key)  # as if registry.version.created were still on its way
        with pytest.raises(KeyNotFoundError):  # the deployer really does not know the version now
            await kv.get(key)
    finally:
        await nc.close()
    with la.Client(platform.api_key, url=platform.url) as client:
        both = await asyncio.gather(
            *(asyncio.to_thread(client.deployments.deploy, "twice-api", name, version) for _ in range(2))
        )
        assert [d.lineage.model_version for d in both] == [version, version]
        assert all(d.state == deployer_pb2.DEPLOYMENT_STATE_READY for d in both), [d.state for d in both]
        d = client.deployments.get("twice-api")
        assert [(h.to_version, h.outcome) for h in d.history] == [(version, "completed")]
        rows = pl.from_pandas(load_diabetes(as_frame=True, scaled=False).frame).drop("target").head(5)
        bundle = artifacts.load_bundle(client.models.download(name, version), platform.artifact_keys.trusted())
        np.testing.assert_allclose(client.deployments.predict("twice-api", rows), bundle.predict(rows), atol=1e-6)
        client.deployments.delete("twice-api")
        with pytest.raises(la.errors.NotFound, match="version"):  # the registry's answer, passed through
            client.deployments.deploy("never-api", name, version + 100)
