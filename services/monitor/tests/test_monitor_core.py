"""The monitor's core on the in-memory store with a clock the test moves: incidents, the retraining
policy's loop guards, the outbox, and reading logs back after a restart.

The service test (test_monitor_service.py) runs the same paths through NATS and gRPC in real time;
here the clock is ours, so a whole incident life (fire, persist, resolve, fire again) takes no waiting.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncGenerator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from lepton_core.bus import ObjectRefRecord, sha256_digest
from lepton_core.errors import FailedPrecondition
from lepton_core.store import MemoryStore
from lepton_ml import artifacts
from lepton_monitor.core import Monitor, Options, Stores, retraining_job_id
from lepton_monitor.drift import DriftThresholds
from lepton_monitor.live import LabelIn, LogEntry
from lepton_monitor.records import (
    AlertRecord,
    AlertsRecord,
    DatasetIndex,
    DatasetVersionInfo,
    DeploymentInfo,
    JobInfo,
    PolicyRecord,
    RetrainingRequest,
    RulesRecord,
    RuleStatesRecord,
    StatsRecord,
    VersionInfo,
)
from lepton_monitor.reference import ReferenceRecord
from lepton_monitor.rules import Rule
from lepton_monitor.triton import TritonSnapshot
from lepton_platform.testing import artifact_keys

TENANT = "acme"
NAME = "diabetes"
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
FRAME = pl.from_pandas(load_diabetes(as_frame=True).frame)
MODEL = Ridge(alpha=1.0).fit(FRAME.select(FEATURES).to_numpy(), FRAME["target"].to_numpy())


class Recorder:
    """The announcer port, recording what would be published (and failing once when asked to)."""

    def __init__(self) -> None:
        self.incidents: list[tuple[str, str, str]] = []
        self.retrainings: list[RetrainingRequest] = []
        self.fail_next = False

    async def incident(self, alert: AlertRecord, transition: Literal["fired", "resolved"]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker away")
        self.incidents.append((alert.kind, transition, alert.incident_id))

    async def retraining(self, request: RetrainingRequest) -> None:
        self.retrainings.append(request)

    async def labels(self, tenant: str, deployment: str, labels: Any, at: float) -> None:
        pass


class ListedLogs:
    """The log source port over a list (what the PREDICTIONS stream would hold)."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    async def scan(
        self, tenant: str, deployment: str | None, *, start_sequence: int | None, start_time: float | None
    ) -> AsyncGenerator[LogEntry, None]:
        for entry in self.entries:
            if start_time is None or entry.time >= start_time:
                yield entry


class Objects:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put(self, data: bytes) -> ObjectRefRecord:
        name = uuid.uuid4().hex
        self.data[name] = data
        return ObjectRefRecord(bucket="b", name=name, digest=sha256_digest(data), size=len(data))

    async def get(self, ref: ObjectRefRecord) -> bytes:
        return self.data[ref.name]


async def no_triton(url: str, model: str, version: str) -> TritonSnapshot:
    return TritonSnapshot(reachable=False, url=url, model=model, version=version, error="not here")


class World:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.announced = Recorder()
        self.logs = ListedLogs()
        self.objects = Objects()
        self.monitor = self.restart()

    def restart(self) -> Monitor:
        if hasattr(self, "stores"):
            stores = self.stores
        else:
            stores = self.stores = Stores(
                stats=MemoryStore(StatsRecord),
                deployments=MemoryStore(DeploymentInfo),
                versions=MemoryStore(VersionInfo),
                jobs=MemoryStore(JobInfo),
                dataset_versions=MemoryStore(DatasetVersionInfo),
                datasets=MemoryStore(DatasetIndex),
                references=MemoryStore(ReferenceRecord),
                rules=MemoryStore(RulesRecord),
                states=MemoryStore(RuleStatesRecord),
                policies=MemoryStore(PolicyRecord),
                alerts=MemoryStore(AlertsRecord),
            )
        options = Options(
            window_s=1,
            retention_windows=600,
            drift_window_s=30,
            thresholds=DriftThresholds(min_samples=300),
            drift_for_evaluations=1,
            drift_cooldown_s=0,
            artifact_keys=artifact_keys().trusted(),
        )
        self.monitor = Monitor(
            stores, self.objects.get, self.announced, self.logs, no_triton, options, clock=lambda: self.now
        )
        return self.monitor

    async def dataset_version(self, frame: pl.DataFrame) -> str:
        buf = io.BytesIO()
        frame.write_parquet(buf)
        version_id = "dv_" + uuid.uuid4().hex[:12]
        await self.monitor.on_dataset_version(
            DatasetVersionInfo(
                tenant=TENANT,
                dataset_id="ds_1",
                dataset_name="diabetes",
                version_id=version_id,
                object=self.objects.put(buf.getvalue()),
            )
        )
        return version_id

    async def deploy(self, version: int, dataset_version_id: str, ready_at: float = 0.0) -> None:
        job_id = f"job_{version}"
        await self.monitor.on_training_completed(
            JobInfo(
                tenant=TENANT,
                job_id=job_id,
                algorithm="ridge",
                params={"alpha": "1.0"},
                target="target",
                model_name=NAME,
                split_seed=42,
                test_fraction=0.2,
                task="regression",
                dataset_id="ds_1",
                dataset_version_id=dataset_version_id,
            )
        )
        signature = artifacts.Signature(features=FEATURES, target="target", task="regression", algorithm="ridge")
        stored = await self.stores.dataset_versions.get(f"{TENANT}.dsv.{dataset_version_id}")
        assert stored is not None
        await self.monitor.on_version_created(
            VersionInfo(
                tenant=TENANT,
                model_name=NAME,
                version=version,
                features=FEATURES,
                target="target",
                algorithm="ridge",
                artifact=self.objects.put(artifact_keys().signer().sign(artifacts.pack(MODEL, signature))),
                dataset_object=stored.value.object,
                dataset_id="ds_1",
                dataset_version_id=dataset_version_id,
                training_job_id=job_id,
            )
        )
        await self.monitor.on_deployment_ready(
            DeploymentInfo(
                tenant=TENANT,
                name=NAME,
                model_name=NAME,
                model_version=version,
                dataset_id="ds_1",
                dataset_version_id=dataset_version_id,
                training_job_id=job_id,
                ready_at=ready_at,
            )
        )

    async def serve(self, version: int, rows: npt.NDArray[np.float64], *, error: str = "") -> None:
        """Logs ``rows`` as requests of 10 rows, a tenth of a second apart, and moves the clock past them."""
        for k in range(0, len(rows), 10):
            chunk = rows[k : k + 10]
            entry = LogEntry(
                tenant=TENANT,
                deployment=NAME,
                model_name=NAME,
                version=version,
                log_id=uuid.uuid4().hex,
                request_id=f"r{k}",
                trace_id="",
                time=self.now,
                batch_rows=len(chunk),
                latency_ms=2.0,
                error=error,
                feature_names=FEATURES,
                rows=chunk.tolist(),
                outputs=[] if error else MODEL.predict(chunk).tolist(),
                sequence=len(self.logs.entries) + 1,
            )
            self.logs.entries.append(entry)
            await self.monitor.record_log(entry)
            self.now += 0.1

    async def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds
        await self.monitor.tick()

    async def alerts(self) -> list[AlertRecord]:
        return await self.monitor.alerts(TENANT, NAME, firing_only=False, limit=0)


def rows(n: int, seed: int, shift: float = 0.0) -> npt.NDArray[np.float64]:
    x = FRAME.select(FEATURES).to_numpy()[np.random.default_rng(seed).integers(0, FRAME.height, n)]
    for name in ("bmi", "bp"):
        x[:, FEATURES.index(name)] += shift * FRAME[name].std()
    return x


async def test_a_late_deployment_ready_does_not_bring_back_the_version_it_replaced() -> None:
    """A ``deployment.ready`` delivered again after a newer one (its first handling was cut by a restart, and
    the newer one was handled meanwhile) changes nothing: the deployment serves what it serves now."""
    w = World()
    data = await w.dataset_version(FRAME)
    await w.deploy(1, data, ready_at=100.0)
    await w.deploy(2, data, ready_at=200.0)
    await w.deploy(1, data, ready_at=100.0)  # the late one
    info = await w.monitor.deployment(TENANT, NAME)
    assert info is not None and (info.model_version, info.ready_at) == (2, 200.0)


async def test_an_incident_recorded_before_a_restart_is_not_opened_again() -> None:
    """A monitor killed after recording an incident but before saving its rule states: the restarted one
    fires again on the same drift, finds the recorded incident, and opens no second one."""
    w = World()
    await w.deploy(1, await w.dataset_version(FRAME))
    await w.serve(1, rows(400, seed=1, shift=2.0))
    await w.tick()
    (first,) = await w.alerts()
    await w.stores.states.delete(f"{TENANT}.rulestate.{NAME}")  # what a kill before save_states leaves
    w.monitor = w.restart()
    await w.serve(1, rows(400, seed=2, shift=2.0))
    await w.tick()
    await w.tick()
    assert [(a.incident_id, a.state) for a in await w.alerts()] == [(first.incident_id, "firing")]
    assert w.announced.incidents == [("drift", "fired", first.incident_id)]


async def test_one_incident_one_retraining_and_no_loop() -> None:
    w = World()
    v1_data = await w.dataset_version(FRAME)
    await w.deploy(1, v1_data)
    await w.monitor.set_policy(PolicyRecord(tenant=TENANT, deployment=NAME, on_drift=True, min_interval_seconds=0.001))

    # Drift without newer data: one incident, and no retraining (it would learn the same data again).
    await w.serve(1, rows(400, seed=1, shift=2.0))
    await w.tick()
    await w.tick()
    (first,) = await w.alerts()
    assert (first.kind, first.state, first.drifted) == ("drift", "firing", ["bmi", "bp"])
    assert first.retraining == f"skipped: dataset diabetes has no version newer than {v1_data}"
    assert w.announced.incidents == [("drift", "fired", first.incident_id)] and w.announced.retrainings == []

    # The drift ends (the shifted rows leave the window): the incident resolves.
    w.now += 40
    await w.serve(1, rows(400, seed=2))
    await w.tick()
    assert [a.state for a in await w.alerts()] == ["resolved"]
    assert w.announced.incidents[-1] == ("drift", "resolved", first.incident_id)

    # New data arrives and the drift comes back: a new incident asks for one retraining on the newest version.
    newer = await w.dataset_version(FRAME.with_columns(pl.col("bmi") * 1.1))
    w.now += 40
    await w.serve(1, rows(400, seed=3, shift=2.0))
    for _ in range(3):
        await w.tick()
    second = (await w.alerts())[0]
    assert second.incident_id != first.incident_id and second.retraining == "requested"
    (request,) = w.announced.retrainings
    assert request.job_id == second.retraining_job_id == retraining_job_id(TENANT, second.incident_id)
    assert (request.algorithm, request.params, request.dataset_version_id) == ("ridge", {"alpha": "1.0"}, newer)
    assert (request.training_job_id, request.trained_dataset_version_id) == ("job_1", v1_data)

    # Say the retrained version was not promoted: v1 still serves. A third incident must not ask again.
    w.now += 40
    await w.serve(1, rows(400, seed=4))
    await w.tick()
    w.now += 40
    await w.serve(1, rows(400, seed=5, shift=2.0))
    await w.tick()
    third = (await w.alerts())[0]
    assert third.incident_id not in (first.incident_id, second.incident_id)
    assert third.retraining.startswith(f"skipped: incident {second.incident_id} already asked to retrain version 1")
    assert len(w.announced.retrainings) == 1

    # The retrained version serves (trained on the newest data): its drift has no newer data to retrain on.
    await w.deploy(2, newer)
    w.now += 40
    await w.serve(2, rows(400, seed=6, shift=2.0))
    for _ in range(2):
        await w.tick()
    fourth = (await w.alerts())[0]
    assert fourth.model_version == 2 and fourth.retraining.startswith("skipped: dataset diabetes has no version newer")
    assert len(w.announced.retrainings) == 1
    fired = [i for kind, t, i in w.announced.incidents if t == "fired"]
    assert len(fired) == len(set(fired)) == 4


async def test_an_incident_whose_event_failed_is_announced_once_on_the_next_tick() -> None:
    w = World()
    await w.deploy(1, await w.dataset_version(FRAME))
    await w.monitor.set_rules(
        TENANT,
        NAME,
        [Rule(name="errors", metric="error_rate", comparison=">", threshold=0.5, window_seconds=3, for_evaluations=1)],
    )
    await w.serve(1, rows(30, seed=7), error="boom")
    w.announced.fail_next = True
    await w.tick()  # fires; the event fails; the incident is stored unannounced
    (alert,) = await w.alerts()
    assert alert.state == "firing" and not alert.announced_fired and w.announced.incidents == []
    await w.tick(0.1)
    await w.tick(0.1)
    assert w.announced.incidents == [("alert", "fired", alert.incident_id)]
    (alert,) = await w.alerts()
    assert alert.announced_fired


async def test_a_restarted_monitor_reads_its_logs_back_and_counts_each_once() -> None:
    w = World()
    await w.deploy(1, await w.dataset_version(FRAME))
    await w.serve(1, rows(200, seed=8))
    before = w.monitor.live.serving(TENANT).last(NAME, 1, seconds=60, at=w.now)
    restarted = w.restart()
    assert await restarted.replay() == 20
    # The durable consumer then redelivers some of the same logs: not counted again.
    for entry in w.logs.entries[-5:]:
        assert not await restarted.record_log(entry, persist=False)
    after = restarted.live.serving(TENANT).last(NAME, 1, seconds=60, at=w.now)
    assert (after.requests, after.rows, after.latency_p95_ms) == (before.requests, before.rows, before.latency_p95_ms)
    # Labels read back match predictions read back.
    restarted.apply_labels(TENANT, NAME, [LabelIn(request_id="r0", row=0, value=100.0)], at=w.now)
    overall, _ = restarted.live.performance(TENANT, NAME, 1, "regression")
    assert overall.labelled == 1
    assert overall.rmse == pytest.approx(abs(w.logs.entries[0].outputs[0] - 100.0))


async def test_deletions_erase_what_the_monitor_keeps_of_a_dataset_and_of_a_version() -> None:
    w = World()
    kept, gone = await w.dataset_version(FRAME), await w.dataset_version(FRAME.head(100))
    await w.deploy(1, kept)
    await w.monitor.reference(TENANT, NAME, 1)  # built and cached: the profile of the training rows
    assert await w.stores.references.keys(f"{TENANT}.ref.*.*") == [f"{TENANT}.ref.{NAME}.1"]

    await w.monitor.on_version_deleted(TENANT, NAME, 1, "job_1")
    assert await w.stores.references.keys(f"{TENANT}.>") == []
    assert await w.stores.versions.get(f"{TENANT}.mv.{NAME}.1") is None
    assert await w.stores.jobs.get(f"{TENANT}.job.job_1") is None
    assert w.monitor.references.cached(TENANT, NAME, 1) is None
    # A reference asked for again is not rebuilt from memory: the version is unknown now.
    with pytest.raises(FailedPrecondition, match="unknown to the monitor"):
        await w.monitor.reference(TENANT, NAME, 1)

    await w.monitor.on_dataset_deleted(TENANT, "ds_1", [gone])
    assert await w.stores.dataset_versions.get(f"{TENANT}.dsv.{gone}") is None
    assert await w.stores.dataset_versions.get(f"{TENANT}.dsv.{kept}") is None  # from the monitor's own index
    assert await w.stores.datasets.get(f"{TENANT}.ds.ds_1") is None
    await w.monitor.on_dataset_deleted(TENANT, "ds_1", [gone])  # a redelivery: nothing left, no error


async def test_a_deleted_tenant_leaves_nothing_in_the_monitor_s_memory() -> None:
    w = World()
    await w.deploy(1, await w.dataset_version(FRAME))
    await w.monitor.reference(TENANT, NAME, 1)
    await w.serve(1, rows(40, seed=1))
    w.monitor.apply_labels(TENANT, NAME, [LabelIn(request_id="r0", row=0, value=100.0)], at=w.now)
    await w.tick()
    overall, _ = w.monitor.live.performance(TENANT, NAME, 1, "regression")
    assert overall.labelled == 1 and w.monitor.references.cached(TENANT, NAME, 1) is not None
    assert [c.rows for k, c in w.monitor.live.counters.items() if k[0] == TENANT] == [40]

    w.monitor.forget_tenant(TENANT)
    overall, _ = w.monitor.live.performance(TENANT, NAME, 1, "regression")
    assert overall.labelled == 0 and w.monitor.references.cached(TENANT, NAME, 1) is None
    assert not [k for k in w.monitor.live.counters if k[0] == TENANT]
    assert not [k for k in w.monitor.observations.last_drift if k[0] == TENANT]
