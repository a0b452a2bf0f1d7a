"""Issue 19's pipeline load: N pipelines submitted at once, with 1, 2 and 4 trainer processes.

One embedded platform (NATS, Triton, the six services), started once; trainer processes are added
between rounds (:meth:`~lepton_platform.embedded.EmbeddedPlatform.add_worker`: each pulls jobs from
the same work queue), so the rounds run on the same platform, ascending in trainers. Before the
first round each of ``--models`` model names (``load-<k>``) gets a first version, made ``champion``,
an auto-promotion policy, and a deployment following ``champion``.

A round: ``--pipelines`` pipelines handed at once to ``--clients`` SDK threads. Each uploads its own
dataset (sklearn's diabetes data, ``bmi`` scaled and every feature jittered by a seeded amount, so
bytes and fits differ) and submits a ``ridge`` training of ``load-<i % models>`` (``jobs.submit``,
which returns at once). The rest happens on the platform by events alone: the fit, the evaluation,
the registry's version, the comparison against the champion, the champion moved when the new
version wins, the deployment rolled out to it. Stages, from the events' own times (read by one
``client.events.subscribe`` for the whole run):

- **wait**: round start → a client thread takes the pipeline (the bench's own queue, ``--clients`` threads);
- **upload**: the SDK's ``datasets.upload`` call (client clock); ``jobs.submit`` follows it at once;
- **queue**: ``training.queued`` → ``training.started`` (its first attempt): waiting for a trainer;
- **train**: ``training.started`` (last attempt) → ``training.completed``: the fit process, the artifact stored;
- **evaluate**: ``training.completed`` → ``evaluation.completed``;
- **register**: ``evaluation.completed`` → ``registry.version.created``;
- **compare**: ``registry.version.created`` → ``evaluation.comparison.completed`` (against the champion);
- **promote** (the versions the registry made champion): comparison → ``registry.alias.moved``;
- **deploy** (the champions rolled out): ``registry.alias.moved`` → ``deployment.ready`` of that version.
  A champion overtaken by a newer one before its rollout may never be served: counted as superseded.

A pipeline is done at its comparison; the round is done when every pipeline is and every deployment
serves its model's last champion. Throughput = pipelines / (round start → round done), a minute.
The bottleneck named is the stage with the largest share of the mean pipeline (round start → compared);
beside it, each stage's completions a minute. ``--evaluators 2`` adds a last, diagnostic round with
that many evaluator processes (and the most trainers). Nothing is asserted; failures are counted and
printed. Run with ``.venv/bin/python bench/load/pipelines.py`` (``--pipelines 100 --trainers 1,2,4``,
``--json PATH``; about 10 minutes on 2 cores); docs/benchmarks.md has a run.

``--nats-nodes 1,3`` runs the whole plan twice in one run: on a platform with one nats-server, then on a
fresh one whose store is a 3-node JetStream cluster on loopback (every stream on all three,
``EmbeddedPlatform(nats_nodes=3)``), and prints each cluster round's throughput and p50/p99 pipeline
latency as ratios to the single node's round of the same trainers and evaluators.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from sklearn.datasets import load_diabetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _machine
from _machine import machine_info
from _table import render

import lepton_ai as la
from lepton_core.rpc import client_channel
from lepton_platform.embedded import EmbeddedPlatform

STAGES = ("wait", "upload", "queue", "train", "evaluate", "register", "compare", "promote", "deploy")
#: The events a round reads, by catalogue name.
WATCHED = (
    "training.queued",
    "training.started",
    "training.completed",
    "training.failed",
    "evaluation.completed",
    "registry.version.created",
    "evaluation.comparison.completed",
    "registry.alias.moved",
    "deployment.ready",
    "deployment.failed",
    "deployment.rolled_back",
)


class Events:
    """Every watched event of the tenant since the run began, gathered by one SDK subscription on a thread."""

    def __init__(self, client: la.Client) -> None:
        self._stream = client.events.subscribe("")
        self._lock = threading.Lock()
        self._seen: list[la.PlatformEvent] = []
        self.error: Exception | None = None
        self._stream.__enter__()  # subscribed from here on: nothing later is missed
        self._thread = threading.Thread(target=self._gather, name="bench-events", daemon=True)
        self._thread.start()

    def _gather(self) -> None:
        try:
            for event in self._stream:
                if event.name in WATCHED:
                    with self._lock:
                        self._seen.append(event)
        except Exception as exc:  # the round stops waiting and says why
            self.error = exc

    def snapshot(self) -> list[la.PlatformEvent]:
        with self._lock:
            return list(self._seen)

    def close(self) -> None:
        self._stream.close()
        self._thread.join(5)


def dataset(base: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The diabetes data with ``bmi`` scaled by a seeded factor and every feature jittered: its own bytes,
    and a fit that scores better than another seed's on its own held-out rows (so some versions win)."""
    rng = np.random.default_rng(seed)
    features = [c for c in base.columns if c != "target"]
    jitter = rng.normal(0, 1e-3, size=(base.height, len(features)))
    return base.with_columns(
        [pl.Series(c, base[c].to_numpy() + jitter[:, n]) for n, c in enumerate(features)]
    ).with_columns(pl.col("bmi") * float(rng.uniform(0.3, 3.0)))


@dataclass
class Pipeline:
    index: int
    model: str
    waited_s: float = 0.0
    upload_s: float = 0.0
    job_id: str = ""
    error: str = ""


@dataclass
class Round:
    trainers: int
    evaluators: int
    started: datetime
    pipelines: list[Pipeline]
    nodes: int = 1
    """The NATS nodes the platform ran on (3: a cluster, every stream on all three)."""
    seconds: float = 0.0
    done: bool = False
    cores_busy: float = 0.0
    stages: dict[str, list[float]] = field(default_factory=dict)
    end_to_end: list[float] = field(default_factory=list)
    to_serving: list[float] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


def settle(
    platform: EmbeddedPlatform, idle_cores: float = 0.15, window_s: float = 0.5, timeout_s: float = 60.0
) -> float:
    """Seconds waited until the platform's processes (each leads its process group: a trainer's fit process,
    Triton's stubs) use under ``idle_cores`` over ``window_s``: a trainer just added is still importing
    its fit process's libraries, and the last round's rollouts may still be finishing."""
    assert platform.nats is not None and platform.triton is not None
    groups = {*platform.nats_pids, platform.triton.process.pid, *(p.pid for p in platform.processes.values())}
    return _machine.settle(groups, idle_cores, window_s, timeout_s)


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run_pipeline(client: la.Client, base: pl.DataFrame, pipe: Pipeline, tag: str, t0: float) -> None:
    started = time.perf_counter()
    pipe.waited_s = started - t0
    try:
        frame = dataset(base, pipe.index * 7919 + len(tag))
        version = client.datasets.upload(frame, name=f"load-{tag}-{pipe.index}", progress=False).version_id
        pipe.upload_s = time.perf_counter() - started
        pipe.job_id = client.jobs.submit(version, "ridge", "target", model_name=pipe.model).job_id
    except Exception as exc:  # counted, not hidden
        pipe.error = f"{type(exc).__name__}: {exc}"


def by_time(events: list[la.PlatformEvent]) -> list[la.PlatformEvent]:
    return sorted(events, key=lambda e: e.time)


def data(event: la.PlatformEvent) -> Any:
    """The event's payload, untyped: a message of ``lepton.events.v1``."""
    return event.data


def job_key(event: la.PlatformEvent) -> str:
    return str(data(event).lineage.training_job_id)


def version_key(event: la.PlatformEvent) -> tuple[str, int]:
    return str(data(event).lineage.model_name), int(data(event).lineage.model_version)


def analyse(rnd: Round, seen: list[la.PlatformEvent]) -> tuple[bool, datetime | None]:
    """Fills ``rnd``'s stages from the events so far; (every pipeline done and every champion served, when)."""
    jobs = {p.job_id: p for p in rnd.pipelines if p.job_id}
    named: dict[str, list[la.PlatformEvent]] = {name: [] for name in WATCHED}
    for event in by_time(seen):
        if event.time >= rnd.started:
            named[event.name].append(event)

    def first(name: str, key: Any) -> dict[Any, la.PlatformEvent]:
        out: dict[Any, la.PlatformEvent] = {}
        for event in named[name]:
            out.setdefault(key(event), event)
        return out

    queued = first("training.queued", job_key)
    started = first("training.started", job_key)
    last_start = {job_key(e): e for e in named["training.started"]}
    completed = first("training.completed", job_key)
    failed = first("training.failed", job_key)
    evaluated = first("evaluation.completed", job_key)
    created = first("registry.version.created", job_key)
    compared = first("evaluation.comparison.completed", version_key)
    moved = {version_key(e): e for e in named["registry.alias.moved"] if data(e).alias == "champion"}
    ready = first("deployment.ready", version_key)
    # A rollout that failed or was rolled back has ended too: the round does not wait on it.
    unserved = {**first("deployment.failed", version_key), **first("deployment.rolled_back", version_key)}
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    end_to_end: list[float] = []
    to_serving: list[float] = []
    done_at: list[datetime] = []
    promoted = deployed = superseded = 0
    all_done = True  # a pipeline that failed (the client's call, its training) has ended: counted below
    for pipe in rnd.pipelines:
        stages["wait"].append(pipe.waited_s)
        stages["upload"].append(pipe.upload_s)
        j = pipe.job_id
        if pipe.error or j in failed:
            continue
        pairs = [
            ("queue", queued.get(j), started.get(j)),
            ("train", last_start.get(j), completed.get(j)),
            ("evaluate", completed.get(j), evaluated.get(j)),
            ("register", evaluated.get(j), created.get(j)),
        ]
        version = version_key(created[j]) if j in created else None
        comparison = compared.get(version) if version else None
        pairs.append(("compare", created.get(j), comparison))
        for stage, a, b in pairs:
            if a is not None and b is not None:
                stages[stage].append((b.time - a.time).total_seconds())
        if comparison is None:
            all_done = False
            continue
        done_at.append(comparison.time)
        end_to_end.append((comparison.time - rnd.started).total_seconds())
        if version in moved:
            promoted += 1
            stages["promote"].append((moved[version].time - comparison.time).total_seconds())
            if version in ready:
                deployed += 1
                stages["deploy"].append((ready[version].time - moved[version].time).total_seconds())
                to_serving.append((ready[version].time - rnd.started).total_seconds())
                done_at.append(ready[version].time)
            else:
                superseded += 1
    # Every deployment serves its model's last champion of the round.
    for model in {p.model for p in rnd.pipelines}:
        last = [v for v in moved if v[0] == model]
        newest = max(last, key=lambda v: moved[v].time) if last else None
        if newest is not None and newest not in ready and newest not in unserved:
            all_done = False
    redelivered = sum(1 for e in named["training.started"] if data(e).attempt > 1 and job_key(e) in jobs)
    workers = Counter(data(last_start[j]).worker_id for j in jobs if j in last_start)
    # Each stage's completions a minute from its first to its last in the round: with a backlog in front
    # of it, the rate its processes keep up (the lowest of them caps the pipelines' throughput).
    ends = {
        "train": [completed[j].time for j in jobs if j in completed],
        "evaluate": [evaluated[j].time for j in jobs if j in evaluated],
        "register": [created[j].time for j in jobs if j in created],
        "compare": [
            compared[version_key(created[j])].time for j in jobs if j in created and version_key(created[j]) in compared
        ],
    }
    rates = {
        stage: (len(times) - 1) / (max(times) - min(times)).total_seconds() * 60
        for stage, times in ends.items()
        if len(times) > 1 and max(times) > min(times)
    }
    rnd.stages, rnd.end_to_end, rnd.to_serving = stages, end_to_end, to_serving
    rnd.events = [
        {"name": e.name, "time": e.time.isoformat(), "job": job_key(e), "version": list(version_key(e))}
        for name in WATCHED
        for e in named[name]
    ]
    rnd.counts = {
        "pipelines": len(rnd.pipelines),
        "client_errors": sum(1 for p in rnd.pipelines if p.error),
        "training_failed": sum(1 for p in rnd.pipelines if p.job_id in failed),
        "compared": len(end_to_end),
        "promoted": promoted,
        "deployed": deployed,
        "superseded_before_rollout": superseded,
        "deployment_failed": len(named["deployment.failed"]),
        "rolled_back": len(named["deployment.rolled_back"]),
        "redelivered_starts": redelivered,
        "jobs_per_trainer": sorted(workers.values(), reverse=True),
        "completions_per_min": rates,
    }
    return all_done, max(done_at) if done_at else None


def run_round(
    platform: EmbeddedPlatform,
    client: la.Client,
    events: Events,
    trainers: int,
    evaluators: int,
    args: argparse.Namespace,
) -> Round:
    base = pl.from_pandas(load_diabetes(as_frame=True).frame)
    tag = f"t{trainers}e{evaluators}-{uuid.uuid4().hex[:4]}"
    pipes = [Pipeline(i, f"load-{i % args.models}") for i in range(args.pipelines)]
    rnd = Round(trainers, evaluators, datetime.now(UTC), pipes, platform.nats_nodes)
    busy0, total0 = busy_jiffies()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients, thread_name_prefix="bench-client") as pool:
        for pipe in pipes:
            pool.submit(run_pipeline, client, base, pipe, tag, t0)
    deadline = t0 + args.timeout
    finished_at: datetime | None = None
    while time.perf_counter() < deadline:
        rnd.done, finished_at = analyse(rnd, events.snapshot())
        if rnd.done:
            break
        if events.error is not None:
            print(f"  the event stream ended: {events.error}", file=sys.stderr)
            break
        time.sleep(1.0)
    busy1, total1 = busy_jiffies()
    rnd.cores_busy = (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
    end = finished_at if rnd.done and finished_at is not None else datetime.now(UTC)
    rnd.seconds = (end - rnd.started).total_seconds()
    return rnd


async def auto_promote(platform: EmbeddedPlatform, names: list[str]) -> None:
    async with client_channel(platform.addresses["registry"], platform.api_key) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        for name in names:
            policy = events_pb2.PromotionPolicy(auto_promote=True)
            await stub.SetPromotionPolicy(registry_pb2.SetPromotionPolicyRequest(model_name=name, policy=policy))


def prepare(platform: EmbeddedPlatform, client: la.Client, models: int) -> None:
    """A first version of each model, made champion, auto-promotion on, a deployment following ``champion``."""
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    first = client.datasets.upload(frame, name="load-base", progress=False)
    names = [f"load-{k}" for k in range(models)]
    for name in names:
        model = la.models.Ridge()
        model.fit(first, "target", model_name=name, progress=False)
        client.models.set_alias(name, "champion", model.version, expected_version=0)
        client.deployments.deploy(name, name, model.version, follow="champion")
    asyncio.run(auto_promote(platform, names))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def rate(r: Round) -> float:
    """Pipelines a minute."""
    return len(r.pipelines) / r.seconds * 60


def versus_single_node(rounds: list[Round]) -> list[list[str]]:
    """Each round on a cluster beside the single node's round of the same trainers and evaluators: ratios."""
    single = {(r.trainers, r.evaluators): r for r in rounds if r.nodes == 1}
    rows = [
        ["NATS nodes", "trainers", "evaluators", "pipelines/min", "vs 1 node", "p50 s vs 1 node", "p99 s vs 1 node"]
    ]
    for r in rounds:
        base = single.get((r.trainers, r.evaluators))
        if r.nodes == 1 or base is None:
            continue
        p50, p99 = pct(r.end_to_end, 50), pct(r.end_to_end, 99)
        b50, b99 = pct(base.end_to_end, 50), pct(base.end_to_end, 99)
        rows.append(
            [
                str(r.nodes),
                str(r.trainers),
                str(r.evaluators),
                f"{rate(r):.1f} (1 node: {rate(base):.1f})",
                f"{rate(r) / rate(base):.2f}x",
                f"{p50:.1f} / {b50:.1f} = {p50 / b50:.2f}x",
                f"{p99:.1f} / {b99:.1f} = {p99 / b99:.2f}x",
            ]
        )
    return rows


def report(rounds: list[Round]) -> str:
    out: list[str] = []
    first = {r.nodes: r for r in reversed(rounds)}  # each node count's first round: its trainers' baseline
    rows = [["NATS nodes", "trainers", "evaluators", "done", "seconds", "pipelines/min", "vs first round"]]
    rows[0] += ["cores busy", "jobs per trainer"]
    for r in rounds:
        baseline = first[r.nodes]
        rows.append(
            [
                str(r.nodes),
                str(r.trainers),
                str(r.evaluators),
                f"{r.counts['compared']}/{len(r.pipelines)}" + ("" if r.done else " (timed out)"),
                f"{r.seconds:.0f}",
                f"{rate(r):.1f}",
                f"{rate(r) / rate(baseline):.2f}x ({baseline.trainers} trainers)",
                f"{r.cores_busy:.2f}",
                "/".join(str(n) for n in r.counts["jobs_per_trainer"]),
            ]
        )
    out.append(render(rows))
    versus = versus_single_node(rounds)
    if len(versus) > 1:
        out.append("\nthe same rounds on a NATS cluster, beside one nats-server (same run, same machine):")
        out.append(render(versus))
    for r in rounds:
        mean_total = statistics.fmean(r.end_to_end) if r.end_to_end else float("nan")
        rows = [["stage", "n", "p50 s", "p99 s", "mean s", "share"]]
        shares: dict[str, float] = {}
        for stage in STAGES:
            values = r.stages.get(stage, [])
            mean = statistics.fmean(values) if values else float("nan")
            # Optional stages count for the pipelines that had them, spread over all.
            share = sum(values) / len(r.pipelines) / mean_total if values and mean_total else 0.0
            rows.append([stage, str(len(values)), f"{pct(values, 50):.2f}", f"{pct(values, 99):.2f}", f"{mean:.2f}"])
            if stage in ("promote", "deploy"):  # after a pipeline is done: not in its latency
                rows[-1].append("")
            else:
                shares[stage] = share
                rows[-1].append(f"{share:.0%}")
        rows.append(["pipeline (start → compared)", str(len(r.end_to_end)), f"{pct(r.end_to_end, 50):.1f}"])
        rows[-1] += [f"{pct(r.end_to_end, 99):.1f}", f"{mean_total:.1f}", ""]
        rows.append(["start → champion served", str(len(r.to_serving)), f"{pct(r.to_serving, 50):.1f}"])
        rows[-1] += [f"{pct(r.to_serving, 99):.1f}", f"{statistics.fmean(r.to_serving or [float('nan')]):.1f}", ""]
        top = max(shares, key=lambda s: shares[s])
        c = r.counts
        out.append(
            f"\n{r.nodes} NATS node(s), {r.trainers} trainer(s), {r.evaluators} evaluator(s): "
            f"{c['compared']}/{c['pipelines']} compared, "
            f"{c['promoted']} promoted, "
            f"{c['deployed']} rolled out, {c['superseded_before_rollout']} superseded before theirs; "
            f"failures: {c['client_errors']} client, {c['training_failed']} training, "
            f"{c['deployment_failed']} deployment, {c['rolled_back']} rolled back; "
            f"{c['redelivered_starts']} redelivered job starts"
        )
        out.append(render(rows))
        rates = c["completions_per_min"]
        pace = ", ".join(f"{stage} {rate:.0f}" for stage, rate in rates.items())
        out.append(f"completions a minute, first to last of the round: {pace}")
        out.append(f"bottleneck: {top} ({shares[top]:.0%} of the mean pipeline)")
    return "\n".join(out)


def run_platform(nodes: int, counts: list[int], key: str, args: argparse.Namespace, rounds: list[Round]) -> float:
    """Every round of the plan on a fresh platform of ``nodes`` NATS nodes, appended to ``rounds``; the seconds
    the platform took to start."""
    with tempfile.TemporaryDirectory(prefix="load-pipelines-") as tmp:
        workdir = (args.workdir or Path(tmp)) / f"nats-{nodes}"
        started = time.perf_counter()
        platform = EmbeddedPlatform(
            workdir, api_key=key, settings={"deployer": {"auto_deploy": "false"}}, nats_nodes=nodes
        )
        with platform, la.Client(key, platform.url) as client:
            start_s = time.perf_counter() - started
            events = Events(client)
            try:
                prepare(platform, client, args.models)
                running = {"trainer": 1, "evaluator": 1}
                plan = [(n, 1) for n in counts] + ([(counts[-1], args.evaluators)] if args.evaluators > 1 else [])
                for trainers, evaluators in plan:
                    for service, want in (("trainer", trainers), ("evaluator", evaluators)):
                        while running[service] < want:
                            platform.add_worker(service)
                            running[service] += 1
                    waited = settle(platform)
                    print(
                        f"round on {nodes} NATS node(s): {args.pipelines} pipelines, {trainers} trainer(s), "
                        f"{evaluators} evaluator(s) "
                        f"(settled {waited:.0f} s) ...",
                        flush=True,
                    )
                    rounds.append(run_round(platform, client, events, trainers, evaluators, args))
            finally:
                events.close()
    return start_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipelines", type=int, default=100, help="pipelines a round (default 100)")
    parser.add_argument("--trainers", default="1,2,4", help="trainer processes of each round, ascending")
    parser.add_argument("--models", type=int, default=5, help="model names the pipelines share (default 5)")
    parser.add_argument(
        "--evaluators",
        type=int,
        default=1,
        help="a last, diagnostic round with this many evaluator processes (and the most trainers); 1: none",
    )
    parser.add_argument("--clients", type=int, default=16, help="SDK threads uploading and submitting")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds a round may take")
    parser.add_argument(
        "--nats-nodes",
        default="1",
        help="NATS nodes of each platform, in turn (1,3: every round on one nats-server, then on a 3-node cluster)",
    )
    parser.add_argument("--json", type=Path, help="write every pipeline's stages and the machine here")
    parser.add_argument("--workdir", type=Path, help="keep the platform's files and logs here")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.trainers.split(",")})
    info = machine_info(("nvidia-pytriton", "scikit-learn", "nats-py", "grpcio"))
    key = uuid.uuid4().hex
    rounds: list[Round] = []
    starts: dict[int, float] = {}
    for nodes in [int(n) for n in args.nats_nodes.split(",")]:
        starts[nodes] = run_platform(nodes, counts, key, args, rounds)
    print(render([["machine", "value"], *([k, str(info[k])] for k in ("cpu_count", "loadavg_at_start", "platform"))]))
    print(
        f"\nplatform start {', '.join(f'{s:.0f} s on {n} node(s)' for n, s in starts.items())} (not counted); "
        f"{args.pipelines} pipelines a round, {args.models} models, "
        f"{args.clients} client threads\n"
    )
    print(report(rounds))
    if args.json:
        doc = {
            "machine": info,
            "args": {k: str(v) for k, v in vars(args).items()},
            "rounds": [
                {
                    "nats_nodes": r.nodes,
                    "trainers": r.trainers,
                    "evaluators": r.evaluators,
                    "seconds": r.seconds,
                    "done": r.done,
                    "cores_busy": r.cores_busy,
                    "counts": r.counts,
                    "stages": r.stages,
                    "end_to_end": r.end_to_end,
                    "to_serving": r.to_serving,
                    "client": [vars(p) for p in r.pipelines],
                    "events": r.events,
                }
                for r in rounds
            ],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
