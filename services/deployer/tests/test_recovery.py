"""A rollout left half-way by a deployer that stopped is rolled back by its successor's reconcile."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lepton_core.store import MemoryStore
from lepton_core.triton_pool import DEFAULT_HOST, HostPool, PoolEntry
from lepton_core.wire import now
from lepton_deployer.core import Deployer
from lepton_deployer.records import Defaults, DeploymentRecord, DeploymentState, VersionInfo

UNREACHABLE = "127.0.0.1:9"  # nothing listens there: every Triton call fails fast


async def test_an_interrupted_rollout_is_rolled_back_and_a_fresh_one_is_left_alone() -> None:
    published: list[tuple[str, dict[str, Any]]] = []

    async def publish(kind: str, record: DeploymentRecord, extra: dict[str, Any]) -> None:
        published.append((kind, extra))

    store: MemoryStore[DeploymentRecord] = MemoryStore(DeploymentRecord)
    deployer = Deployer(
        store,
        MemoryStore(VersionInfo),
        objects=None,  # type: ignore[arg-type]  # never reached: nothing to restore from
        pool=HostPool({DEFAULT_HOST: PoolEntry(url=UNREACHABLE)}),
        defaults=Defaults(log_sample_rate=1.0, max_batch_size=8, max_queue_delay_us=0),
        load_timeout=5,
        publish=publish,
    )
    stuck = DeploymentRecord(
        tenant="t",
        name="old-rollout",
        state=DeploymentState.ROLLING_OUT,
        model_name="m",
        model_version=1,
        target_version=2,
        triton_model="t--old-rollout",
        hosts=[DEFAULT_HOST],
        updated_at=now() - timedelta(minutes=10),
    )
    fresh = stuck.model_copy(update={"name": "running", "triton_model": "t--running", "updated_at": now()})
    await store.put("t.old-rollout", stuck)
    await store.put("t.running", fresh)

    repaired = await deployer.reconcile()

    assert repaired == ["old-rollout: interrupted rollout of v2 rolled back"]
    after = await deployer.get("t", "old-rollout")
    assert (after.state, after.model_version, after.target_version) == (DeploymentState.READY, 1, 0)
    assert after.history[-1].outcome == "rolled_back" and "interrupted" in after.history[-1].reason
    assert published == [("rolled_back", {"version": 2, "reason": after.history[-1].reason})]
    # A rollout that moved recently may still be running somewhere: untouched.
    assert (await deployer.get("t", "running")).state == DeploymentState.ROLLING_OUT
