"""The registry's logic against a real nats-server (and the in-memory store): idempotent, race-free versions."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.aio.client import Client as NATS

from lepton_core.bus import ObjectRefRecord, RecordStore
from lepton_core.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from lepton_core.store import MemoryStore
from lepton_core.wire import now
from lepton_registry.core import (
    AliasRecord,
    Edit,
    JobIndex,
    ModelRecord,
    PolicyRecord,
    Registry,
    SearchQuery,
    VersionRecord,
)


async def _registry(nc: NATS, backend: str = "jetstream-kv") -> Registry:
    if backend == "memory":
        return Registry(
            MemoryStore(ModelRecord),
            MemoryStore(VersionRecord),
            MemoryStore(JobIndex),
            MemoryStore(AliasRecord),
            MemoryStore(PolicyRecord),
        )
    js = nc.jetstream()
    return Registry(
        await RecordStore.open(js, "models", ModelRecord),
        await RecordStore.open(js, "models", VersionRecord),
        await RecordStore.open(js, "models", JobIndex),
        await RecordStore.open(js, "models", AliasRecord),
        await RecordStore.open(js, "models", PolicyRecord),
    )


def _draft(tenant: str, job: str) -> VersionRecord:
    return VersionRecord(
        tenant=tenant,
        model_name="m",
        version=0,
        dataset_id="ds",
        dataset_version_id="dv",
        training_job_id=job,
        evaluation_id="ev",
        artifact=ObjectRefRecord(bucket="artifacts", name="a", digest="sha256:00", size=1),
        algorithm="ridge",
        params={},
        metrics={"r2": 0.5},
        features=["x"],
        target="y",
        created_at=now(),
    )


async def test_the_same_job_registers_once(nc: NATS) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc)
    first, new = await registry.register(_draft(tenant, "job_1"))
    again, new_again = await registry.register(_draft(tenant, "job_1"))
    assert (first.version, new, again.version, new_again) == (1, True, 1, False)
    assert [v.version for v in await registry.list_versions(tenant, "m")] == [1]


async def test_concurrent_registrations_get_distinct_versions(nc: NATS) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc)
    results = await asyncio.gather(*(registry.register(_draft(tenant, f"job_{i}")) for i in range(6)))
    assert sorted(r.version for r, _ in results) == [1, 2, 3, 4, 5, 6]
    assert (await registry.get_model(tenant, "m")).latest_version == 6
    assert (await registry.get_version(tenant, "m")).version == 6


async def test_alias_moves_are_compare_and_set(nc: NATS) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc)
    for job in ("job_a", "job_b", "job_c"):
        await registry.register(_draft(tenant, job))
    first = await registry.set_alias(tenant, "m", "champion", 1, expected=0)
    assert (first.version, first.previous_version) == (1, 0)
    # Two challengers race to replace champion v1: exactly one wins.
    results = await asyncio.gather(
        registry.set_alias(tenant, "m", "champion", 2, expected=1),
        registry.set_alias(tenant, "m", "champion", 3, expected=1),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, AliasRecord)]
    assert len(winners) == 1 and all(isinstance(r, Conflict) for r in results if not isinstance(r, AliasRecord))
    assert await registry.resolve_alias(tenant, "m", "champion") == winners[0].version
    assert await registry.aliases(tenant, "m") == {"champion": winners[0].version}
    with pytest.raises(Conflict, match="points at version"):
        await registry.set_alias(tenant, "m", "champion", 1, expected=1)
    with pytest.raises(NotFound):
        await registry.set_alias(tenant, "m", "champion", 9, expected=None)
    with pytest.raises(InvalidArgument):
        await registry.set_alias(tenant, "m", "Champion!", 1, expected=None)
    gone = await registry.delete_alias(tenant, "m", "champion")
    assert gone.version == 0 and gone.previous_version == winners[0].version
    with pytest.raises(NotFound):
        await registry.resolve_alias(tenant, "m", "champion")


async def test_search_filters_and_pages(nc: NATS) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc)
    for i in range(5):
        draft = _draft(tenant, f"job_{i}").model_copy(update={"metrics": {"r2": i / 10}, "model_name": f"m{i % 2}"})
        await registry.register(draft)
    await registry.set_alias(tenant, "m0", "champion", 2, expected=0)
    every, token = await registry.search(tenant, SearchQuery(page_size=2))
    assert [(v.model_name, v.version) for v in every] == [("m0", 1), ("m0", 2)] and token == "2"
    rest, end = await registry.search(tenant, SearchQuery(page_size=2, page_token=token))
    assert [(v.model_name, v.version) for v in rest] == [("m0", 3), ("m1", 1)] and end == "4"
    good, _ = await registry.search(tenant, SearchQuery(metric="r2", min_value=0.25))
    assert sorted(v.metrics["r2"] for v in good) == [0.3, 0.4]
    champions, _ = await registry.search(tenant, SearchQuery(alias="champion"))
    assert [(v.model_name, v.version) for v in champions] == [("m0", 2)]
    assert (await registry.search(tenant, SearchQuery(name_contains="m1")))[0][0].model_name == "m1"
    with pytest.raises(InvalidArgument) as err:
        await registry.search(tenant, SearchQuery(page_size=0))
    assert err.value.field == "page_size"
    with pytest.raises(InvalidArgument):
        await registry.search(tenant, SearchQuery(min_value=1.0))


BACKENDS = pytest.mark.parametrize("backend", ["jetstream-kv", "memory"])


@BACKENDS
async def test_models_take_descriptions_and_tags(nc: NATS, backend: str) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc, backend)
    await registry.register(_draft(tenant, "job_1").model_copy(update={"task": "regression"}))
    model = await registry.get_model(tenant, "m")
    assert (model.task, model.description, model.tags) == ("regression", "", {})
    model, changed = await registry.update_model(
        tenant, "m", Edit(description="diabetes progression", set_tags={"team": "care", "stage": "beta"})
    )
    assert changed == ["description", "tags"] and model.tags == {"team": "care", "stage": "beta"}
    model, changed = await registry.update_model(tenant, "m", Edit(remove_tags=("stage",)))
    assert changed == ["tags"] and model.tags == {"team": "care"} and model.description == "diabetes progression"
    _, changed = await registry.update_model(tenant, "m", Edit(set_tags={"team": "care"}))
    assert changed == []  # nothing changed, nothing written
    with pytest.raises(InvalidArgument) as err:
        await registry.update_model(tenant, "m", Edit(set_tags={"bad key!": "x"}))
    assert err.value.field == "set_tags"
    with pytest.raises(InvalidArgument):
        await registry.update_model(tenant, "m", Edit(set_tags={"a": "1"}, remove_tags=("a",)))
    with pytest.raises(InvalidArgument) as err:
        await registry.update_model(tenant, "m", Edit(status="archived"))
    assert err.value.field == "status"
    with pytest.raises(NotFound):
        await registry.update_model(tenant, "nope", Edit(description="x"))


@BACKENDS
async def test_concurrent_tag_edits_are_all_kept(nc: NATS, backend: str) -> None:
    """Each edit is read-change-compare-and-set, retried on conflict: no edit is lost."""
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc, backend)
    await registry.register(_draft(tenant, "job_1"))
    await asyncio.gather(*(registry.update_model(tenant, "m", Edit(set_tags={f"k{i}": str(i)})) for i in range(8)))
    assert (await registry.get_model(tenant, "m")).tags == {f"k{i}": str(i) for i in range(8)}


@BACKENDS
async def test_archived_versions_take_no_alias_and_aliased_ones_cannot_be_archived(nc: NATS, backend: str) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc, backend)
    for job in ("job_a", "job_b"):
        await registry.register(_draft(tenant, job))
    await registry.set_alias(tenant, "m", "champion", 1, expected=0)
    with pytest.raises(FailedPrecondition, match="aliased as champion"):
        await registry.update_version(tenant, "m", 1, Edit(status="archived"))
    v2, changed = await registry.update_version(tenant, "m", 2, Edit(status="archived", set_tags={"why": "leak"}))
    assert changed == ["tags", "status"] and v2.status == "archived" and v2.updated_at is not None
    with pytest.raises(FailedPrecondition, match="archived"):
        await registry.set_alias(tenant, "m", "champion", 2, expected=1)
    assert await registry.resolve_alias(tenant, "m", "champion") == 1
    with pytest.raises(InvalidArgument) as err:
        await registry.update_version(tenant, "m", 2, Edit(status="deleted"))
    assert err.value.field == "status"


@BACKENDS
async def test_search_by_tags_task_and_status(nc: NATS, backend: str) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc, backend)
    for i, name in enumerate(["fraud", "fraud", "churn"]):
        draft = _draft(tenant, f"job_{i}").model_copy(
            update={"model_name": name, "task": "classification" if name == "fraud" else "regression"}
        )
        await registry.register(draft)
    await registry.update_model(tenant, "fraud", Edit(set_tags={"team": "risk"}))
    await registry.update_version(tenant, "churn", 1, Edit(set_tags={"team": "risk", "gpu": "no"}))
    await registry.update_version(tenant, "fraud", 1, Edit(status="archived"))

    async def found(**query: object) -> list[tuple[str, int]]:
        page, _ = await registry.search(tenant, SearchQuery(**query))  # type: ignore[arg-type]
        return [(v.model_name, v.version) for v in page]

    # A tag matches on the version or on its model.
    assert await found(tags=(("team", "risk"),)) == [("churn", 1), ("fraud", 1), ("fraud", 2)]
    assert await found(tags=(("team", "risk"), ("gpu", "no"))) == [("churn", 1)]
    assert await found(task="classification") == [("fraud", 1), ("fraud", 2)]
    assert await found(status="ready") == [("churn", 1), ("fraud", 2)]
    assert await found(status="archived", tags=(("team", "risk"),)) == [("fraud", 1)]
    with pytest.raises(InvalidArgument) as err:
        await found(status="gone")
    assert err.value.field == "status"


@BACKENDS
async def test_deleting_a_version_refuses_an_aliased_one_and_keeps_the_numbering(nc: NATS, backend: str) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    registry = await _registry(nc, backend)
    for job in ("job_a", "job_b", "job_c"):
        await registry.register(_draft(tenant, job))  # all three share artifact "a"
    await registry.set_alias(tenant, "m", "champion", 1, expected=0)
    await registry.set_alias(tenant, "m", "canary", 1, expected=0)
    with pytest.raises(FailedPrecondition, match="aliased as canary, champion") as err:
        await registry.deletable(tenant, "m", 1)
    assert err.value.field == "version"
    with pytest.raises(InvalidArgument):
        await registry.deletable(tenant, "m", 0)  # never "the latest" here
    record, alone = await registry.deletable(tenant, "m", 2)
    assert (record.version, alone) == (2, False)  # versions 1 and 3 have the same artifact
    await registry.erase_version(record)
    with pytest.raises(NotFound):
        await registry.get_version(tenant, "m", 2)
    assert [v.version for v in await registry.list_versions(tenant, "m")] == [1, 3]
    # The job's index entry stays: a redelivered evaluation of job_b registers nothing again.
    with pytest.raises(NotFound):
        await registry.register(_draft(tenant, "job_b"))
    own = _draft(tenant, "job_d")
    own.artifact = own.artifact.model_copy(update={"name": "d"})
    assert (await registry.register(own))[0].version == 4  # 2 is never reused
    record, alone = await registry.deletable(tenant, "m", 4)
    assert alone is True  # no other version has its artifact: the registry erases it
