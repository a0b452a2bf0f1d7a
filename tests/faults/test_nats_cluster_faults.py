"""What the platform keeps on a 3-node NATS cluster (issue 19): three ``nats-server`` processes on loopback
(:class:`lepton_platform.processes.NatsCluster`: routes over mutual TLS, every stream, KV bucket and object
store on all three), the six services listing every node, on a platform of this module's own.

Proves, with SDK fits (upload, train, evaluate, register) in flight and a writer of this module's own
publishing through it all, each write retried under its ``Nats-Msg-Id`` until acknowledged:

* ``kill -9`` of the node leading the EVENTS stream, then of the one leading JOBS, each restarted
  :data:`DOWN_S` later: every fit in flight returns its model with exactly one version; no write
  acknowledged before, during or after is lost; nothing stored before the first kill is lost; the
  restarted node catches up (every stream's replicas current again);
* losing two of the three nodes: a write through the platform is refused with UNAVAILABLE (the SDK's
  ``Unavailable``: try again), not an internal error, within :data:`REFUSED_WITHIN_S`; nothing stored
  before is lost; once the two are back, the same call succeeds, a new fit completes, and both catch up.

What a leader's loss costs the pipelines in flight (the seconds until they complete) and how long the
refusal takes are printed; docs/operations.md says what an operator sees and does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from nats.js import JetStreamContext
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_ai.jobs import state_name
from lepton_core.bus import EVENTS_STREAM, JOBS_STREAM
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import NatsCluster

from .fits import fits_in_flight, wait_running
from .store import PROBE_STREAM, Loop, Writer, add_probe_stream, lost_records, lost_writes, poll, store_snapshot, stored

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

#: How long a killed node stays down before it is started again.
DOWN_S = 5.0
#: Fits in flight at each leader's kill.
FITS = 2
#: How soon a write with two of three nodes gone must be refused: the services ride a failover for
#: ``lepton_core.failover.FAILOVER_S`` (20 s) before they give up; this leaves room for a loaded machine.
REFUSED_WITHIN_S = 45.0
#: How soon a restarted node's replicas must be current again.
CATCH_UP_S = 60.0


@dataclass
class Run:
    """What happened around the faults: what each check below reads."""

    names: list[str] = field(default_factory=list)
    models: list[la.models.Model] = field(default_factory=list)
    leaders: dict[str, str] = field(default_factory=dict)
    """The node each stream's leader was on when it was killed."""
    completed_s: dict[str, float] = field(default_factory=dict)
    """Seconds from each leader's kill until the fits in flight had all returned."""
    caught_up: dict[str, bool] = field(default_factory=dict)
    before: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    after_leaders: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    before_quorum_loss: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    after_quorum_loss: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    refusal: BaseException | None = None
    refused_after_s: float = 0.0
    resumed: la.models.Model | None = None
    resumed_key: str = ""
    writer: Writer | None = None
    probe: dict[int, tuple[str, str]] = field(default_factory=dict)


async def leader_of(js: JetStreamContext, stream: str) -> str:
    info = await js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
    return info.cluster.leader


async def all_current(js: JetStreamContext) -> bool:
    """Whether every stream's replicas are all online, current and without lag: a restarted node caught up."""
    for info in await js.streams_info():
        peers = info.cluster.replicas if info.cluster else None
        if not peers or len(peers) != 2:
            return False
        if any(not p.current or getattr(p, "offline", False) or (p.lag or 0) > 0 for p in peers):
            return False
    return True


def caught_up(nats: Loop) -> bool:
    """Whether every stream's replicas are current again within :data:`CATCH_UP_S`."""
    try:
        poll(lambda: nats.run(all_current(nats.js)), CATCH_UP_S, "every replica current")
    except AssertionError:
        return False
    return True


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPlatform]:
    """A platform on three nodes for this module alone (no Triton: these faults are the store's)."""
    workdir: Path = tmp_path_factory.mktemp("faults-cluster")
    with EmbeddedPlatform(workdir, api_key=secrets.token_urlsafe(16), nats_nodes=3, triton=False) as platform:
        yield platform


@pytest.fixture(scope="module")
def run(own: EmbeddedPlatform) -> Iterator[Run]:
    cluster: NatsCluster = own.nats_cluster
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    with la.Client(own.api_key, own.url) as client:
        version_id = client.datasets.upload(frame, name="cluster-faults-diabetes", progress=False).version_id
    nats = Loop(own)
    out = Run()
    try:
        nats.run(add_probe_stream(nats.js, replicas=3))
        writer = out.writer = Writer(nats.js)
        writing = nats.start(writer.run())
        out.before = nats.run(store_snapshot(nats.js))
        for stream in (EVENTS_STREAM, JOBS_STREAM):
            names = [f"cluster-{stream.lower()}-{i}-{secrets.token_hex(2)}" for i in range(FITS)]
            futures = fits_in_flight(own, version_id, names, epochs=60)
            wait_running(own, names)
            leader = out.leaders[stream] = nats.run(leader_of(nats.js, stream))
            node = cluster.index_of(leader)
            killed = time.monotonic()
            cluster.kill(node)
            time.sleep(DOWN_S)
            cluster.restart(node)
            out.models += [f.result(timeout=300) for f in futures]
            out.names += names
            out.completed_s[stream] = time.monotonic() - killed
            out.caught_up[f"{leader} after its kill"] = caught_up(nats)
        out.after_leaders = nats.run(store_snapshot(nats.js))

        # Two of three lost: no stream has a quorum.
        out.before_quorum_loss = nats.run(store_snapshot(nats.js))
        down = [cluster.index_of(nats.run(leader_of(nats.js, EVENTS_STREAM)))]
        down.append(next(i for i in range(cluster.size) if i not in down))
        for node in down:
            cluster.kill(node)
        with la.Client(own.api_key, own.url) as client:
            asked = time.monotonic()
            try:
                client.keys.create("viewer", name="cluster-faults-refused")
            except la.errors.LeptonError as exc:
                out.refusal = exc
            out.refused_after_s = time.monotonic() - asked
            for node in down:
                cluster.restart(node)
            out.resumed_key = poll(
                lambda: client.keys.create("viewer", name="cluster-faults-resumed").key, 120, "a write after quorum"
            )
            out.resumed = la.models.Ridge().fit(
                client.datasets.get(version_id), "target", model_name="cluster-faults-resumed", progress=False
            )
        nats.loop.call_soon_threadsafe(writer.stop.set)
        writing.result(60)
        out.caught_up["the two nodes after the quorum's loss"] = caught_up(nats)
        out.after_quorum_loss = nats.run(store_snapshot(nats.js))
        out.probe = nats.run(stored(nats.js, PROBE_STREAM))
        print(
            f"\ncluster faults: leaders killed {out.leaders}; fits in flight done {out.completed_s} s after each kill; "
            f"two of three down: refused after {out.refused_after_s:.1f} s ({type(out.refusal).__name__}); "
            f"the store took no write for {[round(gap, 1) for gap in writer.gaps]} s"
        )
        yield out
    finally:
        nats.close()


def test_every_fit_in_flight_at_a_leader_s_kill_returns_with_exactly_one_version(
    own: EmbeddedPlatform, run: Run
) -> None:
    """The fits in flight when the EVENTS leader's node died, then the JOBS leader's, each return version 1 of
    their model; their jobs succeeded; the registry holds exactly one version a pipeline."""
    assert set(run.leaders) == {EVENTS_STREAM, JOBS_STREAM}
    with la.Client(own.api_key, own.url) as client:
        for name, model in zip(run.names, run.models, strict=True):
            assert model.model_name == name and model.version == 1, (name, model.version)
            versions = client.models.versions(name)
            assert [v.version for v in versions] == [1], (name, [v.version for v in versions])
            assert state_name(client.jobs.get(versions[0].lineage.training_job_id).state) == "succeeded"


def test_no_acknowledged_write_is_lost_through_every_fault(run: Run) -> None:
    """The writer published through both leaders' kills and the quorum's loss: every write it saw
    acknowledged is at the sequence its ack named, once; and it did see writes go unanswered."""
    assert run.writer is not None
    assert run.writer.unanswered > 0, "the writer never saw an outage"
    assert len(run.writer.acked) > 100, len(run.writer.acked)
    lost = lost_writes(run.writer, run.probe)
    assert not lost, f"{len(lost)} acknowledged writes are not in the store: {sorted(lost.items())[:5]}"
    assert len(set(run.probe.values())) == len(run.probe), "a write is stored twice"


def test_nothing_stored_is_lost_when_leaders_die_or_the_quorum_is_lost(run: Run) -> None:
    """Every event, audit record, dataset, artifact and record stored before the first kill is there after
    the leaders' kills; everything stored before the quorum's loss is there after it returned."""
    assert run.before[EVENTS_STREAM] and run.before["OBJ_datasets"]
    lost = lost_records(run.before, run.after_leaders)
    assert not lost, f"lost across the leaders' kills: {lost[:5]}"
    lost = lost_records(run.before_quorum_loss, run.after_quorum_loss)
    assert not lost, f"lost across the quorum's loss: {lost[:5]}"


def test_a_restarted_node_catches_up(run: Run) -> None:
    """Each killed leader's node, restarted, and the two nodes restarted after the quorum's loss, are current
    replicas of every stream again within :data:`CATCH_UP_S`."""
    assert run.caught_up and all(run.caught_up.values()), run.caught_up


def test_without_a_quorum_writes_are_refused_as_retryable_and_resume_when_it_returns(run: Run) -> None:
    """Two nodes of three down: a key's creation is refused with UNAVAILABLE (retryable), not an internal
    error, within :data:`REFUSED_WITHIN_S`; with them back, the same call succeeds and a fit completes."""
    assert isinstance(run.refusal, la.errors.Unavailable), repr(run.refusal)
    assert "try again" in str(run.refusal), str(run.refusal)
    assert run.refused_after_s < REFUSED_WITHIN_S, run.refused_after_s
    assert run.resumed_key
    assert run.resumed is not None and run.resumed.version == 1
