"""NATS: the connection, the JetStream topology, KV records and the object store.

The topology (streams, KV buckets, object stores) is declared once, with the admin
identity, by the launchers (:func:`declare_topology`); services check that what they use
exists (:func:`require_topology`) and may touch nothing else (``lepton_core.nats_identity``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors
from nats.js.kv import KeyValue
from pydantic import BaseModel

from lepton_core.errors import Conflict, DataIntegrityError, NotFound, Unavailable
from lepton_core.failover import NOT_TAKEN as NOT_TAKEN  # re-exported: callers import these from here
from lepton_core.failover import STALLED_REMEDY as STALLED_REMEDY
from lepton_core.failover import STORE_FULL_REMEDY as STORE_FULL_REMEDY
from lepton_core.failover import FailoverJetStream, reconnects, stalled
from lepton_core.failover import StoreStalled as StoreStalled
from lepton_core.failover import cannot_write as cannot_write
from lepton_core.failover import no_room as no_room
from lepton_core.failover import store_full as store_full
from lepton_core.failover import when_room as when_room
from lepton_core.store import R, Store
from lepton_core.store import Versioned as Versioned  # re-exported: callers import it from here

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENTS_STREAM = "EVENTS"
JOBS_STREAM = "JOBS"
PREDICTIONS_STREAM = "PREDICTIONS"
DEADLETTER_STREAM = "DEADLETTER"
AUDIT_STREAM = "AUDIT"

# Subject roots; the catalogue in docs/events.md lists the full subjects.
EVENTS_ROOT = "lepton.evt"
JOBS_ROOT = "lepton.jobs"
PREDICTIONS_ROOT = "lepton.pred"
DEADLETTER_ROOT = "lepton.dlq"
AUDIT_ROOT = "lepton.audit"

KV_BUCKETS = ("datasets", "jobs", "evaluations", "models", "deployments", "monitor", "keys", "tenants", "usage")
OBJECT_BUCKETS = ("datasets", "artifacts")
TENANT_BUCKETS = ("datasets", "jobs", "evaluations", "models", "deployments", "monitor")
"""The buckets whose every key starts with ``<tenant>.``: what a tenant's deletion erases by prefix
(``keys``, ``tenants`` and ``usage`` are keyed otherwise: :mod:`lepton_core.tenant_deletion`)."""

#: Object store chunk size: ~1 MB chunks keep large objects to few messages.
CHUNK_SIZE = 1024 * 1024
#: Chunks of one object put awaiting their acks at a time (:meth:`ObjectStore.put`).
PUT_WINDOW = 8
#: Chunks fetched per pull request when reading an object.
READ_BATCH = 16
DUPLICATE_WINDOW_S = 120.0
DAY_S = 24 * 3600.0
AUDIT_MAX_AGE_S = 365 * DAY_S
"""How long the audit trail keeps a record: a year, whatever the events' retention."""


def stream_configs(replicas: int = 1) -> list[js_api.StreamConfig]:
    """The platform's streams; see docs/architecture.md for why each is shaped so."""
    common = {
        "storage": js_api.StorageType.FILE,
        "num_replicas": replicas,
        "duplicate_window": DUPLICATE_WINDOW_S,
    }
    return [
        js_api.StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{EVENTS_ROOT}.>"],
            retention=js_api.RetentionPolicy.LIMITS,
            max_age=30 * DAY_S,
            **common,  # type: ignore[arg-type]
        ),
        js_api.StreamConfig(
            name=JOBS_STREAM,
            subjects=[f"{JOBS_ROOT}.>"],
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            **common,  # type: ignore[arg-type]
        ),
        js_api.StreamConfig(
            name=PREDICTIONS_STREAM,
            subjects=[f"{PREDICTIONS_ROOT}.>"],
            retention=js_api.RetentionPolicy.LIMITS,
            max_age=7 * DAY_S,
            **common,  # type: ignore[arg-type]
        ),
        js_api.StreamConfig(
            name=DEADLETTER_STREAM,
            subjects=[f"{DEADLETTER_ROOT}.>"],
            retention=js_api.RetentionPolicy.LIMITS,
            max_age=30 * DAY_S,
            **common,  # type: ignore[arg-type]
        ),
        js_api.StreamConfig(
            name=AUDIT_STREAM,
            subjects=[f"{AUDIT_ROOT}.>"],
            retention=js_api.RetentionPolicy.LIMITS,
            max_age=AUDIT_MAX_AGE_S,
            **common,  # type: ignore[arg-type]
        ),
    ]


#: Each stream of :func:`stream_configs` by the root of its subjects.
_STREAM_BY_ROOT = {
    EVENTS_ROOT: EVENTS_STREAM,
    JOBS_ROOT: JOBS_STREAM,
    PREDICTIONS_ROOT: PREDICTIONS_STREAM,
    DEADLETTER_ROOT: DEADLETTER_STREAM,
    AUDIT_ROOT: AUDIT_STREAM,
}


def stream_of(subject: str) -> str | None:
    """The platform's stream that holds ``subject`` (a KV bucket's and an object store's included), found
    from the topology, not asked of JetStream (the services may not list streams); None outside it."""
    head, _, rest = subject.partition(".")
    bucket = rest.partition(".")[0]
    if head == "$KV":
        return f"KV_{bucket}"
    if head == "$O":
        return f"OBJ_{bucket}"
    return next((stream for root, stream in _STREAM_BY_ROOT.items() if subject.startswith(f"{root}.")), None)


async def connect(
    url: str, name: str, *, seed_file: str | None = None, inbox: str | None = None, tls_ca_file: str | None = None
) -> NATS:
    """Connects with unlimited reconnects: a broker restart is waited out, not fatal.

    Args:
        url: The server URL(s), comma-separated; never with credentials in it.
        name: The connection's name in the server's logs and monitoring.
        seed_file: The nkey seed file the connection authenticates with (the platform's
            servers refuse connections without one); its secret never leaves this process.
        inbox: The reply subject prefix (``lepton_core.nats_identity.inbox_prefix``):
            an identity may subscribe only to its own inbox.
        tls_ca_file: The CA that a ``tls://`` server's certificate must chain to (else the system's roots).

    A subject the server refuses (a permissions violation) is logged as an error naming
    the connection and the subject; the connection itself stays up.
    """

    nc = _Client()

    async def on_disconnect() -> None:
        if not nc.is_closed:  # a close() of our own is no outage
            log.warning("nats disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    async def on_error(exc: Exception) -> None:
        text = str(exc)
        if "permissions violation" in text.lower():
            log.error("nats refused %s: %s (see lepton_core.nats_identity for what it may use)", name, text)
        elif "authorization violation" in text.lower() or "authentication" in text.lower():
            log.error("nats refused %s's credentials: %s", name, text)
        else:
            log.warning("nats error: %s", exc)

    servers = [u.strip() for u in url.split(",") if u.strip()]
    tls = None
    if tls_ca_file and any(u.startswith("tls://") for u in servers):
        tls = ssl.create_default_context(cafile=tls_ca_file)
    await nc.connect(
        servers=servers,
        tls=tls,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds; nats-py annotates int, sleeps on a float
        connect_timeout=5,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        nkeys_seed=seed_file,
        inbox_prefix=inbox or "_INBOX",
    )
    return nc


class _Client(NATS):
    """nats-py's client whose JetStream contexts ride through a failover (:class:`FailoverJetStream`)."""

    def jetstream(self, **opts: Any) -> JetStreamContext:
        return FailoverJetStream(self, stream_of=stream_of, **opts)


async def require_topology(js: JetStreamContext, streams: Iterable[str]) -> None:
    """Checks that ``streams`` (streams, ``KV_<bucket>``, ``OBJ_<bucket>``) exist.

    Services do not declare the topology: their identities may not create or change
    streams. The launchers declare it with the admin identity (:func:`declare_topology`).

    Raises:
        Unavailable: a stream is missing, naming it and how to declare it.
    """
    for stream in streams:
        try:
            await js.stream_info(stream)
        except js_errors.NotFoundError as exc:
            raise Unavailable(
                f"NATS stream {stream} does not exist: declare the topology first "
                "(`python -m lepton_platform.nats_users declare`; `lepton up` does it itself)"
            ) from exc


KV_HISTORY = 5
"""Revisions a KV bucket keeps of each key."""


def kv_stream_config(bucket: str, replicas: int = 1, history: int = KV_HISTORY) -> js_api.StreamConfig:
    """The stream of KV bucket ``bucket``: nats-py's ``create_key_value`` shape, but erasable.

    nats-py makes a KV stream with ``deny_delete``, which refuses the message deletes that
    erase a record's bytes on disk (:meth:`RecordStore.erase`); JetStream cannot clear that
    flag on an existing stream. Everything else is what ``create_key_value`` would send.
    """
    return js_api.StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        allow_rollup_hdrs=True,
        allow_msg_ttl=True,
        deny_delete=False,
        discard=js_api.DiscardPolicy.NEW,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_consumers=-1,
        max_msgs=-1,
        max_msgs_per_subject=history,
        num_replicas=replicas,
        storage=js_api.StorageType.FILE,
    )


async def bucket_keys(js: JetStreamContext, bucket: str, pattern: str = ">") -> list[str]:
    """The keys of KV ``bucket`` matching a NATS subject pattern (``tenant.v.*``), sorted; keys
    with a message in the stream: live, deleted (a tombstone) or an older revision.

    The server lists the bucket stream's subjects for the pattern. Both nats-py paths lose
    keys: ``keys(filters=)`` matches substrings over every key, and a watch can signal "no
    more values" before values already sent have arrived.
    """
    root = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{root}{pattern}")
    return sorted(subject[len(root) :] for subject in (info.state.subjects or {}))


MIGRATE_ROOT = "lepton.migrate"
"""Where :func:`migrate_bucket` keeps its copy of a bucket's records (stream ``MIGRATE_<bucket>``)."""


async def _stream_exists(js: JetStreamContext, name: str) -> bool:
    try:
        await js.stream_info(name)
    except js_errors.NotFoundError:
        return False
    return True


async def migrate_bucket(js: JetStreamContext, bucket: str, replicas: int = 1) -> int:
    """Moves KV bucket ``bucket`` off a stream that denies deletes, onto an erasable one.

    JetStream cannot clear ``deny_delete`` on a stream, so the bucket is made anew: each key's
    current record is copied into a stream of its own (``MIGRATE_<bucket>``), which is then
    marked complete; the bucket's stream is deleted and declared erasable; the records are put
    back; the copy is deleted last. A crash at any step is finished by the next call, from the
    copy once it is complete (and from the bucket otherwise). Older revisions and deleted keys
    are not carried over. Run it while no service writes to the bucket (the launchers do, before
    the services start).

    Returns:
        How many records were put back.
    """
    kv_stream, copy = f"KV_{bucket}", f"MIGRATE_{bucket}"
    root = f"{MIGRATE_ROOT}.{bucket}"
    done = f"{root}.done"
    complete = False
    if await _stream_exists(js, copy):
        info = await js.stream_info(copy, subjects_filter=done)
        complete = bool(info.state.subjects)
        if not complete:
            await js.delete_stream(copy)  # a copy cut short: the bucket still holds everything
    if not complete:
        await js.add_stream(
            config=js_api.StreamConfig(
                name=copy, subjects=[f"{root}.>"], storage=js_api.StorageType.FILE, num_replicas=replicas
            )
        )
        kv = await js.key_value(bucket)
        for key in await bucket_keys(js, bucket):
            try:
                entry = await kv.get(key)
            except (js_errors.KeyNotFoundError, js_errors.KeyDeletedError):
                continue
            if entry.value is not None and entry.operation is None:
                await js.publish(f"{root}.k.{entry.key}", entry.value, stream=copy)
        await js.publish(done, b"", stream=copy)
    if await _stream_exists(js, kv_stream) and (await js.stream_info(kv_stream)).config.deny_delete:
        await js.delete_stream(kv_stream)
    if not await _stream_exists(js, kv_stream):
        await js.add_stream(config=kv_stream_config(bucket, replicas))
    kv = await js.key_value(bucket)
    moved, sequence = 0, 1
    while True:
        try:
            msg = await js.get_msg(copy, seq=sequence, subject=f"{root}.k.>", next=True)
        except js_errors.NotFoundError:
            break
        await kv.put((msg.subject or "")[len(f"{root}.k.") :], msg.data or b"")
        moved += 1
        sequence = (msg.seq or sequence) + 1
    await js.delete_stream(copy)
    log.info("KV bucket %s moved onto an erasable stream: %d records", bucket, moved)
    return moved


def platform_streams() -> list[str]:
    """The names of every stream the topology declares: streams, KV buckets' and object stores'."""
    names = [c.name or "" for c in stream_configs()]
    return names + [f"KV_{b}" for b in KV_BUCKETS] + [f"OBJ_{b}" for b in OBJECT_BUCKETS]


class StreamNotLoaded(RuntimeError):
    """Streams of the platform whose files are in nats-server's store but which it did not load."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"nats-server did not load {', '.join(names)} from its store")
        self.names = names


async def declare_topology(
    js: JetStreamContext, replicas: int = 1, migrate: bool = False, stored: Collection[str] = ()
) -> None:
    """Creates or updates every stream, KV bucket and object store. Idempotent.

    A KV bucket declared before buckets were erasable keeps JetStream's ``deny_delete``
    (it cannot be cleared). With ``migrate`` (no service running: the launchers' start) it is
    moved onto an erasable stream (:func:`migrate_bucket`); without, it is left so, with a
    warning, and deletions there purge without erasing (docs/security.md, "Deletion").

    ``stored``: the streams whose files the server's store holds (a launcher that sees the store
    passes them). One of ours among them that the server did not load (it could not read its
    files: a disk that filled up) raises :class:`StreamNotLoaded` before anything is declared: made
    anew, it would be empty, and everything it held lost without a word.
    """
    unloaded = [name for name in platform_streams() if name in stored and not await _stream_exists(js, name)]
    if unloaded:
        raise StreamNotLoaded(unloaded)
    for config in stream_configs(replicas):
        try:
            await js.add_stream(config=config)
        except js_errors.BadRequestError:
            # Exists with another config: bring it to ours.
            await js.update_stream(config=config)
    for bucket in KV_BUCKETS:
        config = kv_stream_config(bucket, replicas)
        if migrate and await _stream_exists(js, f"MIGRATE_{bucket}"):
            await migrate_bucket(js, bucket, replicas)  # a move cut short: finished first
        try:
            await js.add_stream(config=config)
        except js_errors.BadRequestError:
            existing = (await js.stream_info(config.name or "")).config
            if existing.deny_delete and migrate:
                await migrate_bucket(js, bucket, replicas)
            elif existing.deny_delete:
                log.warning(
                    "KV bucket %s was declared before buckets were erasable: deleted records are purged, "
                    "not erased, in it until it is moved (with the services stopped: "
                    "python -m lepton_platform.nats_users declare --migrate-buckets; docs/security.md, Deletion)",
                    bucket,
                )
                config.deny_delete = True
            await js.update_stream(config=config)
    for bucket in OBJECT_BUCKETS:
        await js.create_object_store(bucket, config=js_api.ObjectStoreConfig(bucket=bucket, replicas=replicas))


#: How often a quiet bucket watch looks whether its connection was re-made meanwhile (a local check).
RECONNECT_CHECK_S = 0.25


def _connection_of(kv: KeyValue) -> NATS:
    """The connection ``kv`` works through (nats-py keeps it there and offers no accessor)."""
    connection: NATS = kv._js._nc
    return connection


async def follow_bucket(
    kv: KeyValue,
    apply: Callable[[str, bytes | None], None],
    loaded: asyncio.Event,
    what: str,
    retry_s: float = 1.0,
) -> None:
    """Calls ``apply(key, value)`` for every entry of ``kv``, then for each change (``None`` for a
    deleted key), until cancelled; how a process keeps a bucket's records in memory.

    ``loaded`` is set once the entries there were at the start are in. A watch that ends (the
    connection was lost for good) is started again, after ``retry_s``, from the bucket's current state;
    so is a watch whose connection was re-made. nats-server keeps a watch's consumer in memory only, so
    a restarted server has none and sends the watch nothing more: nats-py notices only after two idle
    heartbeats are missed, and meanwhile (10-20 s) a key revoked was still accepted.
    """
    connection = _connection_of(kv)
    while True:
        try:
            reconnects = connection.stats["reconnects"]
            watcher = await kv.watchall(include_history=False)
            try:
                while connection.stats["reconnects"] == reconnects:
                    try:
                        entry = await watcher.updates(timeout=RECONNECT_CHECK_S)
                    except nats_errors.TimeoutError:
                        continue  # quiet: look at the connection again
                    if entry is None:
                        loaded.set()  # the end of the values there were at the start
                        continue
                    if not isinstance(entry, KeyValue.Entry):
                        break  # the watcher was stopped
                    deleted = entry.operation is not None or entry.value is None
                    apply(entry.key, None if deleted else entry.value)
                else:
                    log.info("watching %s again: the NATS connection was re-made", what)
                    continue
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watch of %s failed; watching again", what)
        await asyncio.sleep(retry_s)


#: nats-server's error code for a failed message delete: on a stream with ``deny_delete``
#: ("message delete not permitted"), or of a message deleted meanwhile ("no message found").
DELETE_DENIED = 10057
#: nats-server's error code for a message delete of a sequence already gone (a concurrent erase).
SEQUENCE_NOT_FOUND = 10043


class EraseRefused(Exception):
    """The stream refuses message deletes (``deny_delete``): its messages can be purged, not erased."""


async def erase_messages(js: JetStreamContext, stream: str, subject: str) -> int:
    """Erases every message of ``stream`` on ``subject`` (a filter: ``*`` and ``>`` allowed).

    A purge (``kv.purge``, nats-py's object delete, ``purge_stream``) only marks messages
    deleted: their bytes stay in the block file until nats-server compacts the block, which
    it never does to a stream's newest one. A message delete (without ``no_erase``)
    overwrites the record with random bytes in place first: nothing of it stays on disk.

    Returns:
        How many messages were erased.

    Raises:
        EraseRefused: the stream denies message deletes (nothing was erased).
    """
    erased, sequence = 0, 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=sequence, subject=subject, next=True)
        except js_errors.NotFoundError:
            return erased
        if msg.seq is None:  # typed optional by nats-py; a message the server found has one
            return erased
        try:
            await js.delete_msg(stream, msg.seq)
        except js_errors.NotFoundError:
            pass  # removed meanwhile (a limit, a concurrent erase): gone either way
        except js_errors.APIError as exc:
            description = exc.description or ""
            if exc.err_code == DELETE_DENIED and "not permitted" in description:
                raise EraseRefused(f"stream {stream} denies message deletes") from exc
            # Erased meanwhile by another eraser (two services erasing one store's objects of a
            # deleted tenant): gone either way.
            gone = exc.err_code == SEQUENCE_NOT_FOUND or (exc.err_code == DELETE_DENIED and "no message" in description)
            if not gone:
                raise
        else:
            erased += 1
        sequence = msg.seq + 1


def sha256_digest(data: bytes) -> str:
    """The digest format used in every :class:`ObjectRefRecord`: ``sha256:<hex>``."""
    return sha256_hex(hashlib.sha256(data))


def sha256_hex(sha: hashlib._Hash) -> str:
    """A finished SHA-256 (``hashlib.sha256(...)``) in the format of :func:`sha256_digest`."""
    return "sha256:" + sha.hexdigest()


class ObjectRefRecord(BaseModel):
    """Where an object lives and what its bytes hash to."""

    bucket: str
    name: str
    digest: str
    size: int


class ObjectStore:
    """Object store access that verifies digests and reads in one pass.

    Writes use ~1 MB chunks; reads assemble the chunks once into a preallocated
    buffer (nats-py's ``.data`` path concatenates ``bytes``, which is quadratic).
    """

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def put(self, bucket: str, name: str, data: bytes) -> ObjectRefRecord:
        """Stores ``data`` under ``name``; a second put of the same bytes stores nothing.

        Written in nats-py's object store layout (chunks on ``$O.<bucket>.C.<nuid>``, then the
        object's info on ``$O.<bucket>.M.<name>`` rolling up the one before, then the chunks of the one
        before purged), so nats-py and the ``nats`` CLI read it, but faster than nats-py's ``put``, which
        awaits each chunk's ack before sending the next and hashes the bytes once more: here up to
        :data:`PUT_WINDOW` chunks are in flight, and the one SHA-256 pass runs in a thread meanwhile.
        A chunk the store refuses (full, away) fails the put, and the chunks already sent are purged.
        """
        store = await self._js.object_store(bucket)
        hashing = asyncio.create_task(asyncio.to_thread(hashlib.sha256, data))
        try:
            before: js_api.ObjectInfo | None = await store.get_info(name)
        except js_errors.ObjectNotFoundError:
            before = None
        if before is not None and (before.headers or {}).get("Lepton-Digest") == sha256_hex(await hashing):
            return ObjectRefRecord(bucket=bucket, name=name, digest=sha256_hex(await hashing), size=len(data))
        nuid = uuid.uuid4().hex
        chunks = f"$O.{bucket}.C.{nuid}"
        try:
            sent = await self._publish_chunks(f"OBJ_{bucket}", chunks, memoryview(data))
            digest = sha256_hex(await hashing)
            info = js_api.ObjectInfo(
                name=name,
                bucket=bucket,
                nuid=nuid,
                size=len(data),
                mtime=datetime.now(UTC).isoformat(),
                chunks=sent,
                digest="SHA-256=" + base64.urlsafe_b64encode((await hashing).digest()).decode(),
                headers={"Lepton-Digest": digest},
                options=js_api.ObjectMetaOptions(max_chunk_size=CHUNK_SIZE),
            )
            meta = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
            await self._js.publish(meta, json.dumps(info.as_dict()).encode(), headers={"Nats-Rollup": "sub"})
        except BaseException:
            hashing.cancel()
            with contextlib.suppress(Exception):
                await self._js.purge_stream(f"OBJ_{bucket}", subject=chunks)
            raise
        if before is not None and not before.deleted and before.nuid:
            await self._js.purge_stream(f"OBJ_{bucket}", subject=f"$O.{bucket}.C.{before.nuid}")
        return ObjectRefRecord(bucket=bucket, name=name, digest=digest, size=len(data))

    async def _publish_chunks(self, stream: str, subject: str, data: memoryview) -> int:
        """Publishes ``data`` in :data:`CHUNK_SIZE` chunks to ``subject`` of ``stream``, in order, up to
        :data:`PUT_WINDOW` awaiting their acks at a time; returns how many. Sent once each, by nats-py's own
        publish: a resend (the services' failover) could store a chunk out of order. A chunk that timed out
        on a stream that stopped writing raises :class:`~lepton_core.failover.StoreStalled`."""
        offsets = range(0, len(data), CHUNK_SIZE)
        connection = reconnects(self._js)
        window: deque[asyncio.Task[js_api.PubAck]] = deque()
        try:
            for offset in offsets:
                payload = bytes(data[offset : offset + CHUNK_SIZE])
                window.append(asyncio.ensure_future(JetStreamContext.publish(self._js, subject, payload)))
                await asyncio.sleep(0)  # the task sends now, so chunks leave in order
                if len(window) >= PUT_WINDOW:
                    await self._settled(stream, subject, window.popleft(), connection)
            while window:
                await self._settled(stream, subject, window.popleft(), connection)
        finally:
            # Every chunk sent is settled (stored or refused) before the caller purges the object's chunks:
            # nats-server runs a purge apart from the stream's writes, so a chunk still in flight could be
            # stored after it.
            await asyncio.gather(*window, return_exceptions=True)
        return len(offsets)

    async def _settled(self, stream: str, subject: str, chunk: asyncio.Task[js_api.PubAck], connection: int) -> None:
        try:
            await chunk
        except TimeoutError as exc:
            if (instead := await stalled(self._js, stream, subject, self._js._timeout, connection)) is not None:
                raise instead from exc
            raise

    async def get(self, ref: ObjectRefRecord) -> bytes:
        """Reads an object and checks its digest; a mismatch is a :class:`DataIntegrityError`.

        nats-py's ``get`` reads chunks through a flow-controlled ordered consumer and
        hands each chunk to a thread (``writeinto``) or concatenates bytes (``.data``):
        about 30 MB/s here. An ephemeral pull consumer fetching chunks in batches into
        one preallocated buffer reads the same chunks several times faster.
        """
        store = await self._js.object_store(ref.bucket)
        try:
            info = await store.get_info(ref.name)
        except js_errors.ObjectNotFoundError as exc:
            raise NotFound(f"object {ref.bucket}/{ref.name} does not exist") from exc
        data = await self._read_chunks(ref.bucket, info.nuid or "", info.size or 0, info.chunks or 0)
        actual = sha256_digest(data)
        if actual != ref.digest:
            raise DataIntegrityError(
                f"object {ref.bucket}/{ref.name} has digest {actual}, expected {ref.digest}; "
                "it was modified or corrupted after it was written"
            )
        return data

    async def delete(self, ref: ObjectRefRecord) -> bool:
        """Deletes an object; False when it was already gone."""
        store = await self._js.object_store(ref.bucket)
        try:
            await store.delete(ref.name)
        except js_errors.ObjectNotFoundError:
            return False
        return True

    async def erase(self, ref: ObjectRefRecord) -> bool:
        """Erases an object: its chunks and every record of its metadata, overwritten on disk.

        Chunks go first: a retry after a failure part-way finds the metadata, and with it the
        chunks, again. Returns False when there was no such object.
        """
        return await self.erase_name(ref.bucket, ref.name)

    async def erase_name(self, bucket: str, name: str) -> bool:
        """:meth:`erase` by the object's bucket and name."""
        store = await self._js.object_store(bucket)
        try:
            info = await store.get_info(name, show_deleted=True)
        except js_errors.ObjectNotFoundError:
            return False
        stream = f"OBJ_{bucket}"
        if info.nuid:
            await erase_messages(self._js, stream, f"$O.{bucket}.C.{info.nuid}")
        meta = base64.urlsafe_b64encode(name.encode()).decode()
        await erase_messages(self._js, stream, f"$O.{bucket}.M.{meta}")
        return True

    async def names(self, bucket: str, prefix: str = "") -> list[str]:
        """The names starting with ``prefix`` that have metadata in ``bucket`` (deleted objects' too), sorted.

        Read from the stream's subjects, as :meth:`RecordStore.keys` does: nats-py's ``list``
        watches, and a watch can end before every entry has arrived.
        """
        root = f"$O.{bucket}.M."
        info = await self._js.stream_info(f"OBJ_{bucket}", subjects_filter=f"{root}>")
        names = (base64.urlsafe_b64decode(s[len(root) :]).decode() for s in (info.state.subjects or {}))
        return sorted(n for n in names if n.startswith(prefix))

    async def _read_chunks(self, bucket: str, nuid: str, size: int, chunks: int) -> bytes:
        if size == 0:
            return b""
        sub = await self._js.pull_subscribe(
            f"$O.{bucket}.C.{nuid}",
            stream=f"OBJ_{bucket}",
            config=js_api.ConsumerConfig(
                ack_policy=js_api.AckPolicy.NONE,
                deliver_policy=js_api.DeliverPolicy.ALL,
                inactive_threshold=30.0,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        buf = bytearray(size)
        view = memoryview(buf)
        offset = received = 0
        try:
            while received < chunks:
                for msg in await sub.fetch(min(READ_BATCH, chunks - received), timeout=10.0):
                    end = offset + len(msg.data)
                    if end > size:
                        raise DataIntegrityError(f"object in {bucket} is larger than its recorded {size} bytes")
                    view[offset:end] = msg.data
                    offset = end
                    received += 1
        finally:
            view.release()
            await sub.unsubscribe()
        if offset != size:
            raise DataIntegrityError(f"object in {bucket} has {offset} bytes, expected {size}")
        return bytes(buf)


class RecordStore(Store[R]):
    """Typed JSON records in one KV bucket, with optimistic concurrency (the default :class:`Store`)."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str, model: type[R]) -> None:
        self._js = js
        self._kv = kv
        self._bucket = bucket
        self._model = model

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, model: type[R]) -> RecordStore[R]:
        return cls(js, await js.key_value(bucket), bucket, model)

    async def get(self, key: str) -> Versioned[R] | None:
        try:
            entry = await self._kv.get(key)
        except (js_errors.KeyNotFoundError, js_errors.KeyDeletedError):
            return None
        if entry.value is None:
            return None
        return Versioned(self._model.model_validate_json(entry.value), entry.revision or 0)

    async def create(self, key: str, value: R) -> int:
        """Writes only if the key is absent; :class:`Conflict` otherwise."""
        try:
            return await self._kv.create(key, value.model_dump_json().encode())
        except js_errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"{key} already exists") from exc

    async def update(self, key: str, value: R, revision: int) -> int:
        """Writes only if the key is still at ``revision``; :class:`Conflict` otherwise."""
        try:
            return await self._kv.update(key, value.model_dump_json().encode(), last=revision)
        except js_errors.KeyWrongLastSequenceError as exc:
            raise Conflict(f"{key} changed concurrently") from exc

    async def put(self, key: str, value: R) -> int:
        return await self._kv.put(key, value.model_dump_json().encode())

    async def delete(self, key: str) -> None:
        """Deletes a key (a tombstone in the bucket's history)."""
        await self._kv.delete(key)

    async def erase(self, key: str) -> None:
        """Erases every revision of ``key`` (:func:`erase_messages`): no tombstone, no history, no bytes.

        In a bucket that denies deletes (declared before buckets were erasable) it purges the
        key instead, which leaves the old revisions' bytes on disk until nats-server compacts
        their block, and says so in the log.
        """
        try:
            await erase_messages(self._js, f"KV_{self._bucket}", f"$KV.{self._bucket}.{key}")
        except EraseRefused:
            log.warning("KV bucket %s denies deletes: purging %s without erasing its bytes", self._bucket, key)
            await self._kv.purge(key)

    async def watch(self, key: str) -> AsyncIterator[R]:
        """The record now (if any) and after every change; runs until the caller stops."""
        watcher = await self._kv.watch(key, include_history=False)
        try:
            async for entry in watcher:
                if entry is None or entry.value is None or entry.operation is not None:
                    continue  # the end-of-initial-values marker, or a delete
                yield self._model.model_validate_json(entry.value)
        finally:
            await watcher.stop()

    async def keys(self, pattern: str) -> list[str]:
        """Keys matching a NATS subject pattern (``tenant.v.*``), sorted (deleted ones included)."""
        return await bucket_keys(self._js, self._bucket, pattern)
