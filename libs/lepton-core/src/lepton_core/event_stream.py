"""``lepton.events.v1.EventService``: platform events for API-key holders, over gRPC.

Users integrate by events without NATS credentials: every service serves
``Subscribe`` (registered by :mod:`lepton_core.service`), the caller's tenant comes
from its API key, and each call reads the EVENTS stream through its own ephemeral
ordered consumer filtered to ``lepton.evt.<tenant>.<pattern>``, so another tenant's
events cannot match. The consumer is deleted when the call ends or is cancelled.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.events.v1 import stream_pb2, stream_pb2_grpc
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from lepton_core.access import Rule, rules_for
from lepton_core.bounds import check_timestamp
from lepton_core.bus import DEADLETTER_ROOT, DEADLETTER_STREAM, EVENTS_ROOT, EVENTS_STREAM
from lepton_core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from lepton_core.events import CATALOGUE, CE_SPECVERSION, Consumer, DeadLetter, Event, decode, spec_for_type
from lepton_core.names import shown
from lepton_core.nats_identity import GRANTS, check_tenant
from lepton_core.rpc import SUBSCRIBED_HEADER, current_tenant
from lepton_core.trust import ForgedEvent

log = logging.getLogger(__name__)


SERVICE_NAME: str = stream_pb2.DESCRIPTOR.services_by_name["EventService"].full_name

#: The events a caller can subscribe to: those on the EVENTS stream. The job queue
#: (``training.requested``) and prediction logs (``client.monitor.logs``) are not events to tail.
SUBSCRIBABLE: tuple[str, ...] = tuple(sorted(s.name for s in CATALOGUE if s.root == EVENTS_ROOT))
#: Top-level names, for error messages (``dataset``, ``training``, ...).
AREAS: tuple[str, ...] = tuple(sorted({name.split(".")[0] for name in SUBSCRIBABLE}))

#: How far ahead of this server's clock ``since`` may be (clock skew between hosts).
CLOCK_SKEW = timedelta(minutes=1)
#: How often a waiting call wakes up to notice a closed connection.
POLL_S = 5.0

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def parse_pattern(pattern: str) -> list[str]:
    """The names in :data:`SUBSCRIBABLE` that ``pattern`` matches (NATS wildcards).

    ``*`` matches one token, ``>`` (last only) one or more; empty means every event.

    Raises:
        InvalidArgument: (field ``pattern``) the pattern is malformed or matches no event.
    """
    tokens = pattern.split(".") if pattern else [">"]
    for i, token in enumerate(tokens):
        if token == ">" and i != len(tokens) - 1:
            raise InvalidArgument(
                f"{shown(pattern)} has '>' before its end; '>' must be the last token", field="pattern"
            )
        if token not in ("*", ">") and not _TOKEN.fullmatch(token):
            what = "an empty token" if not token else f"the token {shown(token)}"
            raise InvalidArgument(
                f"{shown(pattern)} has {what}: use dot-separated names with '*' or '>' as whole tokens "
                "(e.g. 'registry.>', 'training.*')",
                field="pattern",
            )
    matched = [name for name in SUBSCRIBABLE if _matches(tokens, name.split("."))]
    if not matched:
        # "model.*" means registry.model.*: suggest the areas where the pattern fits one level down.
        closer = sorted(
            {f"{name.split('.')[0]}.{pattern}" for name in SUBSCRIBABLE if _matches(tokens, name.split(".")[1:])}
        )
        hint = f" (did you mean {' or '.join(repr(c) for c in closer)}?)" if closer else ""
        raise InvalidArgument(
            f"{shown(pattern)} matches no event{hint}; event names start with {', '.join(AREAS)} "
            "(e.g. 'registry.>', 'training.*', 'dataset.version.created'; empty or '>' for all)",
            field="pattern",
        )
    return matched


def _matches(pattern: Sequence[str], name: Sequence[str]) -> bool:
    for i, token in enumerate(pattern):
        if token == ">":
            return len(name) > i
        if i >= len(name) or (token != "*" and token != name[i]):
            return False
    return len(pattern) == len(name)


def subject_filter(tenant: str, pattern: str) -> str:
    """The EVENTS subject filter for ``pattern`` (validated) in ``tenant``'s subjects only."""
    parse_pattern(pattern)
    if not _TOKEN.fullmatch(tenant):
        # A tenant with '.', '*' or '>' would widen the filter beyond its own subjects.
        raise PermissionDenied(f"tenant {tenant!r} cannot subscribe: its name is not a single subject token")
    return f"{EVENTS_ROOT}.{tenant}.{pattern or '>'}"


def start_time(since: Timestamp | None, now: datetime) -> datetime | None:
    """Where a replay starts; None for new events only.

    Raises:
        InvalidArgument: (field ``since``) not a valid timestamp, or in the future.
    """
    if since is None:
        return None
    start = check_timestamp(since, "since")
    if start > now + CLOCK_SKEW:
        raise InvalidArgument(
            f"{start.isoformat()} is in the future (server time {now.isoformat(timespec='seconds')}); "
            "leave it unset for new events only",
            field="since",
        )
    return start


def consumer_config(start: datetime | None) -> js_api.ConsumerConfig:
    if start is None:
        return js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.NEW)
    return js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=start)


def to_event(msg: Msg, tenant: str) -> stream_pb2.Event | None:
    """The wire event for one EVENTS message of ``tenant``; None when it is not one of ours.

    Decoded by :func:`lepton_core.events.decode`, so a message whose body names another tenant
    or another tenant's object (:mod:`lepton_core.trust`) is never passed on either.
    """
    prefix = f"{EVENTS_ROOT}.{tenant}."
    if not msg.subject.startswith(prefix):
        log.error("event stream got %s outside tenant %s; dropped", msg.subject, tenant)
        return None
    try:
        decoded = decode(msg)
    except ForgedEvent as exc:
        log.warning("skipping %s: %s", msg.subject, exc)
        return None
    except ValueError as exc:
        log.warning("skipping %s: not one of our CloudEvents %s (%s)", msg.subject, CE_SPECVERSION, exc)
        return None
    try:
        stored = msg.metadata.timestamp
    except NatsError:  # not a JetStream delivery
        stored = datetime.now(UTC)
    return wire_event(decoded, msg.subject[len(prefix) :], msg.data, stored)


def wire_event(decoded: Event[Any], name: str, payload: bytes, stored: datetime) -> stream_pb2.Event:
    """The wire form of a decoded event; ``stored`` stands in for a ``ce-time`` that does not parse."""
    event = stream_pb2.Event(
        id=decoded.id,
        type=decoded.type,
        name=name,
        source=decoded.source,
        subject=decoded.subject,
        traceparent=decoded.headers.get("traceparent", ""),
        payload=payload,
        payload_type=decoded.data.DESCRIPTOR.full_name,
        tenant=decoded.tenant,
    )
    try:
        event.time.FromJsonString(decoded.time)
    except ValueError:
        # ce-time is set by our publishers; the stream's own time is the next best thing.
        event.time.FromDatetime(stored)
    return event


# --- dead letters ----------------------------------------------------------------------------

#: ListDeadLetters' page when the request names none, and its largest.
DEAD_LETTERS_PAGE = 100
DEAD_LETTERS_MAX = 1000
#: Messages a listing fetches from the stream at a time.
_FETCH = 256


def owner_of(durable: str) -> str:
    """The service whose durable consumer ``durable`` is (``lepton_core.nats_identity.GRANTS``), or ``""``."""
    return next((name for name, grants in GRANTS.items() if durable in grants.durables), "")


def dead_letter_filter(tenant: str, consumer: str) -> str:
    """The DEADLETTER subject filter of ``tenant``'s dead letters (``consumer``'s only, when set).

    Raises:
        InvalidArgument: (field ``consumer``) not a durable consumer of the platform.
    """
    check_tenant(tenant)
    if consumer and not owner_of(consumer):
        durables = sorted(d for grants in GRANTS.values() for d in grants.durables)
        raise InvalidArgument(
            f"{shown(consumer)} is not a consumer of the platform; the consumers are {', '.join(durables)}",
            field="consumer",
        )
    return f"{DEADLETTER_ROOT}.{consumer or '*'}.{tenant}"


def wire_dead_letter(letter: DeadLetter) -> stream_pb2.DeadLetter:
    """The wire form of a dead letter; its ``event`` only when the message still decodes as one."""
    wire = stream_pb2.DeadLetter(
        id=letter.sequence,
        consumer=letter.durable,
        service=owner_of(letter.durable),
        error=letter.error,
        deliveries=letter.deliveries,
        original_subject=letter.original_subject,
    )
    wire.dead_lettered_at.FromDatetime(letter.time)
    try:
        decoded = letter.event()
    except ValueError:
        return wire  # a message refused as undecodable or forged: its error says why
    # Decoding checked the original subject against the type: the type names the event.
    wire.event.CopyFrom(wire_event(decoded, spec_for_type(decoded.type).name, letter.data, letter.time))
    return wire


async def list_dead_letters(
    js: JetStreamContext, tenant: str, consumer: str, limit: int
) -> tuple[list[DeadLetter], int]:
    """The newest ``limit`` of ``tenant``'s dead letters (newest first), and how many there are in all.

    Read through an ephemeral consumer filtered to the tenant's subjects, deleted at the end.
    """
    subject = dead_letter_filter(tenant, consumer)
    name = f"dlq-{secrets.token_hex(8)}"
    config = js_api.ConsumerConfig(
        name=name,
        filter_subject=subject,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_policy=js_api.AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    try:
        info = await js.add_consumer(DEADLETTER_STREAM, config=config)
    except NatsError as exc:
        raise Unavailable(f"the dead letters cannot be read right now ({exc!r}); try again") from exc
    total = int(info.num_pending or 0)
    newest: deque[DeadLetter] = deque(maxlen=limit)
    try:
        sub = await js.pull_subscribe_bind(stream=DEADLETTER_STREAM, name=name)
        seen = 0
        while seen < total:
            try:
                msgs = await sub.fetch(min(_FETCH, total - seen), timeout=5.0)
            except NatsTimeoutError as exc:
                raise Unavailable("the dead letters could not be read to the end; try again") from exc
            for msg in msgs:
                seen += 1
                meta = msg.metadata
                try:
                    newest.append(
                        DeadLetter.parse(
                            msg.subject, meta.sequence.stream, dict(msg.headers or {}), msg.data, meta.timestamp
                        )
                    )
                except ValueError as exc:
                    log.error("skipping a malformed dead letter: %s", exc)
        await sub.unsubscribe()
    finally:
        try:
            await js.delete_consumer(DEADLETTER_STREAM, name)
        except Exception as exc:
            log.debug("deleting dead-letter listing consumer %s: %s", name, exc)
    return list(reversed(newest)), total


async def read_dead_letter(js: JetStreamContext, tenant: str, sequence: int) -> DeadLetter:
    """Dead letter ``sequence`` of ``tenant``.

    Raises:
        NotFound: (field ``id``) no such dead letter, or another tenant's (the same answer, so a
            caller learns nothing of other tenants).
    """
    missing = NotFound(f"dead letter {sequence} not found in your tenant's dead letters", field="id")
    if sequence <= 0:
        raise missing
    try:
        raw = await js.get_msg(DEADLETTER_STREAM, sequence)
    except js_errors.NotFoundError as exc:
        raise missing from exc
    except NatsError as exc:
        raise Unavailable(f"the dead letters cannot be read right now ({exc!r}); try again") from exc
    try:
        letter = DeadLetter.parse(
            raw.subject or "", sequence, dict(raw.headers or {}), raw.data or b"", _stored_time(raw)
        )
    except ValueError as exc:
        raise missing from exc
    if letter.tenant != tenant:
        raise missing
    return letter


def _stored_time(raw: js_api.RawStreamMsg) -> datetime:
    """When the server stored ``raw``: its RFC 3339 ``time``, nanoseconds cut to microseconds."""
    stamp = str(raw.time or "")
    whole, dot, rest = stamp.partition(".")
    if dot:
        digits = "".join(itertools.takewhile(str.isdigit, rest))
        stamp = f"{whole}.{digits[:6]}{rest[len(digits) :]}"
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


class EventStreamServicer(stream_pb2_grpc.EventServiceServicer):
    """Serves ``Subscribe`` from the EVENTS stream of the service's NATS connection, lists the
    DEADLETTER stream, and replays dead letters of ``consumers`` (the service's own)."""

    def __init__(self, js: JetStreamContext, service: str = "", consumers: Sequence[Consumer] = ()) -> None:
        self._js = js
        self._service = service
        self._consumers = consumers

    async def ListDeadLetters(
        self, request: stream_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> stream_pb2.ListDeadLettersResponse:
        if request.limit > DEAD_LETTERS_MAX:
            raise InvalidArgument(f"{request.limit} is over the most a page holds, {DEAD_LETTERS_MAX}", field="limit")
        tenant = current_tenant()
        if request.id:
            dead_letter_filter(tenant, request.consumer)  # a consumer that is none is INVALID_ARGUMENT here too
            letter = await read_dead_letter(self._js, tenant, request.id)
            if request.consumer and letter.durable != request.consumer:
                raise NotFound(f"dead letter {request.id} is not {shown(request.consumer)}'s", field="id")
            letters, total = [letter], 1
        else:
            letters, total = await list_dead_letters(
                self._js, tenant, request.consumer, request.limit or DEAD_LETTERS_PAGE
            )
        return stream_pb2.ListDeadLettersResponse(dead_letters=[wire_dead_letter(d) for d in letters], total=total)

    async def ReplayDeadLetter(
        self, request: stream_pb2.ReplayDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> stream_pb2.DeadLetter:
        letter = await read_dead_letter(self._js, current_tenant(), request.id)
        consumer = next((c for c in self._consumers if c.durable == letter.durable), None)
        if consumer is None:
            owner = owner_of(letter.durable) or "no service"
            raise FailedPrecondition(
                f"dead letter {letter.sequence} is the {letter.durable!r} consumer's, which the {owner} service runs, "
                f"not the {self._service or 'called'} service: call ReplayDeadLetter there (the SDK and CLI do)",
                field="id",
            )
        try:
            await consumer.replay(letter)
        except Exception as exc:  # the handler's failure, in the words its dead letter gives one
            raise FailedPrecondition(
                f"the {letter.durable!r} consumer failed again on dead letter {letter.sequence}, which stays: "
                f"{type(exc).__name__}: {exc}",
                field="id",
            ) from exc
        # Handled: it is no longer a dead letter. The audit trail keeps the replay.
        try:
            await self._js.delete_msg(DEADLETTER_STREAM, letter.sequence)
        except js_errors.NotFoundError:
            pass  # replayed twice at once: the other call removed it
        log.info("dead letter %s of %s replayed", letter.sequence, letter.durable)
        return wire_dead_letter(letter)

    async def Subscribe(
        self, request: stream_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[stream_pb2.Event]:
        tenant = current_tenant()
        subject = subject_filter(tenant, request.pattern)
        start = start_time(request.since if request.HasField("since") else None, datetime.now(UTC))
        # Ordered: flow-controlled (a slow caller slows delivery instead of filling memory),
        # in stream order, and recreated from the last sequence seen if NATS loses it.
        try:
            sub = await self._js.subscribe(
                subject, stream=EVENTS_STREAM, ordered_consumer=True, config=consumer_config(start)
            )
        except NatsError as exc:
            raise Unavailable(f"the event stream cannot be read right now ({exc!r}); try again") from exc
        sent = 0
        try:
            # Headers now tell the caller the consumer exists: nothing published from here on is missed.
            await context.send_initial_metadata(((SUBSCRIBED_HEADER, "1"),))
            while not request.limit or sent < request.limit:
                try:
                    msg = await sub.next_msg(timeout=POLL_S)
                except NatsTimeoutError:
                    continue
                event = to_event(msg, tenant)
                if event is not None:
                    yield event
                    sent += 1
        finally:
            await _close(self._js, sub)


async def _close(js: JetStreamContext, sub: JetStreamContext.PushSubscription) -> None:
    """Unsubscribes and deletes the consumer now (the server would drop it a few seconds later)."""
    consumer: str | None = getattr(sub, "_consumer", None)
    try:
        await sub.unsubscribe()
        if consumer:
            await js.delete_consumer(EVENTS_STREAM, consumer)
    except Exception as exc:
        log.debug("closing event subscription %s: %s", consumer, exc)


RULES = rules_for(
    SERVICE_NAME,
    {
        "Subscribe": Rule("events.read"),
        "ListDeadLetters": Rule("events.read"),
        "ReplayDeadLetter": Rule("events.replay"),
    },
)
"""The permission table of EventService, which every service serves."""


def register(
    server: grpc.aio.Server, js: JetStreamContext, service: str = "", consumers: Sequence[Consumer] = ()
) -> str:
    """Adds :class:`EventStreamServicer` to ``server``; returns its full service name.

    ``consumers`` are the service's own (a list it may still add to): their dead letters it replays.
    """
    stream_pb2_grpc.add_EventServiceServicer_to_server(EventStreamServicer(js, service, consumers), server)
    return SERVICE_NAME
