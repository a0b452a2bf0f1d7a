"""``client.events.subscribe`` against the in-process fake's EventService."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import any_pb2
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2

import lepton_ai as la

from .fakes import API_KEY, TENANT, FakePlatform, sales_frame

pytestmark = pytest.mark.timeout(30)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"  # the fake's events carry this trace


def _publish_mixed(fake: FakePlatform) -> None:
    """Events of three areas, in this order."""
    lineage = common_pb2.Lineage(training_job_id="job_1", model_name="churn", model_version=1)
    fake.events.publish("training.completed", "job_1", events_pb2.TrainingCompleted(tenant=TENANT, lineage=lineage))
    fake.events.publish("registry.version.created", "churn/1", events_pb2.ModelVersionCreated(lineage=lineage))
    fake.events.publish("deployment.ready", "churn-prod", events_pb2.DeploymentReady(tenant=TENANT))
    fake.events.publish("registry.alias.moved", "churn", events_pb2.ModelAliasMoved(tenant=TENANT))


def test_the_documented_example_receives_the_uploads_event(client: la.Client, fake: FakePlatform) -> None:
    # Events.subscribe's docstring: subscribe, upload, unpack the one event.
    with client.events.subscribe("dataset.version.created", limit=1) as events:
        dataset = client.datasets.upload(sales_frame(), "sales", progress=False)
        (event,) = events
    assert isinstance(event, la.PlatformEvent)
    assert isinstance(event.data, events_pb2.DatasetVersionCreated)
    assert (event.data.row_count, event.data.dataset_name) == (5, "sales")
    assert (event.name, event.type, event.subject) == (
        "dataset.version.created",
        "ai.lepton.dataset.version.created.v1",
        dataset.version_id,
    )
    assert (event.trace_id, event.tenant, event.source) == (TRACE_ID, TENANT, "/lepton/dataset")
    assert event.time.tzinfo is UTC and abs(datetime.now(UTC) - event.time) < timedelta(seconds=30)
    (subscribe,) = fake.calls_to("Subscribe")
    assert subscribe.service == "data"
    assert (subscribe.request.pattern, subscribe.request.limit, subscribe.request.HasField("since")) == (
        "dataset.version.created",
        1,
        False,
    )
    assert subscribe.header("authorization") == f"Bearer {API_KEY}"
    assert subscribe.timeout is None  # a live stream has no deadline


def test_the_pattern_selects_events_and_the_stream_ends_after_the_limit(client: la.Client, fake: FakePlatform) -> None:
    with client.events.subscribe("registry.>", limit=2) as events:
        _publish_mixed(fake)
        received = [(e.name, e.subject) for e in events]
    assert received == [("registry.version.created", "churn/1"), ("registry.alias.moved", "churn")]
    assert events.closed


def test_since_replays_earlier_events_and_is_sent_as_a_time(client: la.Client, fake: FakePlatform) -> None:
    _publish_mixed(fake)
    asked = datetime.now(UTC)
    with client.events.subscribe("training.*", since=timedelta(minutes=5), limit=1) as events:
        (event,) = events
    assert event.name == "training.completed"
    assert isinstance(event.data, events_pb2.TrainingCompleted) and event.data.lineage.training_job_id == "job_1"
    since = fake.calls_to("Subscribe")[0].request.since.ToDatetime(tzinfo=UTC)
    assert abs(since - (asked - timedelta(minutes=5))) < timedelta(seconds=5)
    # An aware datetime goes as that instant, whatever its zone.
    at = datetime.now(timezone(timedelta(hours=2))) - timedelta(hours=1)
    with client.events.subscribe("training.completed", since=at, limit=1) as events:
        assert next(events).subject == "job_1"
    assert fake.calls_to("Subscribe")[1].request.since.ToDatetime(tzinfo=UTC) == at


def test_an_event_type_this_sdk_does_not_know_keeps_its_bytes(client: la.Client, fake: FakePlatform) -> None:
    payload = events_pb2.DeploymentReady(tenant=TENANT)
    with client.events.subscribe("deployment.ready", limit=1) as events:
        fake.events.publish("deployment.ready", "d", payload, type_="ai.lepton.deployment.ready.v9")
        (event,) = events
    assert isinstance(event.data, any_pb2.Any)
    assert event.data.type_url == "type.googleapis.com/lepton.events.v1.DeploymentReady"
    assert event.data.value == payload.SerializeToString()
    as_dict = event.to_dict()
    assert as_dict["data"]["@type"] == event.data.type_url and as_dict["time"].endswith("Z")


def test_a_pattern_that_matches_no_event_fails_when_the_stream_starts(client: la.Client, fake: FakePlatform) -> None:
    events = client.events.subscribe("datasets.>")  # no I/O yet
    assert fake.calls == []
    with pytest.raises(la.InvalidArgument) as caught:
        events.__enter__()
    assert caught.value.field == "pattern" and events.closed


@pytest.mark.parametrize("limit", [0, -1, 2**32])
def test_a_limit_out_of_range_is_refused_without_a_call(client: la.Client, fake: FakePlatform, limit: int) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        client.events.subscribe("training.*", limit=limit)
    assert caught.value.field == "limit"
    assert fake.calls == []


def test_a_wrong_key_fails_when_the_stream_starts(fake: FakePlatform) -> None:
    with (
        la.Client("sk-wrong", fake.url) as client,
        pytest.raises(la.Unauthenticated),
        client.events.subscribe("training.*"),
    ):
        pass


def test_close_from_another_thread_ends_the_for_loop_quietly(client: la.Client, fake: FakePlatform) -> None:
    received: list[str] = []
    with client.events.subscribe() as events:
        fake.events.publish("deployment.ready", "d1", events_pb2.DeploymentReady(tenant=TENANT))
        closer = threading.Timer(0.2, events.close)
        closer.start()
        started = time.monotonic()
        received.extend(e.subject for e in events)  # blocks until close()
    closer.join()
    assert received == ["d1"]
    assert time.monotonic() - started < 5
    assert events.closed


def test_an_error_in_the_middle_of_the_stream_is_mapped(client: la.Client, fake: FakePlatform) -> None:
    fake.fail("Subscribe", grpc.StatusCode.UNAVAILABLE, "event stream: try again", after=1)
    with client.events.subscribe() as events:
        _publish_mixed(fake)
        assert next(events).name == "training.completed"
        with pytest.raises(la.Unavailable, match="event stream: try again"):
            next(events)
    assert events.closed


async def test_async_for_receives_events_over_grpc_aio(fake: FakePlatform) -> None:
    async with la.AsyncClient(API_KEY, fake.url) as client, client.events.subscribe("registry.*.*", limit=2) as events:
        _publish_mixed(fake)
        received = [e.name async for e in events]
    assert received == ["registry.version.created", "registry.alias.moved"]
    assert fake.calls_to("Subscribe")[0].header("authorization") == f"Bearer {API_KEY}"


async def test_an_async_subscription_with_a_bad_pattern_raises_on_entry(fake: FakePlatform) -> None:
    async with la.AsyncClient(API_KEY, fake.url) as client:
        with pytest.raises(la.InvalidArgument) as caught:
            async with client.events.subscribe("nothing.like.this"):
                pass
    assert caught.value.field == "pattern"


def test_one_stream_is_iterated_one_way(client: la.Client, fake: FakePlatform) -> None:
    with client.events.subscribe("training.*", limit=1) as events, pytest.raises(RuntimeError, match="async for"):
        events.__aiter__().__anext__().send(None)
