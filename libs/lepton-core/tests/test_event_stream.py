"""EventService: pattern and time validation, and Subscribe over real gRPC and a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.events.v1 import events_pb2, stream_pb2, stream_pb2_grpc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lepton_core import event_stream, events
from lepton_core.access import Access, KeyBook, KeyRecord, digest, new_key_id
from lepton_core.bus import EVENTS_STREAM
from lepton_core.errors import InvalidArgument, PermissionDenied
from lepton_core.rpc import Server, call_metadata, create_server
from lepton_core.wire import lineage

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "some", "none"),
    [
        ("", "monitor.alert.fired", "training.requested"),
        (">", "dataset.created", "prediction.logged"),
        ("dataset.version.created", "dataset.version.created", "dataset.created"),
        ("training.*", "training.completed", "training.requested"),
        ("registry.>", "registry.version.created", "dataset.version.created"),
        ("*.version.created", "registry.version.created", "registry.version.updated"),
        ("deployment.rolled_back", "deployment.rolled_back", "deployment.ready"),
    ],
)
def test_patterns_match_subscribable_catalogue_names(pattern: str, some: str, none: str) -> None:
    matched = event_stream.parse_pattern(pattern)
    assert some in matched and none not in matched


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("nosuch.*", "matches no event; event names start with dataset, deployment, evaluation, monitor, registry"),
        ("model.*", "matches no event (did you mean 'registry.model.*'?); event names start with"),
        ("version.>", "(did you mean 'dataset.version.>' or 'registry.version.>'?)"),
        ("*", "matches no event"),  # every name has at least two parts
        ("training.requested", "matches no event"),  # the job queue, not an event to follow
        ("prediction.>", "matches no event"),  # prediction logs: client.monitor.logs
        ("registry.>.created", "'>' must be the last token"),
        ("registry..created", "has an empty token"),
        ("registry.version*", "has the token 'version*'"),
        ("dataset version", "has the token 'dataset version'"),
    ],
)
def test_bad_patterns_name_the_field_and_the_known_names(pattern: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        event_stream.parse_pattern(pattern)
    assert bad.value.field == "pattern" and says in bad.value.message


def test_the_filter_stays_inside_the_callers_tenant() -> None:
    assert event_stream.subject_filter("acme", "") == "lepton.evt.acme.>"
    assert event_stream.subject_filter("acme", "training.*") == "lepton.evt.acme.training.*"
    for tenant in ("*", ">", "a.b", "a b", ""):
        with pytest.raises(PermissionDenied):
            event_stream.subject_filter(tenant, "training.*")
    with pytest.raises(InvalidArgument):
        event_stream.subject_filter("acme", "nosuch")


def test_since_is_checked() -> None:
    assert event_stream.start_time(None, NOW) is None
    past = Timestamp()
    past.FromDatetime(NOW - timedelta(hours=1))
    assert event_stream.start_time(past, NOW) == NOW - timedelta(hours=1)
    skewed = Timestamp()
    skewed.FromDatetime(NOW + timedelta(seconds=30))  # another host's clock a little ahead
    assert event_stream.start_time(skewed, NOW) is not None
    future = Timestamp()
    future.FromDatetime(NOW + timedelta(hours=1))
    with pytest.raises(InvalidArgument, match=r"since: 2025-06-01T13:00:00\+00:00 is in the future"):
        event_stream.start_time(future, NOW)
    for bad in (Timestamp(seconds=2**62), Timestamp(seconds=0, nanos=-1), Timestamp(nanos=10**9)):
        with pytest.raises(InvalidArgument, match="since: not a valid timestamp"):
            event_stream.start_time(bad, NOW)


def _msg(subject: str, headers: dict[str, str], data: bytes = b"") -> Msg:
    return Msg(_client=None, subject=subject, data=data, headers=headers)  # type: ignore[arg-type]


def test_messages_become_wire_events_only_for_the_tenant() -> None:
    payload = events_pb2.DatasetCreated(tenant="acme", dataset_name="wine")
    headers = events.headers_for(payload, event_id="dataset.created:d1", source="/lepton/data", ce_subject="d1")
    headers["traceparent"] = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    ev = event_stream.to_event(_msg("lepton.evt.acme.dataset.created", headers, payload.SerializeToString()), "acme")
    assert ev is not None
    assert (ev.id, ev.type, ev.name, ev.source, ev.subject, ev.tenant) == (
        "dataset.created:d1",
        "ai.lepton.dataset.created.v1",
        "dataset.created",
        "/lepton/data",
        "d1",
        "acme",
    )
    assert ev.payload_type == "lepton.events.v1.DatasetCreated" and ev.traceparent.startswith("00-aaaa")
    assert events_pb2.DatasetCreated.FromString(ev.payload) == payload
    assert abs(ev.time.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    # Defence in depth: a message of another tenant, or not a CloudEvent, is never passed on.
    assert event_stream.to_event(_msg("lepton.evt.other.dataset.created", headers), "acme") is None
    assert event_stream.to_event(_msg("lepton.evt.acme.dataset.created", {"x": "y"}), "acme") is None
    # Nor one whose body names another tenant (lepton_core.trust): acme's subscribers never see it.
    forged = events_pb2.DatasetCreated(tenant="other", dataset_name="wine")
    on_acme = _msg("lepton.evt.acme.dataset.created", headers, forged.SerializeToString())
    assert event_stream.to_event(on_acme, "acme") is None


# -- Subscribe over gRPC, against the session's nats-server ---------------------------------------------


@pytest_asyncio.fixture
async def served(nc: NATS) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A gRPC server with only EventService, two keys of two fresh tenants; yields (address, key->tenant)."""
    keys = {uuid.uuid4().hex: "t" + uuid.uuid4().hex[:10] for _ in range(2)}
    server: Server = await create_server(
        service="events-test",
        host="127.0.0.1",
        port=0,
        access=Access(KeyBook.of(keys, role="viewer"), event_stream.RULES),
        register=lambda s: [event_stream.register(s, nc.jetstream())],
    )
    try:
        yield f"127.0.0.1:{server.port}", keys
    finally:
        await server.stop(0)


async def _publish(nc: NATS, tenant: str, name: str) -> None:
    await events.publish(
        nc.jetstream(),
        events_pb2.DatasetCreated(tenant=tenant, lineage=lineage(dataset_id=name), dataset_name=name),
        tenant=tenant,
        event_id=f"dataset.created:{tenant}:{name}",
        source="/lepton/test",
        ce_subject=name,
    )


async def _consumers(nc: NATS, subject: str) -> list[str]:
    infos = await nc.jetstream().consumers_info(EVENTS_STREAM)
    return [i.name for i in infos if i.config.filter_subject == subject]


async def test_subscribe_is_per_tenant_replays_and_cleans_up(nc: NATS, served: tuple[str, dict[str, str]]) -> None:
    address, keys = served
    (key_a, tenant_a), (key_b, tenant_b) = keys.items()
    start = datetime.now(UTC) - timedelta(seconds=1)
    await _publish(nc, tenant_a, "a-before")
    await _publish(nc, tenant_b, "b-before")
    since = Timestamp()
    since.FromDatetime(start)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = stream_pb2_grpc.EventServiceStub(channel)
        # Replay, then live, for tenant A: B's events never show.
        call = stub.Subscribe(
            stream_pb2.SubscribeRequest(pattern="dataset.*", since=since, limit=2), metadata=call_metadata(key_a)
        )
        await call.initial_metadata()
        await _publish(nc, tenant_b, "b-live")
        await _publish(nc, tenant_a, "a-live")
        got = [ev async for ev in call]
        assert [(ev.name, ev.subject, ev.tenant) for ev in got] == [
            ("dataset.created", "a-before", tenant_a),
            ("dataset.created", "a-live", tenant_a),
        ]
        # Without since: only what is published after the call starts.
        call = stub.Subscribe(stream_pb2.SubscribeRequest(limit=1), metadata=call_metadata(key_b))
        await call.initial_metadata()
        await _publish(nc, tenant_b, "b-new")
        assert [ev.subject async for ev in call] == ["b-new"]
        # A cancelled call leaves no consumer behind.
        subject = f"lepton.evt.{tenant_a}.dataset.>"
        call = stub.Subscribe(stream_pb2.SubscribeRequest(pattern="dataset.>"), metadata=call_metadata(key_a))
        await call.initial_metadata()
        assert len(await _consumers(nc, subject)) == 1
        call.cancel()
        async with asyncio.timeout(10):
            while await _consumers(nc, subject):
                await asyncio.sleep(0.1)
        # Errors are statuses that name the field.
        bad = stub.Subscribe(stream_pb2.SubscribeRequest(pattern="nosuch.>"), metadata=call_metadata(key_a))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await bad.read()
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (failed.value.details() or "").startswith("pattern: 'nosuch.>' matches no event")
        denied = stub.Subscribe(stream_pb2.SubscribeRequest(), metadata=call_metadata("not-a-key"))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await denied.read()
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- dead letters: listed per tenant, replayed by the consumer's own service --------------------------------


def _book(keys: dict[str, tuple[str, str]]) -> KeyBook:
    """``{secret: (tenant, role)}`` as a key book."""
    now = datetime.now(UTC)
    return KeyBook(
        KeyRecord(
            id=new_key_id(), name=f"key {i}", tenant=t, role=r, digest=digest(s), creator="bootstrap", created=now
        )
        for i, (s, (t, r)) in enumerate(keys.items(), start=1)
    )


async def test_dead_letters_are_listed_per_tenant_and_replayed_once_fixed(nc: NATS) -> None:
    """A handler that fails on every delivery dead-letters its event; the tenant's viewer lists it with the
    error and the decoded event, another tenant neither sees nor replays it, a viewer may not replay, a
    replay while still broken leaves it, and after the fix one replay hands it to the handler and removes it."""
    js = nc.jetstream()
    tenant_a, tenant_b = ("t" + uuid.uuid4().hex[:10] for _ in range(2))
    admin_a, viewer_a, admin_b = (uuid.uuid4().hex for _ in range(3))
    book = _book({admin_a: (tenant_a, "admin"), viewer_a: (tenant_a, "viewer"), admin_b: (tenant_b, "admin")})
    durable = f"replay-{tenant_a}"
    broken = True
    handled: list[events.Event[events_pb2.DatasetVersionCreated]] = []

    async def handler(event: events.Event[events_pb2.DatasetVersionCreated]) -> None:
        if broken:
            raise RuntimeError("the model store is unreachable")
        handled.append(event)

    consumer = events.Consumer(
        js=js,
        stream=EVENTS_STREAM,
        durable=durable,
        handlers={events_pb2.DatasetVersionCreated: handler},
        tenant_filter=tenant_a,
        max_deliver=2,
    )
    await consumer.start()
    server: Server = await create_server(
        service="events-test",
        host="127.0.0.1",
        port=0,
        access=Access(book, event_stream.RULES),
        register=lambda s: [event_stream.register(s, js, "events-test", [consumer])],
    )
    payload = events_pb2.DatasetVersionCreated(
        tenant=tenant_a, lineage=lineage(dataset_version_id="dv_1"), dataset_name="wine", row_count=3
    )
    await events.publish(js, payload, tenant=tenant_a, event_id=f"poison-{tenant_a}", source="/lepton/test")
    # Another tenant's dead letter, of a consumer this server does not run (the evaluator's).
    await js.publish(
        f"lepton.dlq.evaluator.{tenant_b}",
        b"",
        headers={"Lepton-Error": "RuntimeError: b's", "Lepton-Original-Subject": f"lepton.evt.{tenant_b}.x.y"},
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = stream_pb2_grpc.EventServiceStub(channel)
            listed = stream_pb2.ListDeadLettersResponse()
            async with asyncio.timeout(20):
                while not listed.dead_letters:
                    listed = await stub.ListDeadLetters(
                        stream_pb2.ListDeadLettersRequest(), metadata=call_metadata(viewer_a)
                    )
                    await asyncio.sleep(0.2)
            (letter,) = listed.dead_letters
            assert listed.total == 1
            assert letter.consumer == durable and letter.deliveries == 2
            assert letter.error == "RuntimeError: the model store is unreachable"
            assert letter.original_subject == f"lepton.evt.{tenant_a}.dataset.version.created"
            assert letter.event.name == "dataset.version.created" and letter.event.tenant == tenant_a
            assert letter.event.id == f"poison-{tenant_a}" and letter.event.payload == payload.SerializeToString()
            one = stream_pb2.ListDeadLettersRequest(id=letter.id)
            assert list((await stub.ListDeadLetters(one, metadata=call_metadata(viewer_a))).dead_letters) == [letter]
            for key, request in (
                (admin_b, one),
                (viewer_a, stream_pb2.ListDeadLettersRequest(id=letter.id, consumer="evaluator")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await stub.ListDeadLetters(request, metadata=call_metadata(key))
                assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # another tenant's, another consumer's
            theirs = await stub.ListDeadLetters(stream_pb2.ListDeadLettersRequest(), metadata=call_metadata(admin_b))
            assert [(d.consumer, d.service, d.HasField("event")) for d in theirs.dead_letters] == [
                ("evaluator", "evaluator", False)
            ]

            async def refused(key: str, id: int) -> grpc.aio.AioRpcError:
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.ReplayDeadLetter(stream_pb2.ReplayDeadLetterRequest(id=id), metadata=call_metadata(key))
                return failed.value

            assert (await refused(viewer_a, letter.id)).code() == grpc.StatusCode.PERMISSION_DENIED
            # Another tenant's id is as unknown as one that never was.
            assert (await refused(admin_b, letter.id)).code() == grpc.StatusCode.NOT_FOUND
            assert (await refused(admin_a, 10**12)).code() == grpc.StatusCode.NOT_FOUND
            elsewhere = await refused(admin_b, theirs.dead_letters[0].id)
            assert elsewhere.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "the evaluator service" in (elsewhere.details() or "")
            again = await refused(admin_a, letter.id)
            assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "failed again" in (again.details() or "") and "unreachable" in (again.details() or "")
            assert not handled

            broken = False
            replayed = await stub.ReplayDeadLetter(
                stream_pb2.ReplayDeadLetterRequest(id=letter.id), metadata=call_metadata(admin_a)
            )
            assert replayed.id == letter.id
            assert [(e.id, e.tenant, e.data.row_count) for e in handled] == [(f"poison-{tenant_a}", tenant_a, 3)]
            after = await stub.ListDeadLetters(stream_pb2.ListDeadLettersRequest(), metadata=call_metadata(viewer_a))
            assert (after.total, list(after.dead_letters)) == (0, [])
            assert (await refused(admin_a, letter.id)).code() == grpc.StatusCode.NOT_FOUND

            bad = stream_pb2.ListDeadLettersRequest(consumer="nosuch")
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.ListDeadLetters(bad, metadata=call_metadata(viewer_a))
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "consumer" in (
                failed.value.details() or ""
            )
    finally:
        await server.stop(0)
        await consumer.stop()
