"""What ``sync_interval: always`` costs the embedded JetStream store, against nats-server's default.

Two real ``nats-server -js`` (:class:`~lepton_platform.processes.NatsServer`, each with its own store
on the same disk, encrypted as the platform's is), one per setting, measured in the same run:

1. **Serial**: small events published one at a time, each awaiting its ack (what a service's
   handler does: ``events.publish`` of a ``DatasetVersionCreated`` on the ``EVENTS`` stream).
2. **Concurrent**: the same events with ``WINDOW`` publishes in flight at once (many handlers at a time).
3. **Dataset put**: one 8 MiB object into the ``datasets`` object store (``ObjectStore.put``, 1 MiB chunks).
4. **Pipeline** (``--pipeline``, about 3 minutes more): on an embedded platform of each setting (data,
   trainer, evaluator, registry), sklearn's diabetes data uploaded with the SDK and three ``Ridge`` fits
   one after another, each until its registry version is there: what a user waits for.

Each repetition runs both settings back to back, alternating which goes first; the table shows
medians, events a second, and the ratio ``always / default`` (``paired``: the min-max of the
per-repetition ratios, the noise band). Nothing is asserted. Run with
``.venv/bin/python bench/load/nats_sync_bench.py`` (about 15 s); ``--json PATH`` writes every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from lepton.events.v1 import events_pb2 as ev
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import machine_info
from _table import render

from lepton_core import events
from lepton_core.bus import ObjectStore, connect
from lepton_core.nats_identity import ADMIN
from lepton_platform.processes import SYNC_INTERVAL, NatsServer, nats_server_binary

#: nats-server's own default: fsync every two minutes.
DEFAULT = None
SETTINGS: dict[str, str | None] = {"default (2 min)": DEFAULT, f"sync_interval: {SYNC_INTERVAL}": SYNC_INTERVAL}
SERIAL = 500
CONCURRENT = 2000
WINDOW = 64
OBJECT_BYTES = 8 * 1024 * 1024
REPETITIONS = 5
PIPELINE_REPETITIONS = 2
PIPELINE = "pipeline: upload + 3 fits"


def event(n: int) -> ev.DatasetVersionCreated:
    return ev.DatasetVersionCreated(tenant="bench", dataset_name=f"d-{n}", row_count=n, origin="upload")


async def publish_serial(js: JetStreamContext, count: int) -> None:
    run = uuid.uuid4().hex
    for n in range(count):
        await events.publish(js, event(n), tenant="bench", event_id=f"{run}-{n}", source="/bench")


async def publish_concurrent(js: JetStreamContext, count: int) -> None:
    run = uuid.uuid4().hex
    window = asyncio.Semaphore(WINDOW)

    async def one(n: int) -> None:
        async with window:
            await events.publish(js, event(n), tenant="bench", event_id=f"{run}-{n}", source="/bench")

    await asyncio.gather(*(one(n) for n in range(count)))


async def put_object(js: JetStreamContext, data: bytes) -> None:
    await ObjectStore(js).put("datasets", f"bench-{uuid.uuid4().hex}", data)


async def timed(work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


async def measure(servers: dict[str, NatsServer]) -> dict[str, dict[str, list[float]]]:
    """Every repetition's seconds: ``times[benchmark][setting]``."""
    conns: dict[str, NATS] = {}
    for label, server in servers.items():
        conns[label] = await connect(server.url, f"bench-{label}", seed_file=str(server.seed_file(ADMIN)))
    data = os.urandom(OBJECT_BYTES)
    benchmarks: dict[str, Callable[[JetStreamContext], Awaitable[None]]] = {
        f"serial publish x{SERIAL}": lambda js: publish_serial(js, SERIAL),
        f"concurrent publish x{CONCURRENT} ({WINDOW} in flight)": lambda js: publish_concurrent(js, CONCURRENT),
        f"dataset put {OBJECT_BYTES // (1024 * 1024)} MiB": lambda js: put_object(js, data),
    }
    times: dict[str, dict[str, list[float]]] = {name: {label: [] for label in servers} for name in benchmarks}
    try:
        for rep in range(REPETITIONS + 1):  # the first is a warm-up
            order = list(servers) if rep % 2 == 0 else list(reversed(servers))
            for name, work in benchmarks.items():
                for label in order:
                    js = conns[label].jetstream()
                    seconds = await timed(lambda js=js, work=work: work(js))  # type: ignore[misc]
                    if rep > 0:
                        times[name][label].append(seconds)
    finally:
        for nc in conns.values():
            await nc.close()
    return times


def pipeline(workdir: Path, sync: str | None) -> float:
    """Seconds for an SDK upload of the diabetes data and three Ridge fits on a fresh platform (its start not
    counted)."""
    import polars as pl
    from sklearn.datasets import load_diabetes

    import lepton_ai as la
    from lepton_platform.embedded import EmbeddedPlatform

    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    services = ("data", "trainer", "evaluator", "registry")
    key = uuid.uuid4().hex
    with (
        EmbeddedPlatform(workdir, api_key=key, services=services, triton=False, nats_sync_interval=sync) as platform,
        la.Client(key, platform.url) as client,
    ):
        started = time.perf_counter()
        version = client.datasets.upload(frame, name="bench-sync", progress=False).version_id
        for n in range(3):
            la.models.Ridge().fit(client.datasets.get(version), "target", model_name=f"bench-{n}", progress=False)
        return time.perf_counter() - started


def measure_pipelines(root: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label in SETTINGS}
    for rep in range(PIPELINE_REPETITIONS):
        order = list(SETTINGS) if rep % 2 == 0 else list(reversed(SETTINGS))
        for label in order:
            times[label].append(pipeline(root / f"platform-{rep}-{len(times[label])}-{label[:7]}", SETTINGS[label]))
    return times


def report(times: dict[str, dict[str, list[float]]]) -> list[list[str]]:
    baseline, candidate = list(SETTINGS)
    rows = [["benchmark", *(f"{label} median" for label in SETTINGS), "ratio", "paired"]]
    for name, by_setting in times.items():
        medians = {label: statistics.median(by_setting[label]) for label in SETTINGS}
        per_rep = [c / b for b, c in zip(by_setting[baseline], by_setting[candidate], strict=True)]
        count = SERIAL if name.startswith("serial") else CONCURRENT if name.startswith("concurrent") else 0
        cells = [
            f"{medians[label] * 1000:.0f} ms" + (f" ({count / medians[label]:,.0f}/s)" if count else "")
            for label in SETTINGS
        ]
        ratio = medians[candidate] / medians[baseline]
        rows.append([name, *cells, f"{ratio:.2f}x", f"{min(per_rep):.2f}-{max(per_rep):.2f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write every repetition's seconds and the machine here")
    parser.add_argument("--pipeline", action="store_true", help="also time SDK fits on a platform of each setting")
    parser.add_argument("--dir", type=Path, help="where the stores go (the disk measured); a temp folder by default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nats-sync-", dir=args.dir) as tmp:
        servers: dict[str, NatsServer] = {}
        try:
            for n, (label, sync) in enumerate(SETTINGS.items()):
                servers[label] = NatsServer(Path(tmp) / f"nats-{n}", sync_interval=sync)
            times = asyncio.run(measure(servers))
        finally:
            for server in servers.values():
                server.stop()
        if args.pipeline:
            times[PIPELINE] = measure_pipelines(Path(tmp))
    print(render(report(times)))
    print(
        f"\n{REPETITIONS} repetitions after a warm-up ({PIPELINE_REPETITIONS} of the pipeline, none before); "
        f"stores on {args.dir or tempfile.gettempdir()}"
    )
    if args.json:
        version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=False)
        info = machine_info(("nats-py",), nats_server=version.stdout.strip())
        args.json.write_text(json.dumps({"machine": info, "seconds": times}, indent=1) + "\n")


if __name__ == "__main__":
    main()
