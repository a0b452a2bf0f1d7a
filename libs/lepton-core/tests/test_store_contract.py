"""One contract for every :class:`lepton_core.store.Store` backend: JetStream KV and memory.

A backend added later joins the ``store`` fixture's parameters and must pass the same tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from lepton_core.bus import RecordStore, kv_stream_config
from lepton_core.errors import Conflict, NotFound
from lepton_core.store import MemoryStore, Store, key_matches


class Item(BaseModel):
    name: str
    count: int = 0


@pytest_asyncio.fixture(params=["jetstream-kv", "memory"])
async def store(request: pytest.FixtureRequest, nc: NATS) -> AsyncIterator[Store[Item]]:
    if request.param == "memory":
        yield MemoryStore(Item)
        return
    js = nc.jetstream()
    bucket = f"contract_{uuid.uuid4().hex[:8]}"
    await js.add_stream(config=kv_stream_config(bucket))  # as declare_topology makes every bucket
    try:
        yield await RecordStore.open(js, bucket, Item)
    finally:
        await js.delete_key_value(bucket)


async def test_create_refuses_an_existing_key(store: Store[Item]) -> None:
    await store.create("t.a", Item(name="a"))
    with pytest.raises(Conflict):
        await store.create("t.a", Item(name="again"))
    found = await store.get("t.a")
    assert found is not None and found.value.name == "a"


async def test_update_is_compare_and_set(store: Store[Item]) -> None:
    first = await store.create("t.a", Item(name="a"))
    second = await store.update("t.a", Item(name="a", count=1), first)
    assert second > first
    with pytest.raises(Conflict):
        await store.update("t.a", Item(name="a", count=2), first)  # stale revision
    found = await store.get("t.a")
    assert found is not None and (found.value.count, found.revision) == (1, second)


async def test_update_of_a_missing_key_conflicts(store: Store[Item]) -> None:
    with pytest.raises(Conflict):
        await store.update("t.none", Item(name="x"), 1)


async def test_of_racing_updates_from_one_revision_exactly_one_wins(store: Store[Item]) -> None:
    revision = await store.create("t.race", Item(name="r"))
    results = await asyncio.gather(
        *(store.update("t.race", Item(name="r", count=i), revision) for i in range(1, 9)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, int))
    found = await store.get("t.race")
    assert found is not None and found.value.count == 1 + results.index(winners[0])


async def test_put_overwrites_and_delete_removes(store: Store[Item]) -> None:
    await store.put("t.p", Item(name="p"))
    await store.put("t.p", Item(name="p", count=5))
    found = await store.require("t.p", "item p")
    assert found.value.count == 5
    await store.delete("t.p")
    assert await store.get("t.p") is None
    with pytest.raises(NotFound, match="item p does not exist"):
        await store.require("t.p", "item p")
    await store.create("t.p", Item(name="reborn"))  # a deleted key can be created again


async def test_erase_leaves_nothing_of_a_key_and_touches_no_other(store: Store[Item]) -> None:
    for count in range(3):
        await store.put("t.e", Item(name="e", count=count))
    await store.put("t.kept", Item(name="kept"))
    await store.erase("t.e")
    await store.erase("t.absent")
    assert await store.get("t.e") is None
    assert await store.keys("t.*") == ["t.kept"]  # no tombstone listed, unlike delete
    await store.create("t.e", Item(name="reborn"))


async def test_patterns_select_keys_token_by_token(store: Store[Item]) -> None:
    for key in ("t1.m.a", "t1.m.b", "t1.m.a.v.1", "t2.m.a"):
        await store.put(key, Item(name=key))
    assert [i.name for i in await store.values("t1.m.*")] == ["t1.m.a", "t1.m.b"]
    assert [i.name for i in await store.values("t1.m.*.v.*")] == ["t1.m.a.v.1"]
    assert [i.name for i in await store.values("*.m.a")] == ["t1.m.a", "t2.m.a"]
    assert [i.name for i in await store.values("t1.>")] == ["t1.m.a", "t1.m.a.v.1", "t1.m.b"]
    await store.delete("t1.m.b")
    assert [i.name for i in await store.values("t1.m.*")] == ["t1.m.a"]


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b", "a.b", True),
        ("*.b", "a.c", False),
    ],
)
def test_key_matching_follows_nats_subjects(pattern: str, key: str, matches: bool) -> None:
    assert key_matches(pattern, key) is matches
