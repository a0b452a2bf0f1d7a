"""The NATS layer against a real nats-server: topology, KV records, objects, events."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js import errors as js_errors
from pydantic import BaseModel

from lepton_core import bus, events, failover
from lepton_core.bus import (
    CHUNK_SIZE,
    DEADLETTER_STREAM,
    EVENTS_STREAM,
    EraseRefused,
    ObjectRefRecord,
    ObjectStore,
    RecordStore,
    declare_topology,
    erase_messages,
    migrate_bucket,
    sha256_digest,
    store_full,
)
from lepton_core.errors import Conflict, DataIntegrityError, InvalidArgument, NotFound
from lepton_core.wire import lineage

pytestmark = pytest.mark.timeout(60)


class Thing(BaseModel):
    name: str
    count: int = 0


def tenant() -> str:
    """A fresh tenant per test keeps subjects and keys apart on the shared server."""
    return "t" + uuid.uuid4().hex[:10]


async def test_topology_declaration_is_idempotent(nc: NATS) -> None:
    js = nc.jetstream()
    await declare_topology(js)
    await declare_topology(js)
    names = {s.config.name for s in await js.streams_info()}
    assert {"EVENTS", "JOBS", "PREDICTIONS", "DEADLETTER"} <= names
    assert str((await js.stream_info("JOBS")).config.retention) in ("workqueue", "RetentionPolicy.WORK_QUEUE")
    # KV buckets are erasable (nats-py's create_key_value would deny message deletes), with history.
    kv = (await js.stream_info("KV_datasets")).config
    assert (kv.deny_delete, kv.max_msgs_per_subject, kv.allow_rollup_hdrs) == (False, 5, True)


async def test_record_store_compare_and_set_and_patterns(nc: NATS) -> None:
    t = tenant()
    store = await RecordStore.open(nc.jetstream(), "models", Thing)
    rev = await store.create(f"{t}.m.a", Thing(name="a"))
    with pytest.raises(Conflict):
        await store.create(f"{t}.m.a", Thing(name="a"))
    await store.update(f"{t}.m.a", Thing(name="a", count=1), rev)
    with pytest.raises(Conflict):
        await store.update(f"{t}.m.a", Thing(name="a", count=2), rev)
    await store.put(f"{t}.m.b", Thing(name="b"))
    await store.put(f"{t}.m.b.v.1", Thing(name="b1"))
    assert await store.keys(f"{t}.m.*") == [f"{t}.m.a", f"{t}.m.b"]
    assert [x.name for x in await store.values(f"{t}.m.b.v.*")] == ["b1"]
    assert await store.keys(f"{tenant()}.m.*") == []
    with pytest.raises(NotFound):
        await store.require(f"{t}.m.zzz", "thing zzz")


async def test_concurrent_updates_have_exactly_one_winner(nc: NATS) -> None:
    t = tenant()
    store = await RecordStore.open(nc.jetstream(), "models", Thing)
    rev = await store.create(f"{t}.race", Thing(name="r"))
    results = await asyncio.gather(
        *(store.update(f"{t}.race", Thing(name="r", count=i), rev) for i in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))


async def test_object_store_round_trip_dedupe_and_tamper_detection(nc: NATS) -> None:
    js = nc.jetstream()
    objects = ObjectStore(js)
    data = bytes(range(256)) * 20_000  # 5 MB: several 1 MB chunks
    name = f"{tenant()}/blob"
    ref = await objects.put("artifacts", name, data)
    assert ref.digest == sha256_digest(data) and ref.size == len(data)
    assert await objects.get(ref) == data
    assert (await objects.put("artifacts", name, data)).digest == ref.digest
    # Someone rewrites the object behind our back: the read must refuse it.
    await (await js.object_store("artifacts")).put(name, b"tampered")
    with pytest.raises(DataIntegrityError, match="modified or corrupted"):
        await objects.get(ref)
    with pytest.raises(NotFound):
        await objects.get(ObjectRefRecord(bucket="artifacts", name="nope", digest="sha256:0", size=0))


async def test_a_put_is_nats_object_store_layout_replaces_the_one_before_and_leaves_no_chunk_when_refused(
    nc: NATS,
) -> None:
    """ObjectStore.put writes its chunks several at a time, not through nats-py's put: nats-py still reads
    the object whole (chunks in order, its SHA-256), a second put under the name purges the first's
    chunks, and a put a capped bucket refuses part-way leaves no chunk of it behind."""
    js = nc.jetstream()
    objects = ObjectStore(js)
    name = f"{tenant()}/layout"
    first = bytes(range(256)) * 40_000  # 10 MB: more chunks than the window of acks awaited
    await objects.put("artifacts", name, first)
    store = await js.object_store("artifacts")
    read = await store.get(name)
    assert read.data == first and read.info.chunks == 10 and read.info.size == len(first)
    before = (await js.stream_info("OBJ_artifacts")).state.bytes
    second = first[::-1]
    ref = await objects.put("artifacts", name, second)
    assert await objects.get(ref) == second and (await store.get(name)).data == second
    assert abs((await js.stream_info("OBJ_artifacts")).state.bytes - before) < CHUNK_SIZE  # the first's chunks went
    await objects.erase(ref)

    capped = "CAP" + uuid.uuid4().hex[:6]
    await js.create_object_store(capped, config=js_api.ObjectStoreConfig(bucket=capped, max_bytes=3 * CHUNK_SIZE))
    try:
        with pytest.raises(js_errors.APIError) as refused:
            await objects.put(capped, "big", first)
        assert store_full(refused.value)
        assert (await js.stream_info(f"OBJ_{capped}")).state.messages == 0
    finally:
        await js.delete_object_store(capped)


async def test_erase_removes_every_revision_of_a_key_and_leaves_no_tombstone(nc: NATS) -> None:
    t = tenant()
    store = await RecordStore.open(nc.jetstream(), "models", Thing)
    for count in range(3):
        await store.put(f"{t}.m.a", Thing(name="a", count=count))
    await store.put(f"{t}.m.b", Thing(name="b"))
    await store.delete(f"{t}.m.c")
    assert await store.keys(f"{t}.m.*") == [f"{t}.m.a", f"{t}.m.b", f"{t}.m.c"]  # a delete leaves a tombstone
    await store.erase(f"{t}.m.a")
    await store.erase(f"{t}.m.c")
    await store.erase(f"{t}.m.never")  # nothing to erase: fine
    assert await store.get(f"{t}.m.a") is None
    assert await store.keys(f"{t}.m.*") == [f"{t}.m.b"]  # no message of a or c is left in the stream
    assert await store.create(f"{t}.m.a", Thing(name="again")) > 0  # and the key is free again


async def test_erase_removes_an_object_s_chunks_and_metadata_and_no_other_object(nc: NATS) -> None:
    js = nc.jetstream()
    objects = ObjectStore(js)
    t = tenant()
    ref = await objects.put("artifacts", f"{t}/gone.zip", bytes(range(256)) * 12_000)  # 3 MB: three chunks
    kept = await objects.put("artifacts", f"{t}/kept.zip", b"kept")
    nuid = (await (await js.object_store("artifacts")).get_info(ref.name)).nuid
    assert await objects.names("artifacts", f"{t}/") == [ref.name, kept.name]
    assert await objects.erase(ref)
    chunks = await js.stream_info("OBJ_artifacts", subjects_filter=f"$O.artifacts.C.{nuid}")
    assert not chunks.state.subjects
    assert await objects.names("artifacts", f"{t}/") == [kept.name]  # not even a deleted-object record
    with pytest.raises(NotFound):
        await objects.get(ref)
    assert await objects.get(kept) == b"kept"
    assert not await objects.erase(ref)


async def test_two_erasers_of_the_same_objects_at_once_both_end_without_error(nc: NATS) -> None:
    """A deleted tenant's artifacts: the trainer and the evaluator both erase them, at the same time."""
    js = nc.jetstream()
    objects = ObjectStore(js)
    t = tenant()
    for i in range(20):
        await objects.put("artifacts", f"{t}/a{i}.zip", bytes(range(256)) * (i + 1))

    async def erase_all() -> int:
        return sum([await objects.erase_name("artifacts", name) for name in await objects.names("artifacts", f"{t}/")])

    first, second = await asyncio.gather(erase_all(), erase_all())
    assert first + second >= 20 and await objects.names("artifacts", f"{t}/") == []


async def test_a_bucket_that_denies_deletes_purges_instead_of_erasing(nc: NATS) -> None:
    """A bucket nats-py made (``deny_delete``, as every bucket was before): the record still goes."""
    js = nc.jetstream()
    bucket = f"legacy_{uuid.uuid4().hex[:8]}"
    await js.create_key_value(config=js_api.KeyValueConfig(bucket=bucket, history=5))
    try:
        store = await RecordStore.open(js, bucket, Thing)
        await store.put("t.a", Thing(name="a"))
        await store.put("t.a", Thing(name="a", count=1))
        with pytest.raises(EraseRefused):
            await erase_messages(js, f"KV_{bucket}", f"$KV.{bucket}.t.a")
        await store.erase("t.a")
        assert await store.get("t.a") is None
    finally:
        await js.delete_key_value(bucket)


def _event(t: str, n: int = 0) -> events_pb2.DatasetVersionCreated:
    return events_pb2.DatasetVersionCreated(
        tenant=t, lineage=lineage(dataset_version_id=f"dv_{n}"), dataset_name="d", row_count=n
    )


async def _consume(nc: NATS, t: str, durable: str, handler: events.Handler, max_deliver: int = 3) -> events.Consumer:
    consumer = events.Consumer(
        js=nc.jetstream(),
        stream=EVENTS_STREAM,
        durable=durable,
        handlers={events_pb2.DatasetVersionCreated: handler},
        tenant_filter=t,
        max_deliver=max_deliver,
    )
    await consumer.start()
    return consumer


async def test_publish_and_consume_a_typed_cloudevent(nc: NATS) -> None:
    t = tenant()
    js = nc.jetstream()
    got: list[events.Event[events_pb2.DatasetVersionCreated]] = []
    done = asyncio.Event()

    async def handler(event: events.Event[events_pb2.DatasetVersionCreated]) -> None:
        got.append(event)
        done.set()

    ack = await events.publish(js, _event(t, 7), tenant=t, event_id=f"e1-{t}", source="/test")
    dup = await events.publish(js, _event(t, 7), tenant=t, event_id=f"e1-{t}", source="/test")
    assert dup.duplicate and dup.seq == ack.seq
    consumer = await _consume(nc, t, f"ok-{t}", handler)
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await consumer.stop()
    (event,) = got
    assert event.type == "ai.lepton.dataset.version.created.v1"
    assert event.id == f"e1-{t}" and event.source == "/test"
    assert event.headers["ce-specversion"] == "1.0"
    assert event.data.row_count == 7 and event.data.tenant == t


async def _dead_letters(nc: NATS, durable: str, count: int) -> list[object]:
    sub = await nc.jetstream().subscribe(f"lepton.dlq.{durable}.*", stream=DEADLETTER_STREAM, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=10) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def test_a_failing_handler_is_retried_then_dead_lettered(nc: NATS) -> None:
    t = tenant()
    attempts: list[int] = []

    async def handler(event: events.Event[events_pb2.DatasetVersionCreated]) -> None:
        attempts.append(event.delivery)
        raise RuntimeError("boom")

    await events.publish(nc.jetstream(), _event(t), tenant=t, event_id=f"e2-{t}", source="/test")
    consumer = await _consume(nc, t, f"retry-{t}", handler, max_deliver=3)
    try:
        (dead,) = await _dead_letters(nc, f"retry-{t}", 1)
    finally:
        await consumer.stop()
    assert attempts == [1, 2, 3]
    assert "RuntimeError: boom" in dead.headers["Lepton-Error"]  # type: ignore[attr-defined]
    assert dead.headers["ce-id"] == f"e2-{t}"  # type: ignore[attr-defined]


async def test_a_permanent_error_is_dead_lettered_at_once(nc: NATS) -> None:
    t = tenant()
    attempts: list[int] = []

    async def handler(event: events.Event[events_pb2.DatasetVersionCreated]) -> None:
        attempts.append(event.delivery)
        raise InvalidArgument("bad dataset", field="x")

    await events.publish(nc.jetstream(), _event(t), tenant=t, event_id=f"e3-{t}", source="/test")
    consumer = await _consume(nc, t, f"perm-{t}", handler, max_deliver=5)
    try:
        (dead,) = await _dead_letters(nc, f"perm-{t}", 1)
    finally:
        await consumer.stop()
    assert attempts == [1]
    assert "InvalidArgument: x: bad dataset" in dead.headers["Lepton-Error"]  # type: ignore[attr-defined]


async def test_a_message_that_is_not_a_cloudevent_is_dead_lettered(nc: NATS) -> None:
    t = tenant()

    async def handler(event: events.Event[events_pb2.DatasetVersionCreated]) -> None:
        raise AssertionError("must not be called")

    await nc.jetstream().publish(f"lepton.evt.{t}.dataset.version.created", b"\xff\x00junk")
    consumer = await _consume(nc, t, f"junk-{t}", handler)
    try:
        (dead,) = await _dead_letters(nc, f"junk-{t}", 1)
    finally:
        await consumer.stop()
    assert "not a CloudEvent" in dead.headers["Lepton-Error"]  # type: ignore[attr-defined]


async def test_a_forged_event_is_dead_lettered_unhandled_and_the_true_one_after_it_is_handled(nc: NATS) -> None:
    """The consumer trusts a message only as far as its subject: tenant b's subject with a body of
    tenant a, or tenant a's object, never reaches the handler; the same consumer handles b's real event."""
    t = tenant()
    js = nc.jetstream()
    got: list[events.Event[events_pb2.DatasetVersionCreated]] = []
    done = asyncio.Event()

    async def handler(event: events.Event[events_pb2.DatasetVersionCreated]) -> None:
        got.append(event)
        done.set()

    other = _event("a" + t)  # another tenant's body
    theirs = _event(t)
    theirs.object.bucket, theirs.object.name = "datasets", f"a{t}/dv_1.parquet"  # another tenant's object
    subject = events.spec_of(other).subject(t)
    for event_id, message in ((f"forged-tenant-{t}", other), (f"forged-object-{t}", theirs)):
        headers = events.headers_for(message, event_id=event_id, source="/attacker", ce_subject="")
        await js.publish(subject, message.SerializeToString(), headers=headers)
    await events.publish(js, _event(t, 3), tenant=t, event_id=f"true-{t}", source="/test")
    consumer = await _consume(nc, t, f"forged-{t}", handler)
    try:
        dead = await _dead_letters(nc, f"forged-{t}", 2)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await consumer.stop()
    assert [e.id for e in got] == [f"true-{t}"] and got[0].tenant == t
    errors = {d.headers["ce-id"]: d.headers["Lepton-Error"] for d in dead}  # type: ignore[attr-defined]
    assert errors[f"forged-tenant-{t}"].startswith(f"InvalidArgument: tenant: the payload names tenant 'a{t}'")
    assert errors[f"forged-object-{t}"].startswith(
        f"InvalidArgument: object.name: object 'a{t}/dv_1.parquet' in datasets lies outside the prefix '{t}/'"
    )
    assert all(d.headers["Lepton-Original-Subject"] == subject for d in dead)  # type: ignore[attr-defined]


async def test_a_bucket_that_denies_deletes_is_moved_onto_an_erasable_stream_with_its_records(nc: NATS) -> None:
    js = nc.jetstream()
    bucket = f"legacy_{uuid.uuid4().hex[:8]}"
    await js.create_key_value(config=js_api.KeyValueConfig(bucket=bucket, history=5))
    try:
        store = await RecordStore.open(js, bucket, Thing)
        await store.put("t.a", Thing(name="a"))
        await store.put("t.a", Thing(name="a", count=2))
        await store.put("t.b", Thing(name="b"))
        await store.put("t.c", Thing(name="c"))
        await store.delete("t.c")
        assert await migrate_bucket(js, bucket) == 2
        info = await js.stream_info(f"KV_{bucket}")
        assert not info.config.deny_delete and info.config.max_msgs_per_subject == 5
        store = await RecordStore.open(js, bucket, Thing)
        assert (await store.get("t.a")) is not None and (await store.get("t.a")).value.count == 2  # type: ignore[union-attr]
        assert await store.keys("t.*") == ["t.a", "t.b"]  # the deleted key, and older revisions, are not carried
        assert await erase_messages(js, f"KV_{bucket}", f"$KV.{bucket}.t.b") == 1  # erasable now
        assert [s.config.name for s in await js.streams_info() if s.config.name == f"MIGRATE_{bucket}"] == []
    finally:
        await js.delete_key_value(bucket)


async def test_a_move_cut_short_is_finished_from_its_complete_copy_or_begun_again(nc: NATS) -> None:
    js = nc.jetstream()
    bucket = f"legacy_{uuid.uuid4().hex[:8]}"
    copy, root = f"MIGRATE_{bucket}", f"lepton.migrate.{bucket}"
    try:
        # Cut short after the copy was complete and the old stream deleted: the copy is all there is.
        await js.add_stream(name=copy, subjects=[f"{root}.>"])
        await js.publish(f"{root}.k.t.x", Thing(name="x").model_dump_json().encode(), stream=copy)
        await js.publish(f"{root}.done", b"", stream=copy)
        assert await migrate_bucket(js, bucket) == 1
        store = await RecordStore.open(js, bucket, Thing)
        assert await store.keys("t.*") == ["t.x"] and not (await js.stream_info(f"KV_{bucket}")).config.deny_delete
        await js.delete_key_value(bucket)

        # Cut short while copying: the copy is dropped, the bucket (still whole) is moved.
        await js.create_key_value(config=js_api.KeyValueConfig(bucket=bucket, history=5))
        await (await RecordStore.open(js, bucket, Thing)).put("t.y", Thing(name="y"))
        await js.add_stream(name=copy, subjects=[f"{root}.>"])
        await js.publish(f"{root}.k.t.partial", b"{}", stream=copy)
        assert await migrate_bucket(js, bucket) == 1
        assert await (await RecordStore.open(js, bucket, Thing)).keys("t.*") == ["t.y"]
    finally:
        for name in (f"KV_{bucket}", copy):
            try:
                await js.delete_stream(name)
            except Exception:
                pass


async def test_a_consumer_outlives_an_outcome_it_could_not_record(nc: NATS) -> None:
    """A dead letter the store refuses (NATS away, the store full) does not end the consumer: the next event
    is handled, and the unsettled one comes back after its ack wait and is dead-lettered then."""
    t = tenant()
    handled: list[int] = []

    async def handler(event: events.Event[events_pb2.DatasetVersionCreated]) -> None:
        if event.data.row_count == 1:
            raise InvalidArgument("bad dataset", field="x")
        handled.append(event.data.row_count)

    class StoreRefusesOnce(events.Consumer):
        refused = 0

        async def _dead_letter(self, msg: Msg, reason: str) -> None:
            if not self.refused:
                self.refused += 1
                raise js_errors.ServiceUnavailableError()  # what a full store answers
            await super()._dead_letter(msg, reason)

    js = nc.jetstream()
    consumer = StoreRefusesOnce(
        js=js,
        stream=EVENTS_STREAM,
        durable=f"unsettled-{t}",
        handlers={events_pb2.DatasetVersionCreated: handler},
        tenant_filter=t,
        ack_wait=2.0,
    )
    await consumer.start()
    try:
        await events.publish(js, _event(t, 1), tenant=t, event_id=f"e6-{t}", source="/test")
        await events.publish(js, _event(t, 2), tenant=t, event_id=f"e7-{t}", source="/test")
        (dead,) = await _dead_letters(nc, f"unsettled-{t}", 1)
    finally:
        await consumer.stop()
    assert consumer.refused == 1 and handled == [2]
    assert dead.headers["ce-id"] == f"e6-{t}"  # type: ignore[attr-defined]


async def test_a_write_no_stream_takes_yet_is_sent_again_until_one_does(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream without a leader (a cluster electing one) answers writes with no responders; the services'
    JetStream context sends the write again until a leader takes it: stored once, at sequence 1."""
    monkeypatch.setattr(failover, "FAILOVER_S", 10.0)
    js = nc.jetstream()
    assert isinstance(js, failover.FailoverJetStream)
    name = "FAILOVER" + uuid.uuid4().hex[:8].upper()
    config = js_api.StreamConfig(name=name, subjects=[f"{name.lower()}.>"], storage=js_api.StorageType.MEMORY)

    async def later() -> None:
        await asyncio.sleep(0.5)
        await js.add_stream(config=config)

    adding = asyncio.create_task(later())
    try:
        ack = await js.publish(f"{name.lower()}.x", b"once", headers={"Nats-Msg-Id": "w-1"})
        await adding
        assert ack.stream == name and ack.seq == 1
        assert (await js.stream_info(name)).state.messages == 1
    finally:
        await js.delete_stream(name)


async def test_a_write_no_stream_ever_takes_fails_once_the_failover_window_is_over(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failover, "FAILOVER_S", 0.5)
    with pytest.raises(js_errors.NoStreamResponseError):
        await nc.jetstream().publish(f"nostream{uuid.uuid4().hex[:8]}.x", b"lost", headers={"Nats-Msg-Id": "w-1"})


async def test_a_write_a_stream_at_its_limit_refuses_is_not_sent_again_and_reads_as_full(nc: NATS) -> None:
    """nats-server answers a write over a stream's ``max_bytes`` (discard new) with a 503, as it answers one
    no leader took; a resend cannot help, so the services' context raises it at once, and
    :func:`bus.store_full` reads it as the store being full (RESOURCE_EXHAUSTED for a caller)."""
    js = nc.jetstream()
    name = "CAPPED" + uuid.uuid4().hex[:8].upper()
    await js.add_stream(
        config=js_api.StreamConfig(
            name=name,
            subjects=[f"{name.lower()}.>"],
            storage=js_api.StorageType.MEMORY,
            max_bytes=4096,
            discard=js_api.DiscardPolicy.NEW,
        )
    )
    try:
        await js.publish(f"{name.lower()}.x", b"x" * 1000)
        started = asyncio.get_running_loop().time()
        with pytest.raises(js_errors.APIError) as refused:
            for _ in range(10):
                await js.publish(f"{name.lower()}.x", b"x" * 1000, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        assert asyncio.get_running_loop().time() - started < 1.0  # not resent for FAILOVER_S
        assert bus.store_full(refused.value), refused.value
        assert (await js.stream_info(name)).state.messages < 5
    finally:
        await js.delete_stream(name)
    assert not bus.store_full(js_errors.ServiceUnavailableError(code=503, err_code=10077, description="stream closed"))
    assert not bus.store_full(RuntimeError("maximum"))


async def test_a_timed_out_write_reads_as_stalled_only_when_its_stream_answers_and_stored_nothing_since(
    nc: NATS,
) -> None:
    """:func:`failover.stalled`, the probe after a write's timeout (the real full disk: tests/faults/test_disk_full.py):
    a stream that answers and stored nothing in the last half of the write's wait is stalled; one that stored
    something then is only slow; a stream that does not answer (or is not there) leaves the timeout;
    :func:`bus.stream_of` names the stream a subject goes to without asking JetStream (services may not
    list streams)."""
    js = nc.jetstream()
    name = "STALL" + uuid.uuid4().hex[:8].upper()
    subject = f"{name.lower()}.x"
    await js.add_stream(config=js_api.StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    try:
        await js.publish(subject, b"stored")
        await asyncio.sleep(0.6)
        stalled = await failover.stalled(js, name, subject, 1.0, failover.reconnects(js))
        assert isinstance(stalled, failover.StoreStalled) and isinstance(stalled, TimeoutError)
        assert (stalled.stream, stalled.subject) == (name, subject) and "stopped writing" in str(stalled)
        # A write sent on a connection made again since (nats-server restarted) was lost with it, not stalled.
        assert await failover.stalled(js, name, subject, 1.0, failover.reconnects(js) - 1) is None
        await js.publish(subject, b"stored again")
        assert (
            await failover.stalled(js, name, subject, 1.0, failover.reconnects(js)) is None
        )  # it stored something in the last 0.5 s
        assert (
            await failover.stalled(js, "NOSTREAM" + uuid.uuid4().hex[:8].upper(), subject, 1.0, failover.reconnects(js))
            is None
        )
    finally:
        await js.delete_stream(name)
    held = {
        "lepton.evt.t1.dataset.created": EVENTS_STREAM,
        "lepton.jobs.train.t1": bus.JOBS_STREAM,
        "$KV.jobs.t1.j-1": "KV_jobs",
        "$O.datasets.C.abc": "OBJ_datasets",
        "lepton.evtx.a": None,
        "other": None,
    }
    assert {subject: bus.stream_of(subject) for subject in held} == held
