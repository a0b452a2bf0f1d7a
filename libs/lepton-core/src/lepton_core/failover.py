"""Riding through a JetStream failover, and telling a full store from one that is only away.

:class:`FailoverJetStream` is the JetStream context every service connection hands out
(:func:`lepton_core.bus.connect`); :func:`store_full` and :func:`when_room` are how callers tell and
wait out a store with no room; :func:`stalled` tells a stream that stopped writing (its disk filled up)
from one that is only slow or away. docs/operations.md ("A 3-node NATS cluster", "The store full",
"A disk that filled up").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from nats import errors as nats_errors
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

log = logging.getLogger(__name__)

T = TypeVar("T")


#: How long a store call rides through a JetStream failover (a cluster's stream leader lost and another
#: elected, a client moving to another node) before its caller sees the failure (UNAVAILABLE). A stream's
#: followers elect a new leader 4-9 s after the last heartbeat of the old (nats-server's Raft election
#: timeout); each try waits up to the context's 5 s timeout.
FAILOVER_S = 20.0

#: JetStream's answers that say a request was not taken: no stream leader answered (none elected yet),
#: JetStream is not available on this node for now (503), the connection is being made again.
NOT_TAKEN: tuple[type[BaseException], ...] = (
    js_errors.NoStreamResponseError,
    js_errors.ServiceUnavailableError,
    nats_errors.NoRespondersError,
    nats_errors.ConnectionReconnectingError,
)

RETRIED: tuple[type[BaseException], ...] = (*NOT_TAKEN, TimeoutError)

#: JetStream's answers when its store has no room: insufficient resources, and storage or memory
#: resources exceeded (the server's ``max_file_store``, the disk, an account's limits). nats-server sends
#: the first as a 503, like a stream with no leader, but no resend helps until an operator frees room.
STORE_FULL_CODES = frozenset({10023, 10047, 10028})


#: What a user told that the store is full reads next: who can act, and how.
STORE_FULL_REMEDY = "an operator frees room (delete datasets or model versions) or raises the store's limit"


#: JetStream's "store failed" answer; with "maximum bytes/messages exceeded" it is a stream at its own
#: limit (``max_bytes``, discard new), as an operator may cap a bucket: full, too, and also sent as a 503.
STREAM_STORE_FAILED = 10077


def store_full(exc: BaseException) -> bool:
    """Whether ``exc`` is JetStream refusing a write for want of room: no retry helps until an operator acts."""
    if not isinstance(exc, js_errors.APIError):
        return False
    if exc.err_code in STORE_FULL_CODES:
        return True
    return exc.err_code == STREAM_STORE_FAILED and "maximum" in (exc.description or "")


#: How long :func:`stalled` waits for the stream to answer its reads.
STALL_PROBE_S = 2.0

#: What a user told that the store stopped writing reads next.
STALLED_REMEDY = (
    "an operator frees room on the store's disk and restarts nats-server (docs/operations.md, 'A disk that filled up')"
)


class StoreStalled(TimeoutError):
    """A write JetStream left unanswered while the stream it goes to answered a read at once and had stored
    nothing for most of the write's wait: the stream has stopped writing (:func:`stalled`).

    nats-server 2.15 does this to a stream whose write failed on its disk ("Critical write error: ... no space
    left on device" in its log, the stream named by its health check) and keeps doing it, even once room is
    freed, until it is restarted: no resend helps. A :class:`TimeoutError`, so code that only knows
    timeouts handles it as before; the services' RPCs answer it RESOURCE_EXHAUSTED with :data:`STALLED_REMEDY`.
    """

    def __init__(self, stream: str, subject: str, waited: float) -> None:
        self.stream = stream
        self.subject = subject
        super().__init__(
            f"the platform's store stopped writing: a write to its stream {stream} got no answer in {waited:.0f} s "
            "and the stream, which answers reads, stored nothing meanwhile; nats-server does this after a write "
            "failed on its disk (its log: 'Critical write error ... no space left on device') until it is "
            "restarted"
        )


def _server_time(stamp: str) -> datetime:
    """nats-server's RFC 3339 time (nanoseconds, ``Z``) as a datetime, to the microsecond."""
    day, _, rest = stamp.rstrip("Z").partition("T")
    clock, _, fraction = rest.partition(".")
    return datetime.fromisoformat(f"{day}T{clock}.{(fraction + '000000')[:6]}+00:00")


def cannot_write(exc: BaseException) -> bool:
    """Whether ``exc`` says the store takes no write for now, full (:func:`store_full`) or stopped
    (:class:`StoreStalled`): work that must not be lost waits for an operator rather than failing or
    spending its deliveries."""
    return store_full(exc) or isinstance(exc, StoreStalled)


def no_room(exc: BaseException) -> str:
    """What a user or operator is told of ``exc``, a :func:`cannot_write` failure: why, and who does what."""
    if isinstance(exc, StoreStalled):
        return f"the platform's store stopped writing (its disk is full); {STALLED_REMEDY}"
    return f"the platform's store is full; {STORE_FULL_REMEDY}"


def reconnects(js: JetStreamContext) -> int:
    """How many times ``js``'s connection was made again so far: a write sent before one and never answered
    was lost with the old connection (a nats-server restart), not stalled."""
    return int(js._nc.stats["reconnects"])


async def stalled(
    js: JetStreamContext, stream: str, subject: str, waited: float, reconnected: int
) -> StoreStalled | None:
    """After a write to ``subject`` (held by ``stream``) timed out after ``waited`` seconds: a
    :class:`StoreStalled` to raise instead when ``stream`` answers its info within :data:`STALL_PROBE_S` and
    stored nothing in the last ``waited / 2`` seconds, with a leader and every replica current, on the
    connection the write went out on (``reconnected`` is :func:`reconnects` when it was sent); None when the
    store is away or only slow (it stored something meanwhile: writes queued before this one) or the connection
    was made again since (the write was lost with the old one, as across a nats-server restart), where the
    timeout stands. The stream's last time is the server's clock, compared with this host's: the same clock on
    one host (the embedded platform); across hosts, skew past ``waited / 2`` could misname a slow stream as
    stalled (NTP keeps it to milliseconds)."""
    if reconnects(js) != reconnected:
        return None
    try:
        info = await asyncio.wait_for(
            JetStreamContext._api_request(js, f"$JS.API.STREAM.INFO.{stream}", b"", STALL_PROBE_S), STALL_PROBE_S
        )
        last = _server_time(str(info["state"].get("last_ts") or "0001-01-01T00:00:00Z"))
        cluster = info.get("cluster") or {}
        replicas = cluster.get("replicas") or []
    except Exception:  # any failure of the probe leaves the write's own timeout standing
        return None
    if not cluster.get("leader") or any(r.get("offline") or not r.get("current") for r in replicas):
        # A replicated stream short of its peers (a cluster without quorum) is away, not stopped: its last
        # leader may still answer its info for a while.
        return None
    if last >= datetime.now(UTC) - timedelta(seconds=waited / 2) or reconnects(js) != reconnected:
        return None
    log.error("the store stopped writing to stream %s: %s", stream, STALLED_REMEDY)
    return StoreStalled(stream, subject, waited)


#: JetStream API requests that only read: asked again after a timeout, they change nothing.
_READS = (".INFO.", ".MSG.GET.", ".DIRECT.GET.", ".NAMES", ".LIST")


#: How often :func:`when_room` tries a write again that the full store refused.
ROOM_POLL_S = 2.0


async def when_room(write: Callable[[], Awaitable[T]], what: str) -> T:
    """``write()``, tried again every :data:`ROOM_POLL_S` for as long as the store takes no write (full, or
    stopped by a full disk: :func:`cannot_write`).

    For a write that must not be lost and has no caller to refuse (a job's end, recorded by a worker):
    the work waits, saying so in the log every time, until an operator frees room; it then goes on.
    Any other failure is raised at once. Cancelled (a service stopping) like any other wait.
    """
    while True:
        try:
            return await write()
        except Exception as exc:
            if not cannot_write(exc):
                raise
            log.error("%s waits for the store to take writes again (%s): %s", what, exc, no_room(exc))
            await asyncio.sleep(ROOM_POLL_S)


class FailoverJetStream(JetStreamContext):
    """The JetStream context every connection of :func:`connect` hands out: a write or read JetStream did
    not take because its stream has no leader for now is sent again, for up to :data:`FAILOVER_S`.

    Sent again: a publish JetStream did not take (:data:`NOT_TAKEN`); one that timed out only when it
    carries a ``Nats-Msg-Id`` (the stream drops a repeat: events, dead letters), since a bare write that
    timed out may have been stored; an API request on :data:`NOT_TAKEN`, and on a timeout when it reads.
    On one nats-server this only matters across its restart; on a cluster it carries a service through
    a leader's loss (docs/operations.md) instead of failing the calls of those seconds. A write that timed
    out on a stream that stopped writing (:func:`stalled`; ``stream_of`` names the stream that holds a
    subject) raises :class:`StoreStalled` at once: no resend helps it.
    """

    def __init__(self, conn: Any, *, stream_of: Callable[[str], str | None] = lambda _: None, **opts: Any) -> None:
        super().__init__(conn, **opts)
        self._stream_of = stream_of

    async def _again(
        self,
        attempt: Callable[[], Awaitable[T]],
        retry_timeout: bool,
        what: str,
        on_timeout: Callable[[], Awaitable[BaseException | None]] | None = None,
    ) -> T:
        """``attempt()``, sent again as the class says; ``on_timeout``, when given, is asked after each timeout
        for the error to raise at once instead (a stream that stopped writing: resends cannot help)."""
        deadline = asyncio.get_running_loop().time() + FAILOVER_S
        pause = 0.05
        while True:
            try:
                return await attempt()
            except RETRIED as exc:
                timed_out = isinstance(exc, TimeoutError) and not isinstance(exc, NOT_TAKEN)
                if timed_out and on_timeout is not None and (instead := await on_timeout()) is not None:
                    raise instead from None
                if timed_out and not retry_timeout:
                    raise
                if store_full(exc):
                    raise
                if asyncio.get_running_loop().time() + pause > deadline:
                    raise
                log.info("%s not taken (%s); again in %.2f s", what, type(exc).__name__, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def publish(  # type: ignore[override]
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        stream: str | None = None,
        headers: dict[str, Any] | None = None,
        **options: Any,
    ) -> js_api.PubAck:
        deduplicated = bool(headers and "Nats-Msg-Id" in headers)
        base = super().publish
        holder = stream or self._stream_of(subject)
        connection = reconnects(self)

        async def probe() -> BaseException | None:
            if holder is None:
                return None
            return await stalled(self, holder, subject, timeout or self._timeout, connection)

        return await self._again(
            lambda: base(subject, payload, timeout=timeout, stream=stream, headers=headers, **options),
            deduplicated,
            f"a write to {subject}",
            on_timeout=probe,
        )

    async def _api_request(self, req_subject: str, req: bytes = b"", timeout: float = 5) -> dict[str, Any]:
        base = super()._api_request
        reads = any(mark in req_subject for mark in _READS)
        return await self._again(lambda: base(req_subject, req, timeout), reads, req_subject)
