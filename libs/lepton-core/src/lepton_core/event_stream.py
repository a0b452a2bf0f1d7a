"""``lepton.events.v1.EventService``: platform events for API-key holders, over gRPC.

Users integrate by events without NATS credentials: every service serves
``Subscribe`` (registered by :mod:`lepton_core.service`), the caller's tenant comes
from its API key, and each call reads the EVENTS stream through its own ephemeral
ordered consumer filtered to ``lepton.evt.<tenant>.<pattern>``, so another tenant's
events cannot match. The consumer is deleted when the call ends or is cancelled.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.events.v1 import stream_pb2, stream_pb2_grpc
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js import api as js_api

from lepton_core.access import Rule, rules_for
from lepton_core.bounds import check_timestamp
from lepton_core.bus import EVENTS_ROOT, EVENTS_STREAM
from lepton_core.errors import InvalidArgument, PermissionDenied, Unavailable
from lepton_core.events import CATALOGUE, CE_SPECVERSION, decode
from lepton_core.names import shown
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
    event = stream_pb2.Event(
        id=decoded.id,
        type=decoded.type,
        name=msg.subject[len(prefix) :],
        source=decoded.source,
        subject=decoded.subject,
        traceparent=decoded.headers.get("traceparent", ""),
        payload=msg.data,
        payload_type=decoded.data.DESCRIPTOR.full_name,
        tenant=decoded.tenant,
    )
    try:
        event.time.FromJsonString(decoded.time)
    except ValueError:
        # ce-time is set by our publishers; the stream's own time is the next best thing.
        event.time.FromDatetime(msg.metadata.timestamp)
    return event


class EventStreamServicer(stream_pb2_grpc.EventServiceServicer):
    """Serves ``Subscribe`` from the EVENTS stream of the service's NATS connection."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

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


RULES = rules_for(SERVICE_NAME, {"Subscribe": Rule("events.read")})
"""The permission table of EventService, which every service serves."""


def register(server: grpc.aio.Server, js: JetStreamContext) -> str:
    """Adds :class:`EventStreamServicer` to ``server``; returns its full service name."""
    stream_pb2_grpc.add_EventServiceServicer_to_server(EventStreamServicer(js), server)
    return SERVICE_NAME
