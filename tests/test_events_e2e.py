"""``client.events.subscribe`` and ``lepton events tail`` against the running platform."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from lepton.events.v1 import events_pb2

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import free_port
from lepton_platform.testing import lepton_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
DOCS = Path(__file__).resolve().parents[1] / "docs"
#: Longest wait for an event that is already on its way.
WAIT_S = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def frame() -> pl.DataFrame:
    return pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "target": [0.5, 1.0, 1.5, 2.0]})


@pytest.fixture
def client(platform: EmbeddedPlatform) -> Iterator[la.Client]:
    with la.Client(platform.api_key, platform.url) as c:
        yield c


@pytest.fixture
def intruder(platform: EmbeddedPlatform) -> Iterator[la.Client]:
    key = platform.key_for("intruder")
    with la.Client(key, platform.url) as c:
        yield c


@contextlib.contextmanager
def deadline(stream: la.EventStream, seconds: float = WAIT_S) -> Iterator[la.EventStream]:
    """Closes ``stream`` after ``seconds``: a ``for`` over it then ends instead of waiting forever."""
    timer = threading.Timer(seconds, stream.close)
    timer.start()
    try:
        yield stream
    finally:
        timer.cancel()


def first(stream: la.EventStream, name: str, subject: str) -> la.PlatformEvent:
    found = next((ev for ev in stream if ev.name == name and ev.subject == subject), None)
    assert found is not None, f"no {name} for {subject} within {WAIT_S} s"
    return found


def test_subscribe_then_upload_gives_the_typed_event(platform: EmbeddedPlatform, client: la.Client) -> None:
    name = unique("events")
    with client.events.subscribe("dataset.version.created") as events, deadline(events):
        version = client.datasets.upload(frame(), name=name, progress=False)
        ev = first(events, "dataset.version.created", version.version_id)
    assert isinstance(ev.data, events_pb2.DatasetVersionCreated)
    assert (ev.data.dataset_name, ev.data.row_count, ev.data.lineage.dataset_version_id) == (
        name,
        4,
        version.version_id,
    )
    assert (ev.type, ev.source, ev.tenant) == ("ai.lepton.dataset.version.created.v1", "/lepton/data", platform.tenant)
    assert ev.id == f"dataset.version.created:{platform.tenant}:{version.version_id}"
    assert abs(ev.time - datetime.now(UTC)) < timedelta(minutes=1)
    assert re.fullmatch(r"[0-9a-f]{32}", ev.trace_id)
    as_json = json.loads(json.dumps(ev.to_dict()))
    assert as_json["data"]["dataset_name"] == name and as_json["data"]["row_count"] == "4"  # int64: a string
    assert as_json["time"].endswith("Z") and as_json["name"] == "dataset.version.created"
    assert events.closed


async def test_async_iteration_follows_a_pattern(client: la.Client) -> None:
    name = unique("events-async")
    seen: list[str] = []
    async with asyncio.timeout(WAIT_S), client.events.subscribe("dataset.>") as events:
        version = await asyncio.to_thread(client.datasets.upload, frame(), name=name, progress=False)
        async for ev in events:
            if ev.data.lineage.dataset_version_id == version.version_id:
                seen.append(ev.name)
            if "dataset.version.created" in seen:
                break
    # Stream order: the dataset first, then its version.
    assert seen == ["dataset.created", "dataset.version.created"]
    assert events.closed


def test_only_new_events_without_since_and_a_replay_with_it(client: la.Client) -> None:
    before = datetime.now(UTC)
    old = client.datasets.upload(frame(), name=unique("events-old"), progress=False)
    with client.events.subscribe("dataset.version.created") as live, deadline(live):
        new = client.datasets.upload(frame(), name=unique("events-new"), progress=False)
        assert next(live).subject == new.version_id  # not the version uploaded before subscribing
    replayed = client.events.subscribe("dataset.version.created", since=before, limit=2)
    with deadline(replayed):
        assert [ev.subject for ev in replayed] == [old.version_id, new.version_id]
    # A timedelta counts back from now; a limit ends the stream by itself.
    recent = list(client.events.subscribe("dataset.>", since=timedelta(minutes=5), limit=3))
    assert len(recent) == 3 and all(ev.time > datetime.now(UTC) - timedelta(minutes=6) for ev in recent)


def test_another_tenant_sees_none_of_them(platform: EmbeddedPlatform, client: la.Client, intruder: la.Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    ours = client.datasets.upload(frame(), name=unique("events-ours"), progress=False)
    theirs = intruder.datasets.upload(frame(), name=unique("events-theirs"), progress=False)
    sentinel = client.datasets.upload(frame(), name=unique("events-sentinel"), progress=False)
    # Stream order is publish order: a reader that reaches the last upload it may see has
    # passed every event before it, the other tenant's included.
    for reader, tenant, last, hidden in (
        (intruder, "intruder", theirs, ours),
        (client, platform.tenant, sentinel, theirs),
    ):
        with reader.events.subscribe(since=before) as stream, deadline(stream):
            seen = []
            for ev in stream:
                seen.append(ev)
                if ev.subject == last.version_id:
                    break
        assert seen and seen[-1].subject == last.version_id
        assert {ev.tenant for ev in seen} == {tenant}
        about = {ev.subject for ev in seen} | {ev.data.lineage.dataset_version_id for ev in seen}
        assert hidden.version_id not in about


def test_bad_requests_name_the_field(client: la.Client) -> None:
    with pytest.raises(la.InvalidArgument) as bad, client.events.subscribe("nosuch.*"):
        pass
    assert bad.value.field == "pattern"
    assert "event names start with dataset, deployment, evaluation, monitor, registry, training" in bad.value.message
    with pytest.raises(la.InvalidArgument, match=r"^pattern: 'registry\.>\.x'"):
        next(client.events.subscribe("registry.>.x"))  # plain iteration raises at the first event

    async def consume(pattern: str) -> None:
        async for _ in client.events.subscribe(pattern):
            pass

    async def enter(pattern: str) -> None:
        async with client.events.subscribe(pattern):
            pass

    with pytest.raises(la.InvalidArgument, match=r"training\.requested' matches no event"):
        asyncio.run(consume("training.requested"))  # the job queue: not an event to follow
    with pytest.raises(la.InvalidArgument, match=r"^pattern: 'registry\.version\*' has the token"):
        asyncio.run(enter("registry.version*"))
    with pytest.raises(la.InvalidArgument) as future:
        next(client.events.subscribe(since=datetime.now(UTC) + timedelta(days=1)))
    assert future.value.field == "since" and "is in the future" in future.value.message
    with pytest.raises(la.InvalidArgument, match="limit: must be at least 1"):
        client.events.subscribe(limit=0)
    with pytest.raises(la.Unauthenticated), la.Client("wrong-key", client.endpoints["data"]) as other:
        next(other.events.subscribe())
    with pytest.raises(la.Unavailable), la.Client("k", f"127.0.0.1:{free_port()}") as nowhere:
        nowhere.events.subscribe().__enter__()


def test_close_from_another_thread_ends_the_loop(client: la.Client) -> None:
    stream = client.events.subscribe("monitor.>")
    threading.Timer(0.5, stream.close).start()
    list(stream)  # returns: the loop ends when the stream is closed
    assert stream.closed

    async def mixed() -> None:
        await stream.__anext__()

    with pytest.raises(RuntimeError, match="iterated with for already"):
        asyncio.run(mixed())


def test_cli_tail(platform: EmbeddedPlatform, client: la.Client) -> None:
    before = datetime.now(UTC).isoformat()  # the same clock as the NATS server's: the upload comes after
    version = client.datasets.upload(frame(), name=unique("events-cli"), progress=False)
    args = ("events", "tail", "dataset.version.created", "--since", before, "--limit", "1")
    done = lepton_cli(platform, *args, "--output", "json")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    ev = json.loads(line)
    assert (ev["name"], ev["subject"], ev["tenant"]) == ("dataset.version.created", version.version_id, platform.tenant)
    assert ev["data"]["lineage"]["dataset_version_id"] == version.version_id
    table = lepton_cli(platform, *args[:3], "--since", "10m", "--limit", "1")
    assert table.returncode == 0, table.stderr
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  dataset\.version\.created +dataset dv_\w+\n", table.stdout)
    bad = lepton_cli(platform, "events", "tail", "nosuch")
    assert bad.returncode == 3 and "pattern: 'nosuch' matches no event" in bad.stderr
    assert lepton_cli(platform, "events", "tail", "--since", "yesterday").returncode == 2
    assert lepton_cli(platform, "events", "tail", "--limit", "0").returncode == 2


def test_cli_tail_stops_cleanly_on_ctrl_c(platform: EmbeddedPlatform, client: la.Client) -> None:
    client.datasets.upload(frame(), name=unique("events-ctrl-c"), progress=False)
    env = {**os.environ, "LEPTON_URL": platform.url, "LEPTON_API_KEY": platform.api_key}
    cli = Path(sys.executable).parent / "lepton"
    argv = [str(cli), "events", "tail", "dataset.version.created", "--since", "1h"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        assert "dataset.version.created" in proc.stdout.readline()  # replayed: it is following now
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr


def test_the_docs_example_runs(platform: EmbeddedPlatform) -> None:
    path = DOCS / "events.md"
    # The first block is the runnable example; the later one is a fragment for NATS clients.
    block = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(path), "exec"), {"URL": platform.url, "API_KEY": platform.api_key})
    printed = out.getvalue()
    assert re.search(r"dataset\.version\.created: events-demo-\w+, 4 rows, trace [0-9a-f]{32}", printed), printed
    assert "replayed it: True" in printed and "async: True" in printed, printed
