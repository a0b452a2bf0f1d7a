"""Events are trusted only as far as their subject (issue 16, item 2), played as an attacker.

The attacker has some bus access (stolen credentials, a compromised service): it publishes
straight to NATS, here as the admin identity, so nothing but the consumers' own checks stands in
the way. Tenant ``intruder``'s subjects carry what it forges; tenant ``default`` is the victim:

- a body naming the victim on the attacker's subjects (an evaluation the registry would register,
  a version the deployer would deploy, a training result the evaluator would score, prediction logs
  the monitor would count);
- the attacker's own events whose object references point into the victim's prefix
  (``default/...``): registering or deploying the victim's artifact, evaluating on its data;
- a job of the victim on the attacker's job queue subject, and an attacker's job on the victim's data.

Each is dead-lettered by every consumer that receives it, with a ``Lepton-Error`` naming the field
and the mismatch, and nothing follows from it: no event derived from it on any subject, no registry
model, deployment or job, asked through the SDK as the victim and as the attacker.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from google.protobuf.message import Message
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2 as ev
from nats.aio.client import Client as NATS
from nats.js import api as js_api
from nats.js import errors as js_errors

import lepton_ai as la
from lepton_core import events
from lepton_core.bus import DEADLETTER_ROOT, DEADLETTER_STREAM, EVENTS_STREAM
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ATTACKER = "intruder"
#: Who receives a subject (its last tokens after the tenant): every one of them must dead-letter it.
RECEIVERS = {
    "evaluation.completed": ("registry",),
    "registry.version.created": ("deployer", "evaluator-compare", "monitor-events"),
    "training.completed": ("evaluator", "monitor-events"),
    "dataset.version.created": ("monitor-events",),
    "training": ("trainers",),  # lepton.jobs.<tenant>.training
    "pred": ("monitor",),  # lepton.pred.<tenant>.<deployment>
}
#: Longest wait for a dead letter (the consumers fetch every second).
WAIT_S = 60.0


def _hex() -> str:
    return uuid.uuid4().hex


def _ref(tenant: str, bucket: str = "artifacts") -> common_pb2.ObjectRef:
    name = f"{tenant}/{_hex()}{_hex()}.zip" if bucket == "artifacts" else f"{tenant}/dv_{_hex()}.parquet"
    return common_pb2.ObjectRef(bucket=bucket, name=name, digest=f"sha256:{_hex()}{_hex()}", size=1234)


def _lineage(model: str) -> common_pb2.Lineage:
    return common_pb2.Lineage(
        dataset_id=f"ds_{_hex()}",
        dataset_version_id=f"dv_{_hex()}",
        training_job_id=f"job_{_hex()}",
        evaluation_id=f"ev_{_hex()}",
        model_name=model,
        model_version=1,
    )


def _training(tenant: str, model: str, artifact_of: str, data_of: str) -> ev.TrainingCompleted:
    return ev.TrainingCompleted(
        tenant=tenant,
        lineage=_lineage(model),
        algorithm="ridge",
        target="y",
        features=["x"],
        artifact=_ref(artifact_of),
        dataset_object=_ref(data_of, "datasets"),
        split_seed=7,
        test_fraction=0.2,
        model_name=model,
        task="regression",
    )


def _version(tenant: str, model: str, artifact_of: str) -> ev.ModelVersionCreated:
    return ev.ModelVersionCreated(
        tenant=tenant,
        lineage=_lineage(model),
        artifact=_ref(artifact_of),
        features=["x"],
        target="y",
        algorithm="ridge",
        dataset_object=_ref(tenant, "datasets"),
        split_seed=7,
        test_fraction=0.2,
    )


class Attack:
    """Forged messages published straight to NATS, and the dead letters they must become."""

    def __init__(self, nc: NATS, marker: str) -> None:
        self.js = nc.jetstream()
        self.marker = marker
        self.started = datetime.now(UTC) - timedelta(seconds=1)
        #: (durable, event id) -> the field the refusal must name.
        self.expected: dict[tuple[str, str], str] = {}
        self.ids: set[str] = set()
        #: (stream, sequence) of every forged message, deleted after the test (see :meth:`clean_up`).
        self.stored: list[tuple[str, int]] = []

    async def publish(self, subject: str, message: Message, field: str) -> str:
        """Publishes ``message`` on ``subject`` as a well-formed CloudEvent; returns its id.

        Every consumer of ``subject`` (:data:`RECEIVERS`) must dead-letter it naming ``field``.
        """
        event_id = f"forged:{self.marker}:{len(self.ids)}"
        headers = events.headers_for(message, event_id=event_id, source="/lepton/registry", ce_subject=self.marker)
        ack = await self.js.publish(subject, message.SerializeToString(), headers=headers)
        self.stored.append((ack.stream, ack.seq))
        self.ids.add(event_id)
        tokens = subject.split(".")
        route = "pred" if tokens[1] == "pred" else ".".join(tokens[3:])
        self.expected.update({(durable, event_id): field for durable in RECEIVERS[route]})
        return event_id

    async def dead_letters(self) -> dict[tuple[str, str], str]:
        """Waits for every expected dead letter; (durable, event id) -> its ``Lepton-Error``."""
        config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=self.started)
        sub = await self.js.subscribe(
            f"{DEADLETTER_ROOT}.>", stream=DEADLETTER_STREAM, ordered_consumer=True, config=config
        )
        found: dict[tuple[str, str], str] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        try:
            while set(self.expected) - set(found) and loop.time() < deadline:
                try:
                    msg = await sub.next_msg(timeout=1)
                except TimeoutError:
                    continue
                key = (msg.subject.split(".")[2], (msg.headers or {}).get("ce-id", ""))
                if key in self.expected:
                    found[key] = (msg.headers or {}).get("Lepton-Error", "")
        finally:
            await sub.unsubscribe()
        assert not set(self.expected) - set(found), f"not dead-lettered: {sorted(set(self.expected) - set(found))}"
        for key, field in self.expected.items():
            assert found[key].startswith(f"InvalidArgument: {field}: "), (key, found[key])
        return found

    async def clean_up(self) -> None:
        """Deletes the forged messages from their streams (their dead letters stay).

        The platform is shared by the session's tests, and the others read every event on the
        bus as the platform's own (a CloudEvent with a trace, a tenant matching its subject).
        """
        for stream, seq in self.stored:
            with contextlib.suppress(js_errors.APIError):  # "no message found": a work queue drops what was terminated
                await self.js.delete_msg(stream, seq)

    async def derived_events(self) -> list[str]:
        """Subjects of events since the attack that carry its marker, other than the forged ones."""
        config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=self.started)
        sub = await self.js.subscribe("lepton.evt.>", stream=EVENTS_STREAM, ordered_consumer=True, config=config)
        out = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=2)
                except TimeoutError:
                    break
                if self.marker.encode() in msg.data and (msg.headers or {}).get("ce-id") not in self.ids:
                    out.append(msg.subject)
                if not msg.metadata.num_pending:
                    break
        finally:
            await sub.unsubscribe()
        return out


@pytest_asyncio.fixture
async def attack(platform: EmbeddedPlatform) -> AsyncIterator[Attack]:
    nc = await admin_connect(platform.nats_url, "attacker")
    try:
        attack = Attack(nc, f"forged-{_hex()[:10]}")
        try:
            yield attack
        finally:
            await attack.clean_up()
    finally:
        await nc.close()


@pytest.fixture
def victim(platform: EmbeddedPlatform) -> Iterator[la.Client]:
    with la.Client(platform.api_key, platform.url) as c:
        yield c


@pytest.fixture
def attacker(platform: EmbeddedPlatform) -> Iterator[la.Client]:
    with la.Client(platform.key_for(ATTACKER), platform.url) as c:
        yield c


def _nothing_of(client: la.Client, model: str) -> None:
    with pytest.raises(la.NotFound):
        client.models.get(model)
    assert client.deployments.get_or_none(model) is None


async def test_a_body_naming_another_tenant_is_dead_lettered_by_every_consumer(
    platform: EmbeddedPlatform, attack: Attack, victim: la.Client, attacker: la.Client
) -> None:
    target = platform.tenant
    model = attack.marker
    on = f"lepton.evt.{ATTACKER}"
    # The registry would register a version of the victim's model, and announce it.
    evaluated = ev.EvaluationCompleted(tenant=target, lineage=_lineage(model), metrics={"r2": 0.9})
    evaluated.training.CopyFrom(_training(target, model, target, target))
    first = await attack.publish(f"{on}.evaluation.completed", evaluated, "tenant")
    # The deployer would deploy it for the victim; the evaluator compare it, the monitor record it.
    await attack.publish(f"{on}.registry.version.created", _version(target, model, target), "tenant")
    # The evaluator would score it and announce an evaluation for the victim.
    await attack.publish(f"{on}.training.completed", _training(target, model, target, target), "tenant")
    # Only the outer tenant is the attacker's: the nested one gives it away.
    sneaky = ev.EvaluationCompleted(tenant=ATTACKER, lineage=_lineage(model))
    sneaky.training.CopyFrom(_training(target, model, ATTACKER, ATTACKER))
    await attack.publish(f"{on}.evaluation.completed", sneaky, "training.tenant")
    # The monitor would count prediction logs of the victim's deployment.
    logs = ev.PredictionLogBatch(tenant=target, lineage=_lineage(model), feature_names=["x"], batch_id=model)
    logs.logs.add(log_id=model, batch_rows=1, inputs=[1.0], outputs=[2.0], logged_rows=1)
    await attack.publish(f"lepton.pred.{ATTACKER}.{model}", logs, "tenant")

    found = await attack.dead_letters()
    assert (
        f"tenant: the payload names tenant '{target}' but arrived on {on}.evaluation.completed of tenant '{ATTACKER}'"
        in found[("registry", first)]
    )
    assert await attack.derived_events() == []
    for client in (victim, attacker):
        _nothing_of(client, model)


async def test_an_object_reference_into_another_tenants_prefix_is_dead_lettered_before_it_is_read(
    platform: EmbeddedPlatform, attack: Attack, victim: la.Client, attacker: la.Client
) -> None:
    target = platform.tenant
    model = attack.marker
    on = f"lepton.evt.{ATTACKER}"
    # The attacker's own evaluation, registering the victim's artifact as the attacker's model.
    evaluated = ev.EvaluationCompleted(tenant=ATTACKER, lineage=_lineage(model), metrics={"r2": 0.9})
    evaluated.training.CopyFrom(_training(ATTACKER, model, target, ATTACKER))
    await attack.publish(f"{on}.evaluation.completed", evaluated, "training.artifact.name")
    # Its own version, deploying the victim's artifact; one compared against the victim's artifact.
    version = _version(ATTACKER, model, target)
    deployed = await attack.publish(f"{on}.registry.version.created", version, "artifact.name")
    champion = _version(ATTACKER, model, ATTACKER)
    champion.champion_version = 1
    champion.champion_artifact.CopyFrom(_ref(target))
    await attack.publish(f"{on}.registry.version.created", champion, "champion_artifact.name")
    # Its own training result, evaluated on the victim's data.
    await attack.publish(
        f"{on}.training.completed", _training(ATTACKER, model, ATTACKER, target), "dataset_object.name"
    )
    # A dataset version of its own whose object is the victim's (the monitor's drift reference).
    dataset = ev.DatasetVersionCreated(
        tenant=ATTACKER, lineage=_lineage(model), dataset_name=model, object=_ref(target, "datasets")
    )
    await attack.publish(f"{on}.dataset.version.created", dataset, "object.name")
    # A prefix that only starts like its own, a walk out of its own, and a store that is no object store.
    for name, field in (
        (f"{ATTACKER}x/a.zip", "artifact.name"),
        (f"{ATTACKER}/../{target}/a.zip", "artifact.name"),
        ("", "artifact.bucket"),
    ):
        walk = _version(ATTACKER, model, ATTACKER)
        if name:
            walk.artifact.name = name
        else:
            walk.artifact.bucket = "KV_models"
        await attack.publish(f"{on}.registry.version.created", walk, field)

    found = await attack.dead_letters()
    assert (
        f"artifact.name: object '{version.artifact.name}' in artifacts lies outside the prefix '{ATTACKER}/' "
        f"of tenant '{ATTACKER}'" in found[("deployer", deployed)]
    )
    assert await attack.derived_events() == []
    for client in (victim, attacker):
        _nothing_of(client, model)


async def test_a_job_on_another_tenants_queue_subject_is_dead_lettered_unrun(
    platform: EmbeddedPlatform, attack: Attack, victim: la.Client, attacker: la.Client
) -> None:
    target = platform.tenant
    model = attack.marker
    job = ev.TrainingRequested(
        tenant=target,
        lineage=_lineage(model),
        algorithm="ridge",
        target="y",
        dataset_object=_ref(target, "datasets"),
        split_seed=7,
        test_fraction=0.2,
        model_name=model,
    )
    queued = await attack.publish(f"lepton.jobs.{ATTACKER}.training", job, "tenant")
    # The attacker's own job, trained on the victim's dataset.
    theirs = ev.TrainingRequested()
    theirs.CopyFrom(job)
    theirs.tenant = ATTACKER
    await attack.publish(f"lepton.jobs.{ATTACKER}.training", theirs, "dataset_object.name")
    # The victim's job sent where another type's events go (to the evaluator and the monitor).
    elsewhere = await attack.publish(f"lepton.evt.{target}.training.completed", job, "ce-type")

    found = await attack.dead_letters()
    assert (
        f"tenant: the payload names tenant '{target}' but arrived on lepton.jobs.{ATTACKER}.training "
        f"of tenant '{ATTACKER}'" in found[("trainers", queued)]
    )
    assert (
        "ai.lepton.training.requested.v1 is published on lepton.jobs.<tenant>.training, not on"
        in (found[("evaluator", elsewhere)])
    )
    # No worker started either (training.started comes before anything else), for any tenant.
    assert await attack.derived_events() == []
    for client in (victim, attacker):
        with pytest.raises(la.NotFound):
            client.jobs.get(job.lineage.training_job_id)
    # Terminated on the work queue: nothing waits there to be delivered again.
    with pytest.raises(js_errors.NotFoundError):
        await attack.js.get_last_msg("JOBS", f"lepton.jobs.{ATTACKER}.training")
