"""The rollout state machine, edge by edge, on in-memory Triton hosts and an in-memory store.

No nats-server and no Triton: :mod:`fakes` holds the hosts (what they load, unload and
answer, and the faults they are told to show). The same rollouts against real servers are in
``test_deployer.py``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from lepton.events.v1 import events_pb2
from sklearn.linear_model import Ridge

from lepton_core import events
from lepton_core.errors import FailedPrecondition, NotFound, ResourceExhausted
from lepton_core.quotas import PlanBook, PlanRecord
from lepton_core.store import MemoryStore
from lepton_core.triton_pool import HostPool, PoolEntry
from lepton_core.wire import lineage, now
from lepton_deployer.api import AliasMovedHandler
from lepton_deployer.core import Deployer
from lepton_deployer.records import Defaults, DeploymentRecord, DeploymentState, Route, ServingConfig, VersionInfo
from lepton_ml import artifacts
from lepton_platform.testing import artifact_keys

from .fakes import FakeHost, FakeTriton, MemoryObjects, RecordingStore

pytestmark = pytest.mark.timeout(30)

TENANT, NAME, MODEL = "t", "d", "m"
STABLE, STAGED = "t--d", "t--d--next"
#: The rig's host pool: two shared hosts by name, and a host of another tenant.
A, B, PRIVATE = "default", "b", "other-gpu"
POOL = HostPool(
    {
        A: PoolEntry(url="triton-a:8001"),
        B: PoolEntry(url="triton-b:8001"),
        PRIVATE: PoolEntry(url="triton-c:8001", tenants=["other"]),
    }
)
FEATURES = ["a", "b", "c"]
#: Python: no ONNX conversion to wait for; 8 rows a request: the 16 recorded rows take two.
CONFIG = ServingConfig(backend="python", max_batch_size=8)
_rng = np.random.default_rng(0)
_x = _rng.normal(size=(80, 4))
FRAME = pl.DataFrame({"a": _x[:, 0], "b": _x[:, 1], "c": _x[:, 2], "d": _x[:, 3]}).with_columns(
    target=pl.Series(_x @ np.array([1.0, 2.0, 3.0, 0.5]) + _rng.normal(scale=0.1, size=80))
)


@dataclass
class Rig:
    """A deployer on fake hosts, an in-memory store and object store, and the events it published."""

    triton: FakeTriton = field(default_factory=FakeTriton)
    store: RecordingStore[DeploymentRecord] = field(default_factory=lambda: RecordingStore(DeploymentRecord))
    versions: MemoryStore[VersionInfo] = field(default_factory=lambda: MemoryStore(VersionInfo))
    objects: MemoryObjects = field(default_factory=MemoryObjects)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    files: dict[int, dict[str, bytes]] = field(default_factory=dict)
    pool: HostPool = POOL
    #: Every address the deployer connected to.
    connected: list[str] = field(default_factory=list)

    def _connect(self, url: str) -> FakeHost:
        """The fake host of the pool entry at ``url``: the fakes are kept by pool name, so a test reads them by it."""
        self.connected.append(url)
        return self.triton(next(name for name, entry in self.pool.entries.items() if entry.url == url))

    def deployer(self, load_timeout: float = 1.0, plans: PlanBook | None = None) -> Deployer:
        """A deployer over this rig's state (a second one is a replacement of the first)."""

        async def publish(kind: str, record: DeploymentRecord, extra: dict[str, Any]) -> None:
            self.events.append((kind, extra))

        return Deployer(
            self.store,
            self.versions,
            self.objects,
            pool=self.pool,
            defaults=Defaults(log_sample_rate=1.0, max_batch_size=8, max_queue_delay_us=0),
            load_timeout=load_timeout,
            publish=publish,
            drain_s=0,
            hosts=self._connect,
            trusted=artifact_keys().trusted(),
            plans=plans,
        )

    async def version(self, version: int, columns: list[str] = FEATURES) -> None:
        """Registers ``version``: a ridge (its alpha the version) on ``columns``, with its training data."""
        frame = FRAME.select([*columns, "target"])
        model = Ridge(alpha=float(version)).fit(frame.select(columns).to_numpy(), frame["target"].to_numpy())
        blob = artifacts.seal(
            artifacts.pack(model, artifacts.Signature(columns, "target", "regression", "ridge")),
            artifact_keys().signer(),
        )
        self.files[version] = {**artifacts.unpack_files(blob, artifact_keys().trusted()), artifacts.ARTIFACT_FILE: blob}
        buf = io.BytesIO()
        frame.write_parquet(buf)
        await self.versions.put(
            f"{TENANT}.version.{MODEL}.{version}",
            VersionInfo(
                tenant=TENANT,
                model_name=MODEL,
                version=version,
                artifact=await self.objects.put("artifacts", f"{MODEL}-{version}.zip", blob),
                dataset_object=await self.objects.put("datasets", f"{MODEL}-{version}.parquet", buf.getvalue()),
                split_seed=3,
                test_fraction=0.2,
                training_job_id=f"job-{version}",
            ),
        )

    def routes(self) -> list[list[tuple[str, int, float]]]:
        """Every distinct routing table the deployment had, in order."""
        seen: list[list[tuple[str, int, float]]] = []
        for record in self.store.writes:
            table = [(r.triton_model, r.model_version, r.weight) for r in record.routes]
            if table and (not seen or seen[-1] != table):
                seen.append(table)
        return seen


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    assert rig.triton.opened == rig.triton.closed, "a host connection was left open"


async def _serving(rig: Rig, deployer: Deployer, version: int = 1, **kwargs: Any) -> DeploymentRecord:
    """A deployment of ``MODEL`` serving ``version`` (registered here), the rig's events cleared."""
    for v in range(1, version + 1):
        await rig.version(v)
    record = await deployer.deploy(TENANT, NAME, MODEL, version, config=CONFIG, wait=True, **kwargs)
    assert record.state == DeploymentState.READY and record.model_version == version, record.error
    rig.events.clear()
    return record


def _kinds(rig: Rig) -> list[str]:
    return [kind for kind, _ in rig.events]


async def test_a_first_deployment_is_staged_and_smoke_tested_in_the_stable_model(rig: Rig) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    record = await deployer.deploy(TENANT, NAME, MODEL, 1, config=CONFIG, wait=True)

    assert (record.state, record.model_version, record.target_version) == (DeploymentState.READY, 1, 0)
    assert record.routes == [Route(triton_model=STABLE, model_version=1, weight=1.0)]
    assert [(h.url, h.versions, h.ready) for h in record.host_states] == [(A, [1], True)]
    assert (record.feature_columns, record.training_job_id, record.backend) == (FEATURES, "job-1", "python")
    entry = record.history[-1]
    assert (entry.from_version, entry.to_version, entry.outcome, entry.smoke_rows) == (0, 1, "completed", 16)
    # One load, of the stable model itself: nothing serves yet that a staged model would protect.
    assert rig.triton.loads_of(A) == [(STABLE, [1])] and rig.triton.unloads == []
    assert rig.triton.serving(A) == {STABLE: [1]}
    load = rig.triton.loads[0]
    assert load.config["name"] == STABLE and load.config["max_batch_size"] == 8
    params = {k: v["string_value"] for k, v in load.config["parameters"].items()}
    assert params["tenant"] == TENANT and params["model_version"] == "1"
    # Where the model logs to, and with which credentials, is no part of a config Triton clients can read.
    assert not {k for k in params if "nats" in k}, params
    # Our serving model and the signed artifact, nothing else (and the deployer's ONNX conversion, if any).
    assert set(load.files) <= {
        "file:1/model.py",
        "file:1/artifact.lepton",
        "file:1/lepton.onnx",
        "file:1/lepton-onnx.json",
    }
    assert {"file:1/model.py", "file:1/artifact.lepton"} <= set(load.files)
    # The 16 recorded rows, 8 a request, marked as checks (never logged as traffic).
    smoke = [(i.model, i.version, i.rows, i.parameters["lepton_check"]) for i in rig.triton.inferences]
    assert smoke == [(STABLE, "1", 8, "smoke"), (STABLE, "1", 8, "smoke")]
    assert len(next(iter(record.recorded_inputs.values()))) == 16
    assert _kinds(rig) == ["started", "ready"] and rig.events[0][1] == {"from_version": 0}


async def test_a_new_version_swaps_blue_green_and_the_stable_model_never_stops(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer)
    rig.triton.loads.clear()
    rig.triton.inferences.clear()
    await rig.version(2)
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)

    assert (record.state, record.model_version, record.target_version) == (DeploymentState.READY, 2, 0)
    # Stage beside the stable model, then the stable model with both, then with the new one alone.
    assert rig.triton.loads_of(A) == [(STAGED, [2]), (STABLE, [1, 2]), (STABLE, [2])]
    assert rig.triton.unloads == [(A, STAGED)]  # the stable model is reloaded, never unloaded
    assert rig.triton.serving(A) == {STABLE: [2]}
    both = rig.triton.loads[1].files  # each version with its own files
    assert both["file:1/artifact.lepton"] == rig.files[1][artifacts.ARTIFACT_FILE]
    assert both["file:2/artifact.lepton"] == rig.files[2][artifacts.ARTIFACT_FILE]
    # Only the exact names reach Triton: the bundle's own files stay inside the signed artifact.
    assert sorted(both) == [f"file:{v}/{n}" for v in (1, 2) for n in ("artifact.lepton", "model.py")]
    assert {(i.model, i.version) for i in rig.triton.inferences} == {(STAGED, "2")}
    # All at once: the routes go from the old version to the new one, never split.
    assert rig.routes()[-2:] == [[(STABLE, 1, 1.0)], [(STABLE, 2, 1.0)]]
    entry = record.history[-1]
    assert (entry.from_version, entry.to_version, entry.strategy, entry.outcome) == (1, 2, "all_at_once", "completed")
    assert _kinds(rig) == ["started", "ready"] and rig.events[0][1] == {"from_version": 1}


async def test_a_canary_routes_each_share_in_turn_and_checks_failures_after_each(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer, strategy="canary", canary_weights=[0.1, 0.5], canary_step_seconds=0.01)
    await rig.version(2)
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)

    assert record.model_version == 2 and record.history[-1].strategy == "canary"
    assert rig.routes() == [
        [(STABLE, 1, 1.0)],
        [(STABLE, 1, 0.9), (STAGED, 2, 0.1)],
        [(STABLE, 1, 0.5), (STAGED, 2, 0.5)],
        [(STABLE, 2, 1.0)],
    ]
    assert rig.triton.statistics_read == [(A, STAGED, "2"), (A, STAGED, "2")]  # after each step


async def test_a_canary_whose_staged_model_fails_requests_is_rolled_back(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer, strategy="canary", canary_weights=[0.1, 0.5], canary_step_seconds=0.01)
    await rig.version(2)
    rig.triton.failed_requests[(A, STAGED)] = 3
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)

    reason = f"canary: version 2 failed 3 requests on {A!r}"
    assert (record.state, record.model_version, record.error) == (DeploymentState.READY, 1, reason)
    assert record.history[-1].outcome == "rolled_back" and record.history[-1].reason == reason
    # Stopped at the first share; the routes are back on the stable version alone.
    assert rig.routes()[-2:] == [[(STABLE, 1, 0.9), (STAGED, 2, 0.1)], [(STABLE, 1, 1.0)]]
    assert rig.triton.serving(A) == {STABLE: [1]}
    assert rig.events[-1] == ("rolled_back", {"version": 2, "reason": reason})


async def test_wrong_smoke_answers_roll_back_with_the_reason_and_the_old_version_keeps_serving(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer)
    await rig.version(2)
    rig.triton.answers[A] = "wrong"
    rig.triton.loads.clear()
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)

    reason = record.history[-1].reason
    assert reason.startswith(f"smoke test on {A!r}: version 2 answers differ from the model's own predictions")
    assert "max abs difference 1 over 16 rows; allowed 1e-06" in reason, reason
    assert (record.state, record.model_version, record.target_version) == (DeploymentState.READY, 1, 0)
    assert (record.error, record.history[-1].outcome) == (reason, "rolled_back")
    assert record.routes == [Route(triton_model=STABLE, model_version=1, weight=1.0)]
    # Never promoted: the staged model went, the stable one was only restored as it was.
    assert rig.triton.loads_of(A) == [(STAGED, [2]), (STABLE, [1])]
    assert rig.triton.serving(A) == {STABLE: [1]}
    assert rig.events == [("started", {"from_version": 1}), ("rolled_back", {"version": 2, "reason": reason})]


async def test_an_empty_smoke_answer_rolls_back_naming_the_numpy_mismatch(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer)
    await rig.version(2)
    rig.triton.answers[A] = "empty"
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)

    reason = record.history[-1].reason
    assert reason.startswith(f"smoke test on {A!r}: version 2 answered a malformed 'prediction' tensor"), reason
    assert "cannot reshape array of size 0" in reason and "another numpy than its stub's" in reason, reason
    assert (record.state, record.model_version) == (DeploymentState.READY, 1)
    assert rig.triton.serving(A) == {STABLE: [1]}


async def test_a_version_taking_columns_the_recorded_inputs_lack_fails_its_smoke_test(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer)
    await rig.version(2, columns=["a", "d"])
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)

    assert "smoke test: version 2 takes columns ['d']" in record.history[-1].reason, record.history[-1].reason
    assert record.model_version == 1 and rig.triton.serving(A) == {STABLE: [1]}
    assert all(i.version == "1" for i in rig.triton.inferences)  # nothing was sent to version 2


async def test_a_load_refused_on_one_of_several_hosts_rolls_back_on_every_host(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer, hosts=[A, B])
    await rig.version(2)
    rig.triton.loads.clear()
    rig.triton.refuse_loads[B] = "failed to load 't--d--next': out of memory"
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)

    reason = f"Triton host {B!r} could not load {STAGED} v[2]: failed to load 't--d--next': out of memory"
    assert (record.state, record.model_version, record.error) == (DeploymentState.READY, 1, reason)
    # A passed stage and smoke, B refused: neither was promoted, and both serve version 1.
    assert rig.triton.loads_of(A) == [(STAGED, [2]), (STABLE, [1])]
    assert rig.triton.loads_of(B) == [(STAGED, [2]), (STABLE, [1])]  # its restore is refused too: logged
    assert (A, STAGED) in rig.triton.unloads and (B, STAGED) in rig.triton.unloads
    assert rig.triton.serving(A) == rig.triton.serving(B) == {STABLE: [1]}
    assert rig.events[-1] == ("rolled_back", {"version": 2, "reason": reason})


async def test_a_first_deployment_that_cannot_load_fails(rig: Rig) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    rig.triton.refuse_loads[A] = "KIND_GPU but no GPUs are available"
    record = await deployer.deploy(TENANT, NAME, MODEL, 1, config=CONFIG, wait=True)

    reason = f"Triton host {A!r} could not load {STABLE} v[1]: KIND_GPU but no GPUs are available"
    assert (record.state, record.model_version, record.error, record.routes) == (DeploymentState.FAILED, 0, reason, [])
    assert record.history[-1].outcome == "failed"
    assert rig.triton.serving(A) == {}
    assert rig.events == [("started", {"from_version": 0}), ("failed", {"version": 1, "reason": reason})]


async def test_a_staged_model_that_never_gets_ready_is_rolled_back(rig: Rig) -> None:
    deployer = rig.deployer(load_timeout=0.3)
    await _serving(rig, deployer)
    await rig.version(2)
    rig.triton.never_ready.add(STAGED)
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)

    assert record.history[-1].reason == f"Triton did not report {STAGED} v2 ready within 0s"
    assert (record.state, record.model_version) == (DeploymentState.READY, 1)
    assert rig.triton.serving(A) == {STABLE: [1]}


async def test_rollback_goes_back_all_at_once_to_the_version_served_before(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer, strategy="canary", canary_step_seconds=0.01)
    with pytest.raises(FailedPrecondition, match="no earlier version"):
        await deployer.rollback(TENANT, NAME, wait=True)
    await rig.version(2)
    await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)
    writes = len(rig.store.writes)

    record = await deployer.rollback(TENANT, NAME, wait=True)

    assert (record.state, record.model_version, record.strategy) == (DeploymentState.READY, 1, "canary")
    entry = record.history[-1]
    assert (entry.from_version, entry.to_version, entry.strategy, entry.outcome) == (2, 1, "all_at_once", "completed")
    assert all(len(r.routes) <= 1 for r in rig.store.writes[writes:])  # no canary share on the way back
    assert rig.triton.serving(A) == {STABLE: [1]}


async def test_reconcile_rolls_back_a_rollout_a_stopped_deployer_left_half_way(rig: Rig) -> None:
    await _serving(rig, rig.deployer())
    await rig.version(2)
    # The stopped deployer had staged v2, smoke-tested it and loaded both versions in the stable model.
    rig.triton.models[A] = {STAGED: {2: rig.files[2]}, STABLE: {1: rig.files[1], 2: rig.files[2]}}
    left = (await rig.deployer().get(TENANT, NAME)).model_copy(
        update={"state": DeploymentState.ROLLING_OUT, "target_version": 2, "updated_at": now() - timedelta(minutes=10)}
    )
    await rig.store.put(f"{TENANT}.{NAME}", left)
    fresh = left.model_copy(update={"name": "running", "triton_model": "t--running", "updated_at": now()})
    await rig.store.put(f"{TENANT}.running", fresh)

    replacement = rig.deployer()
    repaired = await replacement.reconcile()

    assert repaired == [f"{NAME}: interrupted rollout of v2 rolled back"]
    record = await replacement.get(TENANT, NAME)
    assert (record.state, record.model_version, record.target_version) == (DeploymentState.READY, 1, 0)
    assert record.routes == [Route(triton_model=STABLE, model_version=1, weight=1.0)]
    reason = "the rollout was interrupted: the deployer stopped mid-way"
    assert (record.history[-1].outcome, record.history[-1].reason) == ("rolled_back", reason)
    assert rig.triton.serving(A) == {STABLE: [1]}  # staged model gone, the stable one on v1 alone
    assert rig.events == [("rolled_back", {"version": 2, "reason": reason})]
    # One that moved recently may still be running in another deployer: left alone.
    assert (await replacement.get(TENANT, "running")).state == DeploymentState.ROLLING_OUT


async def test_reconcile_reloads_a_host_that_lost_its_model_and_records_one_that_is_down(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer, hosts=[A, B])
    rig.triton.models[B].clear()  # B restarted with an empty model repository

    assert await deployer.reconcile() == [f"{NAME} v1 on {B}"]
    assert rig.triton.serving(B) == {STABLE: [1]} and rig.triton.loads_of(B)[-1] == (STABLE, [1])
    record = await deployer.get(TENANT, NAME)
    states = [(h.url, h.versions, h.ready, h.error) for h in record.host_states]
    assert states == [(A, [1], True, ""), (B, [1], True, "")]

    rig.triton.unreachable.add(A)
    assert await deployer.reconcile() == []
    a, b = (await deployer.get(TENANT, NAME)).host_states
    assert not a.ready and "failed to connect" in a.error and b.ready


async def test_a_deploy_of_the_version_already_rolling_out_joins_it(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer)
    await rig.version(2)
    await rig.version(3)
    rig.triton.hold_loads = asyncio.Event()
    rig.triton.load_started.clear()

    first = await deployer.deploy(TENANT, NAME, MODEL, 2)
    assert (first.state, first.target_version) == (DeploymentState.ROLLING_OUT, 2)
    await rig.triton.load_started.wait()  # the rollout holds the deployment now
    again = await deployer.deploy(TENANT, NAME, MODEL, 2)
    waiting = asyncio.create_task(deployer.deploy(TENANT, NAME, MODEL, 2, wait=True))
    with pytest.raises(FailedPrecondition, match="is rolling out version 2"):
        await deployer.deploy(TENANT, NAME, MODEL, 3)
    assert again.updated_at == first.updated_at  # joined: nothing changed
    rig.triton.hold_loads.set()

    done = await waiting
    assert (done.state, done.model_version) == (DeploymentState.READY, 2)
    assert [h.to_version for h in done.history] == [1, 2]  # one rollout to version 2
    assert _kinds(rig) == ["started", "ready"]
    await asyncio.gather(*deployer.tasks)


def _moved(version: int, alias: str = "champion") -> events.Event[events_pb2.ModelAliasMoved]:
    data = events_pb2.ModelAliasMoved(
        tenant=TENANT, lineage=lineage(model_name=MODEL, model_version=version), alias=alias
    )
    return events.Event(id="e", type="t", source="/test", time="", subject="", data=data, headers={})


async def test_an_alias_move_takes_over_the_rollout_a_dead_deployer_left_to_that_version(rig: Rig) -> None:
    """The deployer died while rolling a champion move out; its replacement gets the move again (the event
    was not acked) and finishes the rollout. Before, the move was dropped because the record said
    ROLLING_OUT, and the reconcile loop later rolled the rollout back: the old version served on."""
    await _serving(rig, rig.deployer(), follow="champion")
    await rig.version(2)
    rig.triton.models[A] = {STAGED: {2: rig.files[2]}, STABLE: {1: rig.files[1]}}
    left = (await rig.deployer().get(TENANT, NAME)).model_copy(
        update={"state": DeploymentState.ROLLING_OUT, "target_version": 2, "updated_at": now()}
    )
    await rig.store.put(f"{TENANT}.{NAME}", left)

    replacement = rig.deployer()
    await AliasMovedHandler(replacement)(_moved(2))

    record = await replacement.get(TENANT, NAME)
    assert (record.state, record.model_version, record.target_version) == (DeploymentState.READY, 2, 0)
    assert rig.triton.serving(A) == {STABLE: [2]}


async def test_an_alias_move_during_a_rollout_of_this_deployer_waits_for_it_then_rolls_out(rig: Rig) -> None:
    """A Deploy's rollout to v2 runs here when the champion moves to v3: the move waits for that rollout to
    end, then rolls v3 out (it was acked and dropped before, leaving v2 served under a v3 champion)."""
    deployer = rig.deployer()
    await _serving(rig, deployer, follow="champion")
    await rig.version(2)
    await rig.version(3)
    rig.triton.hold_loads = asyncio.Event()
    rig.triton.load_started.clear()
    await deployer.deploy(TENANT, NAME, MODEL, 2)
    await rig.triton.load_started.wait()  # the rollout to v2 holds the deployment now
    moving = asyncio.create_task(AliasMovedHandler(deployer)(_moved(3)))
    await asyncio.sleep(0.2)
    assert not moving.done()  # waiting for the running rollout, not dropped
    rig.triton.hold_loads.set()
    await moving
    record = await deployer.get(TENANT, NAME)
    assert (record.state, record.model_version) == (DeploymentState.READY, 3)
    assert [h.to_version for h in record.history][-2:] == [2, 3]
    await asyncio.gather(*deployer.tasks)


async def test_a_deploy_of_the_version_served_everywhere_only_changes_settings(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer)
    loads = len(rig.triton.loads)
    record = await deployer.deploy(TENANT, NAME, MODEL, 1, config=CONFIG.model_copy(update={"max_batch_size": 4}))
    assert (record.state, record.config.max_batch_size, len(rig.triton.loads)) == (DeploymentState.READY, 4, loads)
    assert rig.events == []
    # A host added: the version is rolled out to it.
    record = await deployer.deploy(TENANT, NAME, MODEL, 1, hosts=[A, B], wait=True)
    assert {h.url for h in record.host_states if h.ready} == {A, B}
    assert rig.triton.serving(B) == {STABLE: [1]}


async def test_delete_unloads_both_models_from_every_host_even_with_one_down(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer, hosts=[A, B])
    rig.triton.unreachable.add(B)
    gone = await deployer.delete(TENANT, NAME)
    assert gone.name == NAME
    assert rig.triton.unloads == [(A, STABLE), (A, STAGED)] and rig.triton.serving(A) == {}
    with pytest.raises(NotFound):
        await deployer.get(TENANT, NAME)
    assert rig.events == [("deleted", {})]  # deployment.deleted: the usage meter counts one fewer


async def test_a_deleted_tenant_has_every_deployment_unloaded_and_no_other_tenant_s(rig: Rig) -> None:
    deployer = rig.deployer()
    await _serving(rig, deployer, hosts=[A, B])
    await deployer.deploy(TENANT, "second", MODEL, 1, hosts=[A], wait=True)
    mine = await rig.versions.get(f"{TENANT}.version.{MODEL}.1")
    assert mine is not None
    await rig.versions.put(f"other.version.{MODEL}.1", mine.value.model_copy(update={"tenant": "other"}))
    await deployer.deploy("other", NAME, MODEL, 1, hosts=[A], wait=True)
    erased = await deployer.delete_tenant(TENANT)
    assert erased.deployments == 2 and await deployer.list(TENANT) == []
    assert rig.triton.serving(A) == {"other--d": [1]} and rig.triton.serving(B) == {}
    assert [d.name for d in await deployer.list("other")] == [NAME]
    assert (await deployer.delete_tenant(TENANT)).deployments == 0  # a redelivered deletion finds nothing


async def test_a_new_deployment_past_the_plan_is_refused_before_anything_is_saved_or_loaded(rig: Rig) -> None:
    plans = PlanBook(records=[PlanRecord(tenant=TENANT, plan="trial", overrides={"deployments": 1})])
    deployer = rig.deployer(plans=plans)
    await _serving(rig, deployer)
    loads, writes = len(rig.triton.loads), len(rig.store.writes)
    with pytest.raises(ResourceExhausted) as err:
        await deployer.deploy(TENANT, "second", MODEL, 1, config=CONFIG, wait=True)
    assert str(err.value).startswith("deployments: 1 of 1 on plan trial; deployment 'second' would be one more")
    assert (len(rig.triton.loads), len(rig.store.writes), rig.events) == (loads, writes, [])
    assert [d.name for d in await deployer.list(TENANT)] == [NAME]
    # The deployment there is may be deployed again; another tenant is on its own plan.
    assert (await deployer.deploy(TENANT, NAME, MODEL, 1, wait=True)).state == DeploymentState.READY
    await deployer.delete(TENANT, NAME)
    assert (await deployer.deploy(TENANT, "second", MODEL, 1, config=CONFIG, wait=True)).state == DeploymentState.READY


async def test_statistics_come_from_every_host_that_has_the_model(rig: Rig) -> None:
    deployer = rig.deployer()
    record = await _serving(rig, deployer, hosts=[A, B])
    stats, warnings = await deployer.statistics(record)
    assert [(s["host"], s["name"], s["version"], s["ready"]) for s in stats] == [
        (A, STABLE, "1", True),
        (B, STABLE, "1", True),
    ]
    assert warnings == []
