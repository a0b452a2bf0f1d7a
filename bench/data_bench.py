"""Data-service benchmarks: CSV ingest, reading a version back, and the service's peak memory.

Each one drives a real data service process (``python -m lepton_data`` on a real
``nats-server -js``) through its gRPC API, the way a client does, and times the
plain library path doing the same work on the same machine in the same run:

1. **Ingest**: a seeded 1,000,000-row x 20-column CSV uploaded with ``UploadDataset``
   (1 MiB chunks) until the ``DatasetVersion`` reply, against ``pl.read_csv`` +
   ``write_parquet`` and ``pd.read_csv`` + ``to_parquet`` of the same file.
2. **Read back**: a version whose Parquet object is ~200 MB streamed with
   ``ReadDataset`` and every Arrow IPC batch decoded, against ``pl.read_parquet`` of
   the very same Parquet bytes from local disk.
3. **Peak memory**: a fresh service process's ``VmHWM`` while it ingests the CSV,
   less its ``VmRSS`` before, as a multiple of the CSV's size.

Targets (from the issue) are printed as PASS/MISS; a miss never fails the run.
Run on its own with ``.venv/bin/python bench/data_bench.py``; ``bench/run.py`` (``make
bench``) runs it after its own benchmarks and puts the results under ``"data"``.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc
from lepton.data.v1 import data_pb2, data_pb2_grpc
from nats.aio.client import Client as NATS

from lepton_core.bus import ObjectRefRecord, ObjectStore, connect, sha256_digest
from lepton_core.nats_identity import ADMIN
from lepton_core.rpc import client_channel
from lepton_data import ingest
from lepton_data.core import arrow_batches, columns_of, parquet_bytes
from lepton_data.profiling import DatasetProfile, profile
from lepton_platform.embedded import grpc_serving
from lepton_platform.nats_users import BootstrapKey, write_keys
from lepton_platform.processes import NatsServer, Process, free_port, start_service, wait_until

MB = 1024 * 1024
SEED = 20261129
API_KEY = "bench-data-key"
TENANT = "bench"
WARMUP = 1
UPLOAD_CHUNK = 1 * MB
RPC_TIMEOUT_S = 600.0

CSV_ROWS = 1_000_000
INGEST_REPS = 3
#: 20 float64 columns of random normals: ~8 incompressible bytes a value, so ~200 MB of Parquet.
READ_ROWS = 1_365_000
READ_COLUMNS = 20
READ_REPS = 5
MEMORY_SAMPLE_S = 0.01

TARGET_POLARS_RATE = 0.7  # ours >= 0.7x polars' ingest throughput
TARGET_PANDAS_RATE = 1.0  # ours faster than pandas
TARGET_READ_MBPS = 200.0  # ReadDataset >= 200 MB/s of Parquet object
TARGET_PEAK_X = 3.0  # peak RSS growth < 3x the CSV's size


# --- results ---------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One benchmark: ours against one baseline, per-repetition times in seconds.

    ``work_mb`` is what one repetition processes (CSV or Parquet bytes, in MiB), so
    throughput is ``work_mb / median``; ``rate_ratio`` is ours / baseline *throughput*
    (>1: ours faster), the form the targets are stated in.
    """

    name: str
    ours: str
    baseline: str
    work_mb: float
    ours_s: list[float]
    baseline_s: list[float]
    target: str
    met: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ours_mbps(self) -> float:
        return self.work_mb / statistics.median(self.ours_s)

    @property
    def baseline_mbps(self) -> float:
        return self.work_mb / statistics.median(self.baseline_s)

    @property
    def rate_ratio(self) -> float:
        return statistics.median(self.baseline_s) / statistics.median(self.ours_s)

    @property
    def paired(self) -> list[float]:
        """Ours / baseline throughput per repetition (each pair ran back to back)."""
        return [b / o for o, b in zip(self.ours_s, self.baseline_s, strict=True)]

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ours_median_s": statistics.median(self.ours_s),
            "baseline_median_s": statistics.median(self.baseline_s),
            "ours_throughput": self.ours_mbps,
            "baseline_throughput": self.baseline_mbps,
            "throughput_unit": "MB/s",
            "rate_ratio": self.rate_ratio,
            "paired_rate_ratio_min": min(self.paired),
            "paired_rate_ratio_max": max(self.paired),
        }


@dataclass
class Memory:
    """The data service's resident memory around one ingest, in bytes."""

    csv_bytes: int
    rss_before: int
    hwm_after: int
    rss_after: int
    #: Highest RssAnon / RssFile seen by polling /proc every 10 ms (approximate peaks).
    anon_peak_sampled: int
    file_peak_sampled: int
    ingest_s: float
    target: str = f"growth < {TARGET_PEAK_X:g}x CSV"

    @property
    def growth(self) -> int:
        return self.hwm_after - self.rss_before

    @property
    def multiple(self) -> float:
        return self.growth / self.csv_bytes

    @property
    def met(self) -> bool:
        return self.multiple < TARGET_PEAK_X

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "growth": self.growth, "multiple_of_csv": self.multiple, "met": self.met}


@dataclass
class DataResults:
    comparisons: list[Comparison]
    memory: Memory
    elapsed_s: float
    setup: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed_s, 2),
            "warmup_reps": WARMUP,
            "setup": self.setup,
            "benchmarks": [c.summary() for c in self.comparisons],
            "memory": self.memory.summary(),
        }


# --- timing ------------------------------------------------------------------------------------------


async def measure(
    variants: Sequence[tuple[str, Callable[[int], Awaitable[object]]]],
    reps: int,
    *,
    between: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, list[float]]:
    """Runs every variant once per repetition (``WARMUP`` + ``reps``), rotating which goes
    first; ``between`` and a ``gc.collect()`` (both untimed) run before each timed call."""
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for i in range(WARMUP + reps):
        k = i % len(variants)
        for name, fn in [*variants[k:], *variants[:k]]:
            if between is not None:
                await between()
            gc.collect()
            t0 = time.perf_counter()
            await fn(i)
            elapsed = time.perf_counter() - t0
            if i >= WARMUP:
                times[name].append(elapsed)
    return times


class Steps:
    """Seconds per step of one run, in order. A step whose name starts with ``PART`` is
    part of the step before it (the sums leave it out)."""

    PART = "  of which: "

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, step: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.seconds[step] = time.perf_counter() - t0
        return out

    async def time_async(self, step: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        t0 = time.perf_counter()
        out = await fn()
        self.seconds[step] = time.perf_counter() - t0
        return out


def median_steps(runs: list[dict[str, float]]) -> dict[str, float]:
    return {step: statistics.median(run[step] for run in runs) for step in runs[0]}


# --- inputs ------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: int, seed: int = SEED) -> int:
    """16 float, 2 int and 2 low-cardinality string columns; floats at full precision."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for i in range(16):
        cols[f"f{i:02d}"] = rng.standard_normal(rows) * 10.0 ** (i % 4 - 1)
    cols["i00"] = rng.integers(0, 1_000_000, rows)
    cols["i01"] = rng.integers(-500, 500, rows)
    cols["s00"] = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])[rng.integers(0, 5, rows)]
    cols["s01"] = np.array(["north", "south", "east", "west"])[rng.integers(0, 4, rows)]
    pl.DataFrame(cols).write_csv(path)
    return path.stat().st_size


def write_float_parquet(path: Path, rows: int, columns: int, seed: int = SEED + 1) -> None:
    rng = np.random.default_rng(seed)
    pl.DataFrame({f"x{i:02d}": rng.standard_normal(rows) for i in range(columns)}).write_parquet(path)


def write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def upload_parts(path: Path, name: str, fmt: str, sent: list[float]) -> Iterator[data_pb2.UploadDatasetRequest]:
    """The header, then the file in 1 MiB chunks read as they are sent (as a client does);
    appends to ``sent`` when gRPC asks for the message after the last chunk."""
    yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format=fmt))
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            yield data_pb2.UploadDatasetRequest(chunk=chunk)
    sent.append(time.perf_counter())


async def upload(
    stub: data_pb2_grpc.DataServiceStub, path: Path, name: str, fmt: str
) -> tuple[data_pb2.DatasetVersion, float]:
    """Uploads ``path``; returns the version and the seconds until the last chunk was
    handed to gRPC (the rest, to the reply, is mostly the service parsing and storing)."""
    sent: list[float] = []
    t0 = time.perf_counter()
    version: data_pb2.DatasetVersion = await stub.UploadDataset(
        upload_parts(path, name, fmt, sent), timeout=RPC_TIMEOUT_S
    )
    if version.deduplicated:
        raise RuntimeError(f"upload {name} was deduplicated: the benchmark would time nothing")
    return version, (sent[0] - t0 if sent else float("nan"))


async def upload_refused(stub: data_pb2_grpc.DataServiceStub, path: Path, name: str) -> None:
    """Uploads a CSV announced as Parquet: the service receives and spools all of it, then
    refuses it at the first parse step, so the call times gRPC transfer + spool alone."""
    try:
        await stub.UploadDataset(upload_parts(path, name, "parquet", []), timeout=RPC_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
    else:
        raise RuntimeError("a CSV uploaded as Parquet was accepted")


async def delete_dataset(stub: data_pb2_grpc.DataServiceStub, name: str) -> None:
    await stub.DeleteDataset(data_pb2.DeleteDatasetRequest(dataset=name), timeout=RPC_TIMEOUT_S)


async def close_quietly(nc: NATS) -> None:
    # Closing fires the connection's "disconnected; reconnecting" warning: not news here.
    logging.getLogger("lepton_core.bus").setLevel(logging.ERROR)
    await nc.close()


# --- the service ---------------------------------------------------------------------------------------


class DataService:
    """One ``python -m lepton_data`` process on ``nats_url``, serving gRPC on a free port."""

    def __init__(self, nats_url: str, logdir: Path) -> None:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        server = NatsServer.running[nats_url]
        write_keys(nats_url, server.seed_file(ADMIN), [BootstrapKey(API_KEY, TENANT)])
        values = {
            "nats_url": nats_url,
            "nats_nkey_seed_file": str(server.seed_file("data")),
            "grpc_port": str(port),
            "service_keys": server.secrets.service_keys(),
            "max_upload_bytes": str(4 * 1024 * MB),
            "log_level": "WARNING",
        }
        self.process: Process = start_service("data", values, logdir)
        try:
            wait_until(lambda: grpc_serving(self.address), 60, "data service", self.process.proc)
        except BaseException:
            self.process.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()


def proc_status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status, in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) * 1024
    return out


class RssSampler(threading.Thread):
    """Polls RssAnon and RssFile of a process, keeping the highest of each."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.anon = 0
        self.file = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                status = proc_status(self.pid)
            except OSError:
                return
            self.anon = max(self.anon, status.get("RssAnon", 0))
            self.file = max(self.file, status.get("RssFile", 0))
            self._stop_event.wait(MEMORY_SAMPLE_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# --- 3. peak memory ------------------------------------------------------------------------------------


async def bench_memory(
    service: DataService, stub: data_pb2_grpc.DataServiceStub, csv_path: Path, small_csv: Path, run_id: str
) -> Memory:
    """A fresh service: one small upload to load everything imported lazily, then the CSV."""
    await upload(stub, small_csv, f"mem-warm-{run_id}", "csv")
    before = proc_status(service.pid)["VmRSS"]
    sampler = RssSampler(service.pid)
    sampler.start()
    t0 = time.perf_counter()
    try:
        await upload(stub, csv_path, f"mem-{run_id}", "csv")
    finally:
        elapsed = time.perf_counter() - t0
        sampler.stop()
    after = proc_status(service.pid)
    for name in (f"mem-warm-{run_id}", f"mem-{run_id}"):
        await delete_dataset(stub, name)
    return Memory(
        csv_bytes=csv_path.stat().st_size,
        rss_before=before,
        hwm_after=after["VmHWM"],
        rss_after=after["VmRSS"],
        anon_peak_sampled=sampler.anon,
        file_peak_sampled=sampler.file,
        ingest_s=elapsed,
    )


# --- 1. ingest -------------------------------------------------------------------------------------------


def polars_ingest(path: Path) -> int:
    buf = io.BytesIO()
    df = pl.read_csv(path)
    df.write_parquet(buf)
    return df.height


def pandas_ingest(path: Path) -> int:
    buf = io.BytesIO()
    df = pd.read_csv(path)
    df.to_parquet(buf, engine="pyarrow")
    return len(df)


def spool_copy(src: Path, dst: Path) -> str:
    """What the service's ``_spool`` does with the chunks: hash each and append it to a file."""
    hasher = hashlib.sha256()
    with src.open("rb") as f, dst.open("wb") as out:
        while chunk := f.read(UPLOAD_CHUNK):
            hasher.update(chunk)
            out.write(chunk)
    return "sha256:" + hasher.hexdigest()


async def ingest_steps(
    stub: data_pb2_grpc.DataServiceStub, objects: ObjectStore, csv_path: Path, spooled: Path
) -> dict[str, float]:
    """One ingest taken apart: gRPC transfer + spool through the service (an upload it
    refuses right after spooling), then the service's steps for a CSV (ingest.read_file,
    core.Datasets._store) run one by one in this process with lepton_data's own functions."""
    steps = Steps()
    await steps.time_async(
        "gRPC upload + service spool (upload refused at parse)",
        lambda: upload_refused(stub, csv_path, f"refused-{uuid.uuid4().hex[:8]}"),
    )
    steps.time(Steps.PART + "sha256 + write to disk, in process", lambda: spool_copy(csv_path, spooled))
    steps.time("UTF-8 check (incremental decoder)", lambda: ingest._utf8_text(spooled, "utf-8"))
    df: pl.DataFrame = steps.time("sniff + pl.read_csv", lambda: ingest.read_csv(spooled, ingest.CsvOptions()))
    # ingest.read_csv runs the UTF-8 check again: take it out.
    steps.seconds["sniff + pl.read_csv"] -= steps.seconds["UTF-8 check (incremental decoder)"]
    steps.time("check_frame (NaN/inf scan)", lambda: ingest.check_frame(df, ingest.Limits(50_000_000, 10_000)))
    prof: DatasetProfile = steps.time("profile (polars pass + numpy histograms)", lambda: profile(df))
    steps.time("columns_of + profile JSON", lambda: (columns_of(df, prof), prof.model_dump_json()))
    data: bytes = steps.time("parquet_bytes (zstd, statistics)", lambda: parquet_bytes(df))
    name = f"bench-steps/{uuid.uuid4().hex}.parquet"
    ref = await steps.time_async("ObjectStore.put to JetStream", lambda: objects.put("datasets", name, data))
    steps.time(Steps.PART + "sha256 of the Parquet", lambda: sha256_digest(data))
    await objects.delete(ref)
    spooled.unlink()
    return steps.seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used, all its threads, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nats_pid(nats_url: str) -> int:
    server = NatsServer.running[nats_url]
    if not isinstance(server, NatsServer):
        raise TypeError(f"{nats_url} is a cluster; the data bench runs on one nats-server")
    return server.process.pid


def own_cpu_seconds() -> float:
    """This process's user + system CPU seconds, all threads (the gRPC client's included)."""
    times = os.times()
    return times.user + times.system


@dataclass
class CpuMeter:
    """CPU seconds the service, nats-server and this process (the client) spend on one timed call."""

    pids: dict[str, int]
    runs: list[dict[str, float]] = field(default_factory=list)

    def start(self) -> dict[str, float]:
        return {**{name: cpu_seconds(pid) for name, pid in self.pids.items()}, "client": own_cpu_seconds()}

    def stop(self, before: dict[str, float]) -> None:
        after = self.start()
        self.runs.append({name: after[name] - before[name] for name in before})

    def median(self) -> dict[str, float]:
        return {name: statistics.median(run[name] for run in self.runs) for name in self.runs[0]}


async def bench_ingest(
    stub: data_pb2_grpc.DataServiceStub,
    objects: ObjectStore,
    csv_path: Path,
    tmp: Path,
    run_id: str,
    pids: dict[str, int],
) -> list[Comparison]:
    uploaded: list[str] = []
    ours_cpu = CpuMeter(pids)
    polars_cpu = CpuMeter({})
    transfer_s: list[float] = []
    step_runs: list[dict[str, float]] = []
    stored_bytes: list[int] = []

    async def delete_uploaded() -> None:
        # Untimed: keeps the JetStream store from growing by a version per repetition.
        while uploaded:
            await delete_dataset(stub, uploaded.pop())

    async def ours(rep: int) -> None:
        name = f"ingest-{run_id}-{rep}"  # a new name each time: content addressing dedupes nothing
        uploaded.append(name)
        before = ours_cpu.start()
        version, sent_s = await upload(stub, csv_path, name, "csv")
        if rep >= WARMUP:
            ours_cpu.stop(before)
        if version.row_count != CSV_ROWS:
            raise RuntimeError(f"stored {version.row_count} rows, expected {CSV_ROWS}")
        stored_bytes.append(version.object.size)
        if rep >= WARMUP:
            transfer_s.append(sent_s)

    async def with_polars(rep: int) -> None:
        before = polars_cpu.start()
        if polars_ingest(csv_path) != CSV_ROWS:
            raise RuntimeError("polars read a different row count")
        if rep >= WARMUP:
            polars_cpu.stop(before)

    async def with_pandas(_: int) -> None:
        if pandas_ingest(csv_path) != CSV_ROWS:
            raise RuntimeError("pandas read a different row count")

    async def steps(rep: int) -> None:
        # Not a comparison: the breakdown, run in the same rotation so it sees the same load.
        run = await ingest_steps(stub, objects, csv_path, tmp / "steps-spool.csv")
        if rep >= WARMUP:
            step_runs.append(run)

    variants = [("ours", ours), ("polars", with_polars), ("pandas", with_pandas), ("steps", steps)]
    times = await measure(variants, INGEST_REPS, between=delete_uploaded)
    await delete_uploaded()
    csv_bytes = csv_path.stat().st_size
    frame_bytes = int(pl.read_csv(csv_path, n_rows=100_000).estimated_size() * CSV_ROWS / 100_000)
    extra = {
        "csv_bytes": csv_bytes,
        "rows": CSV_ROWS,
        "columns": 20,
        "upload_chunk_bytes": UPLOAD_CHUNK,
        "stored_parquet_bytes": stored_bytes[-1],
        "frame_bytes_estimate": frame_bytes,
        "ours_last_chunk_sent_s": transfer_s,
        "steps_median_s": median_steps(step_runs),
        "steps_runs_s": step_runs,
        "ours_cpu_s": ours_cpu.median(),
        "polars_cpu_s": polars_cpu.median()["client"],
    }
    ours_desc = "UploadDataset over gRPC (1 MiB chunks) until the stored version: spool, parse, profile, Parquet, store"
    polars = Comparison(
        name=f"ingest CSV {CSV_ROWS // 1000}k x 20 vs polars",
        ours=ours_desc,
        baseline="pl.read_csv(path) + df.write_parquet(BytesIO)",
        work_mb=csv_bytes / MB,
        ours_s=times["ours"],
        baseline_s=times["polars"],
        target=f">= {TARGET_POLARS_RATE:g}x polars",
        met=False,
        extra=extra,
    )
    polars.met = polars.rate_ratio >= TARGET_POLARS_RATE
    pandas = Comparison(
        name=f"ingest CSV {CSV_ROWS // 1000}k x 20 vs pandas",
        ours=ours_desc,
        baseline="pd.read_csv(path) + df.to_parquet(BytesIO, engine='pyarrow')",
        work_mb=csv_bytes / MB,
        ours_s=times["ours"],
        baseline_s=times["pandas"],
        target="> 1x pandas",
        met=False,
        extra=extra,
    )
    pandas.met = pandas.rate_ratio > TARGET_PANDAS_RATE
    return [polars, pandas]


# --- 2. read back -------------------------------------------------------------------------------------------


def read_local(path: Path) -> int:
    return pl.read_parquet(path).height


def decode_batches(batches: list[bytes]) -> pa.Table:
    return pa.concat_tables([pyarrow.ipc.open_stream(b).read_all() for b in batches])


async def read_steps(objects: ObjectStore, ref: ObjectRefRecord) -> dict[str, float]:
    """One ReadDataset taken apart: the service's steps (Datasets.frame, arrow_batches)
    and the client's decode, run one by one in this process; what is left is gRPC."""
    steps = Steps()
    data: bytes = await steps.time_async("ObjectStore.get from JetStream", lambda: objects.get(ref))
    steps.time(Steps.PART + "sha256 of the Parquet", lambda: sha256_digest(data))
    df: pl.DataFrame = steps.time("pl.read_parquet(BytesIO)", lambda: pl.read_parquet(io.BytesIO(data)))
    batches: list[bytes] = steps.time(
        "arrow_batches (to_arrow + IPC write + copy)", lambda: [b for b, _ in arrow_batches(df, 65_536)]
    )
    steps.time("client: ipc.open_stream().read_all() + concat", lambda: decode_batches(batches))
    return steps.seconds


async def bench_read(stub: data_pb2_grpc.DataServiceStub, objects: ObjectStore, tmp: Path, run_id: str) -> Comparison:
    source = tmp / "read-source.parquet"
    write_float_parquet(source, READ_ROWS, READ_COLUMNS)
    name = f"read-{run_id}"
    version, _ = await upload(stub, source, name, "parquet")
    source.unlink()
    obj = version.object
    ref = ObjectRefRecord(bucket=obj.bucket, name=obj.name, digest=obj.digest, size=obj.size)
    # The very Parquet bytes the service stores, as a local file for the baseline.
    stored = tmp / "read-stored.parquet"
    write_bytes(stored, await objects.get(ref))
    step_runs: list[dict[str, float]] = []

    async def ours(_: int) -> None:
        tables: list[pa.Table] = []
        call = stub.ReadDataset(data_pb2.ReadDatasetRequest(version_id=version.version_id), timeout=RPC_TIMEOUT_S)
        async for chunk in call:
            tables.append(pyarrow.ipc.open_stream(chunk.arrow_ipc).read_all())
        table = pa.concat_tables(tables)
        if table.num_rows != READ_ROWS:
            raise RuntimeError(f"ReadDataset returned {table.num_rows} rows, expected {READ_ROWS}")

    async def baseline(_: int) -> None:
        if read_local(stored) != READ_ROWS:
            raise RuntimeError("pl.read_parquet read a different row count")

    async def steps(rep: int) -> None:
        run = await read_steps(objects, ref)
        if rep >= WARMUP:
            step_runs.append(run)

    times = await measure([("ours", ours), ("baseline", baseline), ("steps", steps)], READ_REPS)
    await delete_dataset(stub, name)
    stored.unlink()
    result = Comparison(
        name=f"read back {obj.size / MB:.0f} MB Parquet",
        ours="ReadDataset (65,536-row Arrow IPC batches) + ipc.open_stream().read_all() + concat_tables",
        baseline="pl.read_parquet(path) of the same Parquet bytes on local disk",
        work_mb=obj.size / MB,
        ours_s=times["ours"],
        baseline_s=times["baseline"],
        target=f">= {TARGET_READ_MBPS:g} MB/s",
        met=False,
        extra={
            "parquet_bytes": obj.size,
            "rows": READ_ROWS,
            "columns": READ_COLUMNS,
            "batch_rows": 65_536,
            "steps_median_s": median_steps(step_runs),
            "steps_runs_s": step_runs,
        },
    )
    result.met = result.ours_mbps >= TARGET_READ_MBPS
    return result


# --- run ------------------------------------------------------------------------------------------------------


async def _run(nats_url: str, tmp: Path) -> tuple[list[Comparison], Memory, dict[str, Any]]:
    run_id = uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    csv_path = tmp / "ingest.csv"
    csv_bytes = write_csv(csv_path, CSV_ROWS)
    small_csv = tmp / "small.csv"
    write_csv(small_csv, 1000, SEED + 2)
    setup: dict[str, Any] = {
        "csv_bytes": csv_bytes,
        "csv_write_s": round(time.perf_counter() - t0, 2),
        "packages": {d: metadata.version(d) for d in ("polars", "pandas", "pyarrow", "numpy", "grpcio")},
    }
    # A fresh process for the memory measurement, so its VmHWM is this ingest's; the
    # same process (warm now, as a long-lived service is) then serves the timed runs.
    service = DataService(nats_url, tmp / "logs")
    try:
        nc = await connect(
            nats_url, "lepton-bench-data", seed_file=str(NatsServer.running[nats_url].seed_file("admin"))
        )
        try:
            objects = ObjectStore(nc.jetstream())
            async with client_channel(service.address, API_KEY) as channel:
                stub = data_pb2_grpc.DataServiceStub(channel)
                memory = await bench_memory(service, stub, csv_path, small_csv, run_id)
                pids = {"service": service.pid, "nats-server": nats_pid(nats_url)}
                comparisons = await bench_ingest(stub, objects, csv_path, tmp, run_id, pids)
                csv_path.unlink()
                comparisons.append(await bench_read(stub, objects, tmp, run_id))
        finally:
            await close_quietly(nc)
    finally:
        service.stop()
    return comparisons, memory, setup


def run_data_benchmarks() -> DataResults:
    """Starts nats-server and a data service in a temporary directory, runs the three
    benchmarks and stops both (also on error); the directory and its files go too."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lepton-bench-data-") as tmp:
        server = NatsServer(Path(tmp) / "nats")
        try:
            comparisons, memory, setup = asyncio.run(_run(server.url, Path(tmp)))
        finally:
            server.stop()
    return DataResults(comparisons, memory, time.perf_counter() - started, setup)


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def table(results: DataResults) -> str:
    header = ("benchmark", "ours (median)", "baseline", "ours rate", "baseline rate", "rate ratio", "paired", "target")
    rows = [header]
    for c in results.comparisons:
        rows.append(
            (
                c.name,
                f"{statistics.median(c.ours_s) * 1000:,.0f} ms",
                f"{statistics.median(c.baseline_s) * 1000:,.0f} ms",
                f"{c.ours_mbps:,.0f} MB/s",
                f"{c.baseline_mbps:,.0f} MB/s",
                f"{c.rate_ratio:.2f}x",
                f"{min(c.paired):.2f}-{max(c.paired):.2f}",
                f"{_verdict(c.met)} ({c.target})",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    m = results.memory
    lines.append(
        f"\npeak memory of the service ingesting the CSV: VmHWM {m.hwm_after / MB:,.0f} MB - VmRSS before "
        f"{m.rss_before / MB:,.0f} MB = {m.growth / MB:,.0f} MB = {m.multiple:.2f}x the {m.csv_bytes / MB:,.0f} MB CSV"
        f"  {_verdict(m.met)} ({m.target})\n  (sampled peaks: anonymous {m.anon_peak_sampled / MB:,.0f} MB, "
        f"file-backed {m.file_peak_sampled / MB:,.0f} MB; VmRSS after {m.rss_after / MB:,.0f} MB)"
    )
    return "\n".join(lines)


def _step_lines(title: str, total: float, steps: dict[str, float]) -> list[str]:
    width = max(len(k) for k in steps)
    lines = [title]
    for step, seconds in steps.items():
        lines.append(f"  {step.ljust(width)}  {seconds * 1000:8,.0f} ms")
    counted = sum(v for k, v in steps.items() if not k.startswith(Steps.PART))
    lines.append(f"  {'sum of the steps'.ljust(width)}  {counted * 1000:8,.0f} ms")
    lines.append(f"  {'median through the service less the sum'.ljust(width)}  {(total - counted) * 1000:8,.0f} ms")
    return lines


def cpu_lines(run: Comparison) -> list[str]:
    """What the CPU an ingest needs allows: its CPU seconds spread over every core is the least wall time
    it could take, so the best ratio to polars this machine allows, however well the steps overlap."""
    cpu: dict[str, float] = run.extra["ours_cpu_s"]
    polars_cpu: float = run.extra["polars_cpu_s"]
    cores = len(os.sched_getaffinity(0))
    total = sum(cpu.values())
    floor = total / cores
    best = statistics.median(run.baseline_s) / floor
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
    return [
        f"CPU an ingest uses (median of {INGEST_REPS}): {total:.2f} s ({parts}); polars' path {polars_cpu:.2f} s",
        f"  spread over {cores} cores that is at least {floor * 1000:,.0f} ms of wall time: "
        f"{best:.2f}x polars at best with this work, however the steps overlap",
    ]


def steps_table(results: DataResults) -> str:
    """The median step times beside the medians through the service."""
    ingest_run, read_run = results.comparisons[0], results.comparisons[-1]
    ours = statistics.median(ingest_run.ours_s)
    sent = statistics.median(ingest_run.extra["ours_last_chunk_sent_s"])
    lines = _step_lines(
        f"where an ingest's time goes (median of {INGEST_REPS}; an upload took {ours * 1000:,.0f} ms, "
        f"its last chunk left the client after {sent * 1000:,.0f} ms):",
        ours,
        ingest_run.extra["steps_median_s"],
    )
    lines += cpu_lines(ingest_run)
    read = statistics.median(read_run.ours_s)
    lines += _step_lines(
        f"where a read's time goes (median of {READ_REPS}; a ReadDataset took {read * 1000:,.0f} ms):",
        read,
        read_run.extra["steps_median_s"],
    )
    return "\n".join(lines)


def report(results: DataResults) -> None:
    print("data service: rate ratio = ours / baseline throughput (1.00 = parity, >1 = ours faster); MB = MiB")
    print("paired = min-max per repetition; targets are reported, never enforced\n")
    print(table(results))
    for c in results.comparisons:
        print(f"  {c.name}: ours = {c.ours}; baseline = {c.baseline}")
    print()
    print(steps_table(results))
    print(f"\ndata benchmarks: {results.elapsed_s:.1f} s")


def main() -> int:
    print(f"Lepton data bench  cpus={len(os.sched_getaffinity(0))}\n")
    report(run_data_benchmarks())
    return 0


if __name__ == "__main__":
    sys.exit(main())
