"""CloudEvents 1.0 over NATS (binary mode) with protobuf payloads.

One typed publisher (:func:`publish`) and one typed consumer (:class:`Consumer`).
Headers carry the CloudEvents attributes (``ce-*``), the W3C trace context and
``Nats-Msg-Id`` (= ``ce-id``) so JetStream drops duplicate publishes. Event ids are
derived from natural keys (a job id, a version id), so a redelivered handler that
publishes again produces the same id and the broker keeps one copy.

Every subject carries the tenant (``lepton.evt.<tenant>.…``, ``lepton.jobs.<tenant>.…``,
``lepton.pred.<tenant>.…``), and :func:`decode` trusts a message only as far as its subject
(:mod:`lepton_core.trust`): the event's tenant is the subject's, and a body that names another
tenant or another tenant's object is refused, so the :class:`Consumer` dead-letters it unhandled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from lepton.events.v1 import events_pb2 as ev
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from lepton_core.bus import DEADLETTER_ROOT, EVENTS_ROOT, JOBS_ROOT, PREDICTIONS_ROOT
from lepton_core.errors import LeptonError
from lepton_core.failover import when_room
from lepton_core.names import shown
from lepton_core.telemetry import extract_context, inject_context
from lepton_core.trust import ForgedEvent, check_payload

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

CE_SPECVERSION = "1.0"
CONTENT_TYPE = "application/protobuf"


@dataclass(frozen=True)
class EventSpec:
    """One event type: its payload message, CloudEvents type and subject."""

    message: type[Message]
    #: Dotted name inside the area, e.g. ``training.completed``.
    name: str
    #: Subject root: events, the job queue or prediction logs.
    root: str = EVENTS_ROOT
    #: Whether a service publishing it on its own is an audit record: a change of state is;
    #: a report of progress (one each epoch) is not.
    audited: bool = True

    @property
    def ce_type(self) -> str:
        return f"ai.lepton.{self.name}.v1"

    def subject(self, tenant: str, key: str | None = None) -> str:
        """``lepton.evt.<tenant>.<name>``; jobs (``lepton.jobs.<tenant>.<queue>``) and prediction
        logs (``lepton.pred.<tenant>.<deployment>``) have their own shapes, the tenant always third."""
        if self.root == JOBS_ROOT:
            return f"{JOBS_ROOT}.{tenant}.{self.name.split('.')[0]}"
        if self.root == PREDICTIONS_ROOT:
            return f"{PREDICTIONS_ROOT}.{tenant}.{key or '_'}"
        return f"{self.root}.{tenant}.{self.name}"

    def tenant_of(self, subject: str) -> str:
        """The tenant a subject of this event names.

        Raises:
            ForgedEvent: (field ``ce-type``) ``subject`` is not where this type is published.
        """
        tokens = subject.split(".")
        tenant = tokens[2] if len(tokens) > 3 and subject.startswith(f"{self.root}.") else ""
        key = tokens[3] if self.root == PREDICTIONS_ROOT and len(tokens) == 4 else None
        if not tenant or tenant in ("*", ">") or subject != self.subject(tenant, key):
            raise ForgedEvent(
                f"{self.ce_type} is published on {self.subject('<tenant>', '<deployment>')}, not on {shown(subject)}",
                field="ce-type",
            )
        return tenant

    def filter(self, tenant: str = "*") -> str:
        """The subject filter that selects this event for one tenant or all."""
        if self.root == PREDICTIONS_ROOT:
            return f"{PREDICTIONS_ROOT}.{tenant}.*"
        return self.subject(tenant)


#: The event catalogue. docs/events.md is checked against this list by a test.
CATALOGUE: tuple[EventSpec, ...] = (
    EventSpec(ev.DatasetCreated, "dataset.created"),
    EventSpec(ev.DatasetVersionCreated, "dataset.version.created"),
    EventSpec(ev.DatasetValidationFailed, "dataset.validation.failed"),
    EventSpec(ev.DatasetRulesUpdated, "dataset.rules.updated"),
    EventSpec(ev.DatasetDeleted, "dataset.deleted"),
    EventSpec(ev.TrainingRequested, "training.requested", root=JOBS_ROOT),
    EventSpec(ev.TrainingQueued, "training.queued"),
    EventSpec(ev.TrainingStarted, "training.started"),
    EventSpec(ev.TrainingProgress, "training.progress", audited=False),
    EventSpec(ev.TrainingCancelled, "training.cancelled"),
    EventSpec(ev.TrainingCompleted, "training.completed"),
    EventSpec(ev.TrainingFailed, "training.failed"),
    EventSpec(ev.EvaluationCompleted, "evaluation.completed"),
    EventSpec(ev.EvaluationComparisonCompleted, "evaluation.comparison.completed"),
    EventSpec(ev.ModelVersionCreated, "registry.version.created"),
    EventSpec(ev.ModelAliasMoved, "registry.alias.moved"),
    EventSpec(ev.ModelUpdated, "registry.model.updated"),
    EventSpec(ev.ModelVersionUpdated, "registry.version.updated"),
    EventSpec(ev.ModelVersionDeleted, "registry.version.deleted"),
    EventSpec(ev.TenantDeleted, "registry.tenant.deleted"),
    EventSpec(ev.DeploymentReady, "deployment.ready"),
    EventSpec(ev.DeploymentFailed, "deployment.failed"),
    EventSpec(ev.DeploymentRolloutStarted, "deployment.rollout.started"),
    EventSpec(ev.DeploymentRolledBack, "deployment.rolled_back"),
    EventSpec(ev.DeploymentDeleted, "deployment.deleted"),
    EventSpec(ev.PredictionLogged, "prediction.logged", root=PREDICTIONS_ROOT),
    EventSpec(ev.PredictionLogBatch, "prediction.batch.logged", root=PREDICTIONS_ROOT),
    EventSpec(ev.AlertFired, "monitor.alert.fired"),
    EventSpec(ev.AlertResolved, "monitor.alert.resolved"),
    EventSpec(ev.DriftDetected, "monitor.drift.detected"),
    EventSpec(ev.DriftResolved, "monitor.drift.resolved"),
    EventSpec(ev.RetrainingRequested, "monitor.retraining.requested"),
    EventSpec(ev.LabelsReceived, "monitor.labels.received"),
)
_BY_MESSAGE: dict[type[Message], EventSpec] = {s.message: s for s in CATALOGUE}
_BY_TYPE: dict[str, EventSpec] = {s.ce_type: s for s in CATALOGUE}


def spec_of(message: type[Message] | Message) -> EventSpec:
    cls = message if isinstance(message, type) else type(message)
    return _BY_MESSAGE[cls]


def spec_for_type(ce_type: str) -> EventSpec:
    try:
        return _BY_TYPE[ce_type]
    except KeyError:
        raise ValueError(f"unknown ce-type {ce_type!r}") from None


@dataclass(frozen=True)
class Event(Generic[M]):
    """A received event: CloudEvents attributes, the decoded payload, delivery info."""

    id: str
    type: str
    source: str
    time: str
    subject: str
    data: M
    headers: dict[str, str]
    delivery: int = 1
    #: The tenant the NATS subject names; the payload's ``tenant`` fields agree with it.
    tenant: str = ""
    #: The message's sequence in its stream (0 when not known): what a consumer that counts
    #: events keeps to count each once (:mod:`lepton_core.usage`).
    sequence: int = 0


def headers_for(message: Message, *, event_id: str, source: str, ce_subject: str) -> dict[str, str]:
    """The CloudEvents binary-mode headers for one event, with the current trace context."""
    spec = spec_of(message)
    headers = {
        "ce-specversion": CE_SPECVERSION,
        "ce-id": event_id,
        "ce-type": spec.ce_type,
        "ce-source": source,
        "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "ce-subject": ce_subject,
        "content-type": f"{CONTENT_TYPE}; proto={message.DESCRIPTOR.full_name}",
        "Nats-Msg-Id": event_id,
    }
    inject_context(headers)
    return headers


async def publish(
    js: JetStreamContext,
    message: Message,
    *,
    tenant: str,
    event_id: str,
    source: str,
    key: str | None = None,
    ce_subject: str = "",
) -> js_api.PubAck:
    """Publishes ``message`` as a CloudEvent and waits for the stream's ack.

    Args:
        js: JetStream context.
        message: A payload from ``lepton.events.v1``; its type picks the subject.
        tenant: The owning tenant (part of the subject).
        event_id: Deterministic id from a natural key; repeats are dropped by NATS.
        source: ``ce-source``, e.g. ``/lepton/trainer``.
        key: Extra subject token (the deployment, for prediction logs).
        ce_subject: ``ce-subject``, the id of the thing the event is about.
    """
    spec = spec_of(message)
    headers = headers_for(message, event_id=event_id, source=source, ce_subject=ce_subject or key or "")
    return await js.publish(spec.subject(tenant, key), message.SerializeToString(), headers=headers)


def decode(msg: Msg) -> Event[Any]:
    """Parses a NATS message as a CloudEvent whose body agrees with its subject.

    Raises:
        ValueError: not one of ours (not a CloudEvent, an unknown type, a payload that does not parse).
        ForgedEvent: (a ``ValueError`` too) it claims more than its subject grants: it arrived on
            a subject its type is not published on, or names another tenant or another tenant's
            object (:func:`lepton_core.trust.check_payload`).
    """
    delivery = sequence = 1
    try:
        delivery = int(msg.metadata.num_delivered)
        sequence = int(msg.metadata.sequence.stream)
    except Exception:
        sequence = 0
    return decode_parts(msg.subject, dict(msg.headers or {}), msg.data, delivery=delivery, sequence=sequence)


def decode_parts(subject: str, headers: dict[str, str], data: bytes, *, delivery: int, sequence: int) -> Event[Any]:
    """:func:`decode` of a message given by its parts (a dead letter's original subject, headers and body)."""
    if headers.get("ce-specversion") != CE_SPECVERSION:
        raise ValueError(f"not a CloudEvent 1.0 (ce-specversion={headers.get('ce-specversion')!r})")
    for attr in ("ce-id", "ce-type", "ce-source"):
        if not headers.get(attr):
            raise ValueError(f"CloudEvent lacks required attribute {attr}")
    spec = spec_for_type(headers["ce-type"])
    payload = spec.message()
    try:
        payload.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"payload is not a valid {spec.message.DESCRIPTOR.full_name}: {exc}") from exc
    tenant = spec.tenant_of(subject)
    check_payload(payload, tenant, subject)
    return Event(
        id=headers["ce-id"],
        type=headers["ce-type"],
        source=headers["ce-source"],
        time=headers.get("ce-time", ""),
        subject=headers.get("ce-subject", ""),
        data=payload,
        headers=headers,
        delivery=delivery,
        tenant=tenant,
        sequence=sequence,
    )


# --- dead letters ----------------------------------------------------------------------------

#: Dead-letter headers: why, where the message was published, its place and deliveries there.
ERROR_HEADER = "Lepton-Error"
ORIGINAL_SUBJECT_HEADER = "Lepton-Original-Subject"
ORIGINAL_SEQUENCE_HEADER = "Lepton-Original-Sequence"
DELIVERIES_HEADER = "Lepton-Deliveries"
#: When it was given up on (ISO 8601, UTC): one value whichever way it is read back (a listing's
#: delivery, a get by sequence), where the stream's own time comes rounded differently by each.
DEAD_LETTERED_AT_HEADER = "Lepton-Dead-Lettered-At"
#: The tenant token of a dead letter whose subject names none (it cannot be one: tenant names
#: never start with '-').
NO_TENANT = "-"


def dead_letter_subject(durable: str, original_subject: str) -> str:
    """``lepton.dlq.<durable>.<tenant>``: the tenant is the original subject's (every root carries
    it third: ``lepton.evt.<tenant>.…``), so a tenant's dead letters are one subject filter."""
    tokens = original_subject.split(".")
    tenant = tokens[2] if len(tokens) > 3 and tokens[2] not in ("*", ">", "") else NO_TENANT
    return f"{DEADLETTER_ROOT}.{durable}.{tenant}"


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter read back from the DEADLETTER stream: the original message and why it died."""

    sequence: int
    durable: str
    tenant: str
    original_subject: str
    original_sequence: int
    deliveries: int
    error: str
    headers: dict[str, str]
    data: bytes
    time: datetime

    @classmethod
    def parse(cls, subject: str, sequence: int, headers: dict[str, str], data: bytes, time: datetime) -> DeadLetter:
        """One message of the DEADLETTER stream; :class:`ValueError` when its subject is not a dead letter's.

        ``time`` is the stream's, for a dead letter that carries no time of its own (one made before
        :data:`DEAD_LETTERED_AT_HEADER`)."""
        tokens = subject.split(".")
        if len(tokens) != 4 or f"{tokens[0]}.{tokens[1]}" != DEADLETTER_ROOT:
            raise ValueError(f"{shown(subject)} is not {DEADLETTER_ROOT}.<durable>.<tenant>")
        original = {k: v for k, v in headers.items() if not k.startswith("Lepton-")}
        return cls(
            sequence=sequence,
            durable=tokens[2],
            tenant=tokens[3],
            original_subject=headers.get(ORIGINAL_SUBJECT_HEADER, ""),
            original_sequence=_int(headers.get(ORIGINAL_SEQUENCE_HEADER)),
            deliveries=_int(headers.get(DELIVERIES_HEADER)) or 1,
            error=headers.get(ERROR_HEADER, ""),
            headers=original,
            data=data,
            time=_time(headers.get(DEAD_LETTERED_AT_HEADER)) or time,
        )

    def event(self) -> Event[Any]:
        """The original event, decoded and checked against its original subject as on first delivery.

        Raises:
            ValueError: it is not one of ours, or its subject does not vouch for it (ForgedEvent).
        """
        return decode_parts(
            self.original_subject, self.headers, self.data, delivery=self.deliveries, sequence=self.original_sequence
        )


def _time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class Retry(Exception):
    """Raised by a handler to have the event redelivered after ``delay`` seconds."""

    def __init__(self, reason: str, delay: float = 1.0) -> None:
        super().__init__(reason)
        self.delay = delay


Handler = Callable[[Event[Any]], Awaitable[None]]


@dataclass
class Consumer:
    """A durable pull consumer that dispatches events to typed handlers.

    Outcomes: the handler returns → ack; the store takes no write (full, or stopped by a full disk) →
    the handler runs again, the message kept (:meth:`_handle_when_the_store_writes`); raises
    :class:`Retry` or a retryable :class:`LeptonError` → nak with delay; raises anything else → nak with
    back-off until ``max_deliver``, then the message goes to the dead-letter
    subject ``lepton.dlq.<durable>.<tenant>`` with the error and is terminated. A message
    that is not a valid event, or that its subject does not vouch for
    (:class:`~lepton_core.trust.ForgedEvent`), is dead-lettered at once, unhandled.
    :meth:`replay` hands a dead letter back to its handler, after a fix.
    """

    js: JetStreamContext
    stream: str
    durable: str
    handlers: dict[type[Message], Handler]
    tenant_filter: str = "*"
    max_deliver: int = 5
    ack_wait: float = 60.0
    batch: int = 8
    source: str = "/lepton"
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)

    async def start(self) -> None:
        # Types that share a subject (the PREDICTIONS stream's) share one filter: the server refuses overlaps.
        filters = list(dict.fromkeys(spec_of(m).filter(self.tenant_filter) for m in self.handlers))
        config = js_api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=1000,
        )
        if len(filters) == 1:
            config.filter_subject = filters[0]
        else:
            config.filter_subjects = filters
        # Consumer create is create-or-update on the server: idempotent at start-up.
        await self.js.add_consumer(self.stream, config=config)
        self._sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.durable}")

    async def stop(self) -> None:
        """Lets the current fetch and handler finish (bounded), then unsubscribes."""
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            except TimeoutError:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
        try:
            await self._sub.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribe of %s failed: %s", self.durable, exc)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                msgs = await self._sub.fetch(self.batch, timeout=1.0)
            except (TimeoutError, js_errors.FetchTimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("fetch from %s failed: %s", self.durable, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    await self._dispatch(msg)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The outcome could not be recorded (an ack, a nak or a dead letter the store refused:
                    # NATS away, the store full). The consumer goes on; the event comes back once its ack
                    # wait ends, so nothing is lost and no other event waits behind it.
                    log.error("event on %s not settled, it will be delivered again: %r", msg.subject, exc)

    async def _dispatch(self, msg: Msg) -> None:
        try:
            event = decode(msg)
        except ForgedEvent as exc:
            log.warning("dead-lettering %s on %s: %s", msg.headers and msg.headers.get("ce-id"), msg.subject, exc)
            await self._dead_letter(msg, f"InvalidArgument: {exc}")
            return
        except ValueError as exc:
            await self._dead_letter(msg, f"undecodable: {exc}")
            return
        handler = self.handlers.get(type(event.data))
        if handler is None:
            await msg.ack()
            return
        with self._span(event, msg.subject) as span:
            heartbeat = asyncio.create_task(self._keep_alive(msg))
            try:
                await self._handle_when_the_store_writes(handler, event)
            except Retry as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                await msg.nak(delay=exc.delay)
                return
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                permanent = isinstance(exc, LeptonError) and not exc.retryable
                if permanent or event.delivery >= self.max_deliver:
                    log.error("event %s failed for good: %s", event.id, exc, exc_info=exc)
                    await self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
                else:
                    log.warning("event %s failed (delivery %d), retrying: %s", event.id, event.delivery, exc)
                    await msg.nak(delay=min(30.0, 0.5 * 2**event.delivery))
                return
            finally:
                heartbeat.cancel()
            await msg.ack()

    async def _handle_when_the_store_writes(self, handler: Handler, event: Event[Any]) -> None:
        """``handler(event)``, run again for as long as the store takes no write (full, or stopped by a full
        disk: :func:`~lepton_core.failover.when_room`), the message kept meanwhile by its heartbeat: a nak
        would spend one of its ``max_deliver`` deliveries on each try, and an event whose deliveries ran out
        while the store could not write would be dead-lettered, or, when the dead letter could not be
        written either, never handled again. Handlers are idempotent, so a try cut short is harmless."""
        await when_room(lambda: handler(event), f"event {event.id}")

    def _span(self, event: Event[Any], subject: str, replay: bool = False) -> AbstractContextManager[Span]:
        """The CONSUMER span of one handling, in the trace of the chain that published the event
        (``lepton.replay`` marks a dead letter's replay)."""
        return trace.get_tracer("lepton.events").start_as_current_span(
            f"{event.type} process",
            context=extract_context(event.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": subject,
                "messaging.consumer.group.name": self.durable,
                "cloudevents.event_id": event.id,
                "cloudevents.event_type": event.type,
                "messaging.delivery_count": event.delivery,
                **({"lepton.replay": True} if replay else {}),
            },
        )

    async def replay(self, letter: DeadLetter) -> None:
        """Runs this consumer's handler once on one of its dead letters (after a fix), as on a delivery.

        Raises:
            ValueError: the dead letter is not this consumer's, not an event, or its subject does not
                vouch for it (a refusal is not undone by a replay).
            Exception: whatever the handler raises: the dead letter then stays as it is.
        """
        if letter.durable != self.durable:
            raise ValueError(f"dead letter {letter.sequence} is {letter.durable!r}'s, not {self.durable!r}'s")
        event = letter.event()
        handler = self.handlers.get(type(event.data))
        if handler is None:
            raise ValueError(f"{self.durable!r} no longer handles {event.type}")
        with self._span(event, letter.original_subject, replay=True) as span:
            try:
                await handler(event)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise

    async def _keep_alive(self, msg: Msg) -> None:
        """Tells the server the message is still being worked on, so a long job
        (training, a model load) is not redelivered to another process mid-way."""
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            try:
                await msg.in_progress()
            except Exception as exc:
                log.warning("in-progress heartbeat failed: %s", exc)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        headers = dict(msg.headers or {})
        headers.pop("Nats-Msg-Id", None)
        headers[ERROR_HEADER] = reason[:1000]
        headers[ORIGINAL_SUBJECT_HEADER] = msg.subject
        headers[DEAD_LETTERED_AT_HEADER] = datetime.now(UTC).isoformat()
        try:
            headers[ORIGINAL_SEQUENCE_HEADER] = str(msg.metadata.sequence.stream)
            headers[DELIVERIES_HEADER] = str(msg.metadata.num_delivered)
        except Exception:  # not a JetStream delivery: nothing to add
            pass
        await self.js.publish(dead_letter_subject(self.durable, msg.subject), msg.data, headers=headers)
        await msg.term()
