"""The fault tests' view of the JetStream store: an admin connection on a loop of its own, a writer that
publishes through an outage, and reads of whole streams to compare before and after."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from lepton_core.bus import JOBS_STREAM, connect
from lepton_platform.embedded import EmbeddedPlatform

T = TypeVar("T")

#: A pause between two acknowledged writes that :attr:`Writer.gaps` counts as an outage.
GAP_S = 0.5
#: The stream a :class:`Writer` publishes to (on the platform's store, beside its streams).
PROBE_STREAM = "FAULTS_PROBE"


async def add_probe_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """:data:`PROBE_STREAM`, on file, de-duplicating by ``Nats-Msg-Id`` for two minutes, on ``replicas`` nodes."""
    await js.add_stream(
        config=js_api.StreamConfig(
            name=PROBE_STREAM,
            subjects=["faults.probe.>"],
            storage=js_api.StorageType.FILE,
            duplicate_window=120.0,
            num_replicas=replicas,
        )
    )


class Loop:
    """An asyncio loop on a thread of its own, with a NATS connection as the admin identity: the test's
    view of the store, reconnecting through the outage like the services' connections."""

    def __init__(self, platform: EmbeddedPlatform) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="faults-nats", daemon=True)
        self.thread.start()
        self.nc: NATS = self.run(connect(platform.nats_url, "faults-nats", seed_file=str(platform.nats_admin_seed)))
        # nats-py's own context, not the services' (lepton_core.failover.FailoverJetStream): the writer sees each
        # write the store does not take, rather than the services' riding through a failover.
        self.js: JetStreamContext = JetStreamContext(self.nc)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.run(self.nc.close(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Writer:
    """Publishes one small write after another to :data:`PROBE_STREAM`, each awaiting its ack, until stopped;
    a write that gets no ack (the server is down) is sent again under the same ``Nats-Msg-Id``."""

    js: JetStreamContext
    acked: dict[str, int] = field(default_factory=dict)
    """Each acknowledged write's id and the stream sequence the ack named."""
    unanswered: int = 0
    gaps: list[float] = field(default_factory=list)
    """Each time between two acknowledged writes over :data:`GAP_S`, in order: how long the store took none."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        n = 0
        last = time.monotonic()
        while not self.stop.is_set():
            write_id = f"write-{n}"
            try:
                ack = await self.js.publish(
                    f"faults.probe.{n}", write_id.encode(), timeout=1.0, headers={"Nats-Msg-Id": write_id}
                )
            except Exception:  # no ack: the server is down or restarting; the same write again
                self.unanswered += 1
                await asyncio.sleep(0.05)
                continue
            now = time.monotonic()
            if self.acked and now - last > GAP_S:
                self.gaps.append(now - last)
            last = now
            self.acked[write_id] = ack.seq
            n += 1
            await asyncio.sleep(0.002)


def lost_writes(writer: Writer, probe: dict[int, tuple[str, str]]) -> dict[str, int]:
    """The writes ``writer`` saw acknowledged that are not at the sequence their ack named in ``probe``."""
    ids = {seq: subject.rsplit(".", 1)[-1] for seq, (subject, _) in probe.items()}
    return {write_id: seq for write_id, seq in writer.acked.items() if ids.get(seq) != write_id.split("-")[1]}


async def stored(js: JetStreamContext, stream: str) -> dict[int, tuple[str, str]]:
    """Every message of ``stream`` now: its sequence, subject and the sha256 of its body and headers."""
    info = await js.stream_info(stream)
    out: dict[int, tuple[str, str]] = {}
    sequence, last = info.state.first_seq, info.state.last_seq
    while sequence <= last:
        try:
            msg = await js.get_msg(stream, seq=sequence, subject=">", next=True)
        except js_errors.NotFoundError:
            break
        if msg.seq is None or msg.seq > last:
            break
        body = (msg.data or b"") + repr(sorted((msg.headers or {}).items())).encode()
        out[msg.seq] = (msg.subject or "", hashlib.sha256(body).hexdigest())
        sequence = msg.seq + 1
    return out


async def store_snapshot(js: JetStreamContext) -> dict[str, dict[int, tuple[str, str]]]:
    """Every stream of the platform's (the job queue aside: a work queue drops what is done), read whole."""
    names = [info.config.name or "" for info in await js.streams_info()]
    return {name: await stored(js, name) for name in names if name not in (JOBS_STREAM, PROBE_STREAM)}


def lost_records(
    before: dict[str, dict[int, tuple[str, str]]], after: dict[str, dict[int, tuple[str, str]]]
) -> list[str]:
    """What of ``before`` (a :func:`store_snapshot`) ``after`` no longer holds: a stream gone, a message lost
    or changed; of a KV bucket, a key's record gone with no newer revision in its place."""
    lost = [f"stream {name}" for name in before.keys() - after.keys()]
    for stream, messages in before.items():
        now = after.get(stream, {})
        if stream.startswith("KV_"):
            latest = {subject: seq for seq, (subject, _) in sorted(now.items())}
            lost += [
                f"{stream}: {subject} at {seq}"
                for seq, (subject, digest) in messages.items()
                if latest.get(subject, 0) <= seq and now.get(seq) != (subject, digest)
            ]
        else:
            lost += [f"{stream}: message {seq}" for seq, msg in messages.items() if now.get(seq) != msg]
    return lost


def poll(check: Any, timeout: float, what: str) -> Any:
    """``check()`` until it returns something true (exceptions count as not yet), within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout:.0f} s (last: {last!r})")
