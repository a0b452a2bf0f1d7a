"""Lepton micro-benchmarks: our layer against the raw library path, measured in the same run.

Every benchmark times "ours" (the ``lepton_core`` call the services make) and a
"baseline" (the plain library call doing the same work) in alternating order,
after a warm-up, and reports medians, throughput and the ratio ours/baseline time.
Nothing is asserted about speed: the numbers are for reading, not for gating.

Run with ``make bench``. Prints a table and writes ``bench/results/latest.json``.
Then runs the data-service benchmarks of ``data_bench.py`` (ingest, read back, peak
memory; ``--no-data`` skips them) and adds their table and a ``"data"`` section.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import _machine
import data_bench
import skops.io as sio
from _table import render
from google.protobuf.message import Message
from lepton.events.v1 import events_pb2 as ev
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from nats.js import JetStreamContext
from opentelemetry import trace
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from lepton_core import events
from lepton_core.bus import ObjectStore, connect, declare_topology
from lepton_core.telemetry import setup_telemetry, shutdown_telemetry
from lepton_ml import artifacts
from lepton_ml.signing import Signer
from lepton_platform.processes import NatsServer, nats_server_binary

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
TENANT = "bench"
MB = 1024 * 1024

PUBLISH_N = 2000
PUBLISH_REPS = 5
OBJECT_SIZE = 32 * MB
OBJECT_REPS = 5
DECODE_N = 10_000
DECODE_REPS = 7
ARTIFACT_ROUNDS = 20
ARTIFACT_REPS = 5
WARMUP = 1


@dataclass
class Result:
    """One benchmark: per-repetition times (seconds) for ours and the baseline."""

    name: str
    ours: str
    baseline: str
    #: Units of work one repetition does (messages, MB, round trips), for throughput.
    work: float
    unit: str
    ours_s: list[float]
    baseline_s: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ours_median_s(self) -> float:
        return statistics.median(self.ours_s)

    @property
    def baseline_median_s(self) -> float:
        return statistics.median(self.baseline_s)

    @property
    def ratio(self) -> float:
        """Ours / baseline median time: 1.00 is parity, above 1 is ours slower."""
        return self.ours_median_s / self.baseline_median_s

    @property
    def paired_ratios(self) -> list[float]:
        """Ours / baseline per repetition (each pair ran back to back): the noise band."""
        return [o / b for o, b in zip(self.ours_s, self.baseline_s, strict=True)]

    def summary(self) -> dict[str, Any]:
        paired = self.paired_ratios
        return {
            **asdict(self),
            "ours_median_s": self.ours_median_s,
            "baseline_median_s": self.baseline_median_s,
            "ours_throughput": self.work / self.ours_median_s,
            "baseline_throughput": self.work / self.baseline_median_s,
            "throughput_unit": f"{self.unit}/s",
            "ratio": self.ratio,
            "paired_ratio_min": min(paired),
            "paired_ratio_max": max(paired),
        }


# --- timing ------------------------------------------------------------------------------------


async def measure_async(
    ours: Callable[[int], Awaitable[object]],
    baseline: Callable[[int], Awaitable[object]],
    reps: int,
    *,
    between: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[float], list[float]]:
    """Runs ours and the baseline back to back, ``WARMUP`` + ``reps`` times, alternating
    which goes first; ``between`` (untimed) runs before every timed call."""
    ours_s: list[float] = []
    base_s: list[float] = []
    for i in range(WARMUP + reps):
        pair = [(ours, ours_s), (baseline, base_s)]
        if i % 2:
            pair.reverse()
        for fn, out in pair:
            if between is not None:
                await between()
            gc.collect()
            t0 = time.perf_counter()
            await fn(i)
            elapsed = time.perf_counter() - t0
            if i >= WARMUP:
                out.append(elapsed)
    return ours_s, base_s


def measure_sync(
    ours: Callable[[], object], baseline: Callable[[], object], reps: int
) -> tuple[list[float], list[float]]:
    """The synchronous twin of :func:`measure_async`."""
    ours_s: list[float] = []
    base_s: list[float] = []
    for i in range(WARMUP + reps):
        pair = [(ours, ours_s), (baseline, base_s)]
        if i % 2:
            pair.reverse()
        for fn, out in pair:
            gc.collect()
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            if i >= WARMUP:
                out.append(elapsed)
    return ours_s, base_s


# --- 1. event publish ----------------------------------------------------------------------------


def _dataset_event(n: int) -> ev.DatasetVersionCreated:
    return ev.DatasetVersionCreated(tenant=TENANT, dataset_name="diabetes", row_count=n)


async def bench_publish(js: JetStreamContext) -> Result:
    message = _dataset_event(442)
    payload = message.SerializeToString()
    subject = events.spec_of(message).subject(TENANT)  # lepton.evt.bench.dataset.version.created
    run_id = uuid.uuid4().hex[:12]

    async def ours(rep: int) -> None:
        for i in range(PUBLISH_N):
            await events.publish(js, message, tenant=TENANT, event_id=f"{run_id}-{rep}-{i}", source="/lepton/bench")

    async def baseline(rep: int) -> None:
        for _ in range(PUBLISH_N):
            await js.publish(subject, payload)

    ours_s, base_s = await measure_async(ours, baseline, PUBLISH_REPS)
    stream = await js.stream_info("EVENTS")
    return Result(
        name=f"event publish, {PUBLISH_N} acked",
        ours="events.publish (ce-* headers, traceparent, Nats-Msg-Id)",
        baseline="js.publish(subject, payload) on the same stream",
        work=PUBLISH_N,
        unit="msg",
        ours_s=ours_s,
        baseline_s=base_s,
        extra={"payload_bytes": len(payload), "stream_messages_after": stream.state.messages},
    )


# --- 2. object store -------------------------------------------------------------------------------


async def bench_object_get(js: JetStreamContext, data: bytes) -> Result:
    objects = ObjectStore(js)
    obs = await js.object_store("artifacts")
    ref = await objects.put("artifacts", "bench/get-32mb", data)
    # Both paths must return the very bytes written, or their times mean nothing.
    if await objects.get(ref) != data or (await obs.get(ref.name)).data != data:
        raise RuntimeError("object store round trip returned different bytes")

    async def ours(_: int) -> None:
        await objects.get(ref)

    async def baseline(_: int) -> None:
        result = await obs.get(ref.name)
        result.data  # noqa: B018 - the attribute the plain path hands to callers

    ours_s, base_s = await measure_async(ours, baseline, OBJECT_REPS)
    await obs.delete(ref.name)
    return Result(
        name=f"object get, {len(data) // MB} MB",
        ours="ObjectStore.get (pull consumer, batched chunks, sha256 check)",
        baseline="(await obs.get(name)).data",
        work=len(data) / MB,
        unit="MB",
        ours_s=ours_s,
        baseline_s=base_s,
        extra={"chunk_bytes": 1 * MB, "object_bytes": len(data)},
    )


async def bench_object_put(js: JetStreamContext, data: bytes) -> Result:
    objects = ObjectStore(js)
    obs = await js.object_store("artifacts")
    written: list[str] = []

    async def delete_written() -> None:
        while written:
            await obs.delete(written.pop())

    async def ours(rep: int) -> None:
        name = f"bench/put-ours-{rep}"
        written.append(name)
        await objects.put("artifacts", name, data)

    async def baseline(rep: int) -> None:
        name = f"bench/put-raw-{rep}"
        written.append(name)
        await obs.put(name, data)

    ours_s, base_s = await measure_async(ours, baseline, OBJECT_REPS, between=delete_written)
    await delete_written()
    return Result(
        name=f"object put, {len(data) // MB} MB",
        ours="ObjectStore.put (get_info, 1 MiB chunks, 8 awaiting acks, one sha256 in a thread)",
        baseline="obs.put(name, data) (defaults: 128 KiB chunks)",
        work=len(data) / MB,
        unit="MB",
        ours_s=ours_s,
        baseline_s=base_s,
        extra={"object_bytes": len(data)},
    )


# --- 3. event decode --------------------------------------------------------------------------------


class FakeMsg:
    """Just what :func:`events.decode` reads from a NATS message: subject, headers, data and
    metadata, which raises as it does on a message that did not come from a stream."""

    def __init__(self, subject: str, headers: dict[str, str], data: bytes) -> None:
        self.subject = subject
        self.headers = headers
        self.data = data

    @property
    def metadata(self) -> Msg.Metadata:
        raise NotJSMessageError


def bench_decode() -> Result:
    tracer = trace.get_tracer("lepton.bench")
    msgs: list[Msg] = []
    with tracer.start_as_current_span("bench decode"):
        for i in range(DECODE_N):
            message = _dataset_event(i)
            headers = events.headers_for(message, event_id=f"dv-{i}", source="/lepton/bench", ce_subject=f"dv-{i}")
            subject = events.spec_of(message).subject(TENANT)
            msgs.append(cast(Msg, FakeMsg(subject, headers, message.SerializeToString())))
    parse: Callable[[bytes], Message] = ev.DatasetVersionCreated.FromString

    def ours() -> None:
        for m in msgs:
            events.decode(m)

    def baseline() -> None:
        for m in msgs:
            parse(m.data)

    ours_s, base_s = measure_sync(ours, baseline, DECODE_REPS)
    return Result(
        name=f"event decode, {DECODE_N // 1000}k in memory",
        ours="events.decode (CloudEvents and subject-trust checks + parse)",
        baseline="DatasetVersionCreated.FromString(data)",
        work=DECODE_N,
        unit="msg",
        ours_s=ours_s,
        baseline_s=base_s,
        extra={"headers": len(cast(dict[str, str], msgs[0].headers))},
    )


# --- 4. model artifact ------------------------------------------------------------------------------


def bench_artifact() -> Result:
    data = load_diabetes()
    model = LinearRegression().fit(data.data, data.target)
    signature = artifacts.Signature(
        features=list(data.feature_names),
        target="progression",
        task="regression",
        algorithm="LinearRegression",
        libraries=artifacts.library_versions(),
    )
    raw = sio.dumps(model)
    trusted = sio.get_untrusted_types(data=raw)  # known up front: the raw path's best case
    signer = Signer.generate()
    keys = signer.trusted()  # the signing keys ours verifies against (not skops' type list above)
    ours_bytes = artifacts.seal(artifacts.pack(model, signature), signer)
    round_trip, _ = artifacts.unpack(ours_bytes, keys)
    if list(round_trip.coef_) != list(model.coef_):
        raise RuntimeError("artifact round trip changed the model")

    def ours() -> None:
        for _ in range(ARTIFACT_ROUNDS):
            artifacts.unpack(artifacts.seal(artifacts.pack(model, signature), signer), keys)

    def baseline() -> None:
        for _ in range(ARTIFACT_ROUNDS):
            sio.loads(sio.dumps(model), trusted=trusted)

    ours_s, base_s = measure_sync(ours, baseline, ARTIFACT_REPS)
    return Result(
        name=f"artifact pack+unpack, x{ARTIFACT_ROUNDS}",
        ours="artifacts.pack + seal + unpack (zip, Ed25519 sign and verify, exact type allow-list)",
        baseline="skops dumps + loads(trusted=precomputed)",
        work=ARTIFACT_ROUNDS,
        unit="round trip",
        ours_s=ours_s,
        baseline_s=base_s,
        extra={"artifact_bytes": len(ours_bytes), "skops_bytes": len(raw), "trusted_types": trusted},
    )


# --- run ---------------------------------------------------------------------------------------------


async def bench_nats(url: str) -> list[Result]:
    nc = await connect(url, "lepton-bench", seed_file=str(NatsServer.running[url].seed_file("admin")))
    try:
        js = nc.jetstream()
        await declare_topology(js)
        tracer = trace.get_tracer("lepton.bench")
        # Services publish inside a span, so events.publish injects a real traceparent.
        with tracer.start_as_current_span("bench publish"):
            results = [await bench_publish(js)]
        data = os.urandom(OBJECT_SIZE)
        results.append(await bench_object_get(js, data))
        results.append(await bench_object_put(js, data))
        return results
    finally:
        # Closing fires the connection's "disconnected; reconnecting" warning: not news here.
        logging.getLogger("lepton_core.bus").setLevel(logging.ERROR)
        await nc.close()


#: Package versions recorded with the results.
PACKAGES = ("nats-py", "protobuf", "skops", "scikit-learn", "opentelemetry-sdk")


def nats_server_version() -> str:
    try:
        return subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except Exception as exc:
        return f"? ({exc})"


def machine_info() -> dict[str, Any]:
    return _machine.machine_info(PACKAGES, nats_server=nats_server_version())


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}/s" if value >= 100 else f"{value:,.1f} {unit}/s"


def table(results: list[Result]) -> str:
    header = ("benchmark", "ours (median)", "baseline (median)", "ours rate", "baseline rate", "ratio", "paired")
    rows = [header]
    for r in results:
        paired = r.paired_ratios
        rows.append(
            (
                r.name,
                f"{r.ours_median_s * 1000:,.1f} ms",
                f"{r.baseline_median_s * 1000:,.1f} ms",
                fmt_rate(r.work / r.ours_median_s, r.unit),
                fmt_rate(r.work / r.baseline_median_s, r.unit),
                f"{r.ratio:.2f}x",
                f"{min(paired):.2f}-{max(paired):.2f}",
            )
        )
    return render(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lepton benchmarks: ours against the raw library path.")
    parser.add_argument(
        "--no-data", dest="data", action="store_false", help="skip the data-service benchmarks (bench/data_bench.py)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    setup_telemetry("lepton-bench")  # a real tracer provider, no exporter
    info = machine_info()
    print(f"Lepton bench  {stamp}  cpus={info['cpu_count']}  python={info['python']}  {info['nats_server']}")
    print("ratio = ours / baseline median time (1.00 = parity, >1 = ours slower); paired = min-max per repetition\n")
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="lepton-bench-") as tmp:
            server = NatsServer(Path(tmp))
            try:
                results += asyncio.run(bench_nats(server.url))
            finally:
                server.stop()
        results.append(bench_decode())
        results.append(bench_artifact())
    finally:
        shutdown_telemetry()
    print(table(results))
    for r in results:
        print(f"  {r.name}: ours = {r.ours}; baseline = {r.baseline}")
    data: data_bench.DataResults | None = None
    if args.data:
        print(flush=True)
        data = data_bench.run_data_benchmarks()
        data_bench.report(data)
    elapsed = time.perf_counter() - started
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "timestamp": stamp,
        "elapsed_s": round(elapsed, 2),
        "warmup_reps": WARMUP,
        "machine": info,
        "benchmarks": [r.summary() for r in results],
    }
    if data is not None:
        report["data"] = data.summary()
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{elapsed:.1f} s in all; raw numbers in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
