"""``client.events``: the platform's events, as typed Python objects, live or replayed.

The platform publishes an event for everything that happens (docs/events.md lists
them): a dataset version created, a job finished, a model registered, a deployment
ready. ``client.events.subscribe(pattern)`` streams your tenant's events over gRPC,
with your API key; no NATS access is needed or given.

>>> with client.events.subscribe("registry.>") as events:
...     for event in events:
...         print(event.time, event.name, event.data.lineage.model_name)

``async for`` works the same in asyncio code.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError, Message
from lepton.events.v1 import stream_pb2, stream_pb2_grpc

from lepton_ai._transport import Transport
from lepton_ai.errors import InvalidArgument
from lepton_core.rpc import SUBSCRIBED_HEADER, call_metadata

#: Every service serves EventService; the data service's address is the platform's entry.
SERVICE = "data"
_MAX_LIMIT = 2**32 - 1


@dataclass(frozen=True)
class PlatformEvent:
    """One platform event: its CloudEvents attributes and its decoded payload.

    Attributes:
        id: ``ce-id``, derived from a natural key: a repeat is the same event.
        type: ``ce-type``, e.g. ``ai.lepton.registry.version.created.v1``.
        name: The catalogue name, e.g. ``registry.version.created``.
        source: ``ce-source``, the publishing service, e.g. ``/lepton/registry``.
        time: When it was published (UTC).
        subject: ``ce-subject``, the id the event is about (version, job, deployment).
        trace_id: The W3C trace id of the chain that published it (find it in your traces),
            or ``""``.
        tenant: The tenant that owns the event: your API key's.
        data: The payload, a message from ``lepton.events.v1`` (e.g.
            ``events_pb2.DatasetVersionCreated``); a ``google.protobuf.Any`` holding the
            bytes for an event type this SDK does not know yet.
    """

    id: str
    type: str
    name: str
    source: str
    time: datetime
    subject: str
    trace_id: str
    tenant: str
    data: Message

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-able values: attributes, and ``data`` in protobuf's JSON mapping
        (field names as in the .proto; 64-bit integers as strings)."""
        if isinstance(self.data, any_pb2.Any):
            data: dict[str, Any] = {
                "@type": self.data.type_url,
                "value": base64.b64encode(self.data.value).decode(),
            }
        else:
            data = json_format.MessageToDict(self.data, preserving_proto_field_name=True)
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "source": self.source,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "subject": self.subject,
            "trace_id": self.trace_id,
            "tenant": self.tenant,
            "data": data,
        }


def decode(pb: stream_pb2.Event) -> PlatformEvent:
    """A wire event as a :class:`PlatformEvent`, its payload decoded by ce-type."""
    # The catalogue lives in lepton_core.events; imported here so `import lepton_ai` stays fast.
    from lepton_core.events import spec_for_type

    data: Message
    try:
        data = spec_for_type(pb.type).message.FromString(pb.payload)
    except (ValueError, DecodeError):
        # Newer than this SDK (or not a valid payload): keep the bytes, typed by name.
        data = any_pb2.Any(type_url=f"type.googleapis.com/{pb.payload_type}", value=pb.payload)
    parts = pb.traceparent.split("-")
    return PlatformEvent(
        id=pb.id,
        type=pb.type,
        name=pb.name,
        source=pb.source,
        time=pb.time.ToDatetime(tzinfo=UTC),
        subject=pb.subject,
        trace_id=parts[1] if len(parts) == 4 and len(parts[1]) == 32 else "",
        tenant=pb.tenant,
        data=data,
    )


@dataclass(frozen=True)
class DeadLetter:
    """An event a platform consumer gave up on: after its deliveries ran out, or at once when the
    event was refused. Kept 30 days; :meth:`Events.replay_dead_letter` hands it back after a fix.

    Attributes:
        id: Its id: what :meth:`Events.replay_dead_letter` takes.
        consumer: The consumer that gave up on it, e.g. ``evaluator``.
        service: The service that runs that consumer, e.g. ``evaluator``.
        error: Why, e.g. ``NotFound: artifact ... not found``.
        dead_lettered_at: When (UTC).
        deliveries: How many times it was delivered before.
        original_subject: The NATS subject it was published on.
        event: The event, or None for a message that is not one (its ``error`` says why).
    """

    id: int
    consumer: str
    service: str
    error: str
    dead_lettered_at: datetime
    deliveries: int
    original_subject: str
    event: PlatformEvent | None


def _dead_letter(pb: stream_pb2.DeadLetter) -> DeadLetter:
    return DeadLetter(
        id=pb.id,
        consumer=pb.consumer,
        service=pb.service,
        error=pb.error,
        dead_lettered_at=pb.dead_lettered_at.ToDatetime(tzinfo=UTC),
        deliveries=pb.deliveries,
        original_subject=pb.original_subject,
        event=decode(pb.event) if pb.HasField("event") else None,
    )


class EventStream:
    """A live subscription: iterate it with ``for`` or ``async for`` (one or the other, once).

    The subscription starts when the ``with`` (or ``async with``) block is entered, or
    at the first event asked for; without ``since`` it receives only events published
    from then on. It ends after ``limit`` events, on :meth:`close` (from any thread for
    ``for``; the loop then simply ends), or when the platform fails (a
    :class:`~lepton_ai.errors.LeptonError`).
    """

    def __init__(self, transport: Transport, request: stream_pb2.SubscribeRequest) -> None:
        self._t = transport
        self._request = request
        self._lock = threading.Lock()
        self._closed = False
        self._mode = ""
        self._call: Any = None  # grpc's call object: sync or asyncio, untyped by grpc
        self._channel: grpc.aio.Channel | None = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called or the stream ended."""
        return self._closed

    def _claim(self, mode: str) -> None:
        if self._mode and self._mode != mode:
            raise RuntimeError(f"this EventStream is iterated with {self._mode} already; subscribe again for {mode}")
        self._mode = mode

    # -- sync -------------------------------------------------------------

    def _start(self) -> None:
        """Opens the call and waits until the platform confirms the subscription."""
        self._claim("for")
        with self._lock:
            if self._call is not None or self._closed:
                return
            stub = stream_pb2_grpc.EventServiceStub(self._t.channel(SERVICE))
            self._call = stub.Subscribe(self._request, metadata=call_metadata(self._t.api_key), timeout=None)
        # The platform sends its headers once its consumer exists: from here on nothing is missed.
        # Headers without its mark are a refusal's (trailers only): its status is there to read.
        headers = dict(self._call.initial_metadata() or ())
        if SUBSCRIBED_HEADER not in headers and not self._closed and self._call.code() != grpc.StatusCode.OK:
            self._closed = True
            raise self._t.error(self._call, SERVICE)

    def __enter__(self) -> EventStream:
        self._start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> PlatformEvent:
        self._start()
        if self._closed:
            raise StopIteration
        try:
            pb = next(self._call)
        except StopIteration:
            self._closed = True
            raise
        except grpc.RpcError as exc:
            was_closed, self._closed = self._closed, True
            if was_closed and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise self._t.error(exc, SERVICE) from None
        return decode(pb)

    def close(self) -> None:
        """Ends the subscription (cancels the call); safe to call twice or from another thread."""
        with self._lock:
            self._closed = True
            call = self._call
        if call is not None:
            call.cancel()

    # -- async ------------------------------------------------------------

    async def _astart(self) -> None:
        self._claim("async for")
        if self._call is not None or self._closed:
            return
        self._channel = self._t.aio_channel(SERVICE)
        stub = stream_pb2_grpc.EventServiceStub(self._channel)
        self._call = stub.Subscribe(self._request, metadata=call_metadata(self._t.api_key), timeout=None)
        headers = dict(await self._call.initial_metadata() or ())
        if SUBSCRIBED_HEADER not in headers and await self._call.code() != grpc.StatusCode.OK:
            await self._anext_raw()  # raises the call's error, mapped

    async def __aenter__(self) -> EventStream:
        await self._astart()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> PlatformEvent:
        await self._astart()
        return decode(await self._anext_raw())

    async def _anext_raw(self) -> stream_pb2.Event:
        if self._closed:
            await self.aclose()
            raise StopAsyncIteration
        try:
            pb = await self._call.read()
        except grpc.RpcError as exc:
            was_closed = self._closed
            await self.aclose()
            if was_closed and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopAsyncIteration from None
            raise self._t.error(exc, SERVICE) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and not (task is not None and task.cancelling()):
                # close() cancelled the call under a pending read: the stream just ends.
                await self.aclose()
                raise StopAsyncIteration from None
            await self.aclose()
            raise
        if pb is grpc.aio.EOF:
            await self.aclose()
            raise StopAsyncIteration
        event: stream_pb2.Event = pb
        return event

    async def aclose(self) -> None:
        """Ends the subscription and closes its channel (the ``async`` :meth:`close`)."""
        self.close()
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


class Events:
    """Platform events; reached as ``client.events``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def subscribe(
        self, pattern: str = "", *, since: datetime | timedelta | None = None, limit: int | None = None
    ) -> EventStream:
        """Your tenant's events whose names match ``pattern``, as :class:`PlatformEvent` objects.

        Args:
            pattern: Event names with NATS wildcards: ``"dataset.version.created"``,
                ``"training.*"`` (``*`` is one name part), ``"registry.>"`` (``>`` is the rest).
                Empty: every event.
            since: Replay the events from this time on (kept 30 days) before the live ones;
                a ``timedelta`` counts back from now, a naive ``datetime`` is local time.
                None: only events published after the subscription starts.
            limit: Stop after this many events; None: run until closed.

        Returns:
            An :class:`EventStream`: ``for`` / ``async for`` over it; ``with`` / ``async with``
            starts it at once and closes it at the end.

        Raises:
            InvalidArgument: (when the stream starts) a pattern that matches no event, or a
                ``since`` in the future; here, a ``limit`` below 1.

        Example:
            >>> with client.events.subscribe("dataset.version.created", limit=1) as events:
            ...     client.datasets.upload("sales.csv")
            ...     (event,) = events
            >>> event.data.row_count
        """
        request = stream_pb2.SubscribeRequest(pattern=pattern)
        if limit is not None:
            if not 1 <= limit <= _MAX_LIMIT:
                raise InvalidArgument(f"limit: must be at least 1 (None: no limit), got {limit}")
            request.limit = limit
        if since is not None:
            start = datetime.now(UTC) - since if isinstance(since, timedelta) else since.astimezone(UTC)
            request.since.FromDatetime(start)
        return EventStream(self._t, request)

    def dead_letters(self, *, consumer: str = "", limit: int = 100) -> list[DeadLetter]:
        """Your tenant's dead letters, newest first: events a platform consumer gave up on, with why.

        Args:
            consumer: Only this consumer's (``evaluator``, ``trainers``, ...); empty: all.
            limit: At most this many (1 to 1000).

        Raises:
            InvalidArgument: Not a consumer of the platform, or a limit out of range.
        """
        if not 1 <= limit <= 1000:
            raise InvalidArgument(f"limit: must be 1 to 1000, got {limit}")
        request = stream_pb2.ListDeadLettersRequest(consumer=consumer, limit=limit)
        answer = self._t.call(SERVICE, self._stub(SERVICE).ListDeadLetters, request)
        return [_dead_letter(d) for d in answer.dead_letters]

    def replay_dead_letter(self, dead_letter: DeadLetter | int) -> DeadLetter:
        """Hands one dead letter back to the consumer that gave up on it, once, after you fixed the cause.

        The call goes to the service that runs the consumer; it returns once the consumer handled
        the event, and the dead letter is gone. Needs a key with role admin.

        Raises:
            NotFound: No such dead letter in your tenant (or replayed already).
            FailedPrecondition: The consumer failed again (the error says why); the dead letter stays.
            PermissionDenied: Your key's role may not replay.
        """
        if isinstance(dead_letter, DeadLetter):
            service, id = dead_letter.service, dead_letter.id
        else:
            # Which service replays it: the entry looks that one dead letter up (NOT_FOUND if not yours).
            lookup = stream_pb2.ListDeadLettersRequest(id=dead_letter)
            (found,) = self._t.call(SERVICE, self._stub(SERVICE).ListDeadLetters, lookup).dead_letters
            service, id = found.service or SERVICE, dead_letter
        request = stream_pb2.ReplayDeadLetterRequest(id=id)
        return _dead_letter(self._t.call(service, self._stub(service).ReplayDeadLetter, request, timeout=600.0))

    def _stub(self, service: str) -> stream_pb2_grpc.EventServiceStub:
        return stream_pb2_grpc.EventServiceStub(self._t.channel(service))


__all__ = ["DeadLetter", "EventStream", "Events", "PlatformEvent"]
