"""NATS admits only the platform's identities, each to what it uses (issue 16, item 1), played as an attacker.

On the embedded platform (real nats-server, the six services, Triton): a connection without
credentials, or with a key the server does not know, is refused; the trainer's identity cannot
publish a registry event (nothing lands in the EVENTS stream) nor read a bucket it has no
business with; the serving identity publishes prediction logs only; an integrator's credentials
for one tenant see that tenant's events and no other's, and publish nothing. Beside the
attacks, each identity's legitimate path works on the same connection, so a refusal is the
permission's doing, not a broken connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import polars as pl
import pytest
from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import errors as js_errors

import lepton_ai as la
from lepton_core import events, nats_identity
from lepton_core.bus import EVENTS_STREAM, connect
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

#: How long a refused JetStream request waits for the answer that never comes.
REFUSED_S = 2.0


async def _as(platform: EmbeddedPlatform, identity: str, errors: list[str]) -> NATS:
    """A connection as one of the platform's identities; the server's refusals collect in ``errors``."""
    assert platform.nats_secrets is not None

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    return await nats.connect(
        platform.nats_url,
        name=f"attacker-as-{identity}",
        nkeys_seed=str(platform.nats_secrets.seed_file(identity)),
        inbox_prefix=nats_identity.inbox_prefix(identity),
        error_cb=on_error,
        allow_reconnect=False,
    )


async def _refused(call: Callable[[], Awaitable[Any]]) -> None:
    """``call`` gets no answer: the server dropped the request as a permissions violation."""
    with pytest.raises((NatsError, TimeoutError, js_errors.Error)):
        await call()


async def _landed(platform: EmbeddedPlatform, subject: str, event_id: str) -> bool:
    """Whether the EVENTS stream holds the event ``event_id`` on ``subject`` (read as the admin)."""
    nc = await admin_connect(platform.nats_url, "test-check-events")
    try:
        msg = await nc.jetstream().get_last_msg(EVENTS_STREAM, subject)
        return bool((msg.headers or {}).get("ce-id") == event_id)
    except js_errors.NotFoundError:
        return False
    finally:
        await nc.close()


def _forged_version(tenant: str) -> tuple[events_pb2.ModelVersionCreated, str]:
    event = events_pb2.ModelVersionCreated(tenant=tenant)
    event.lineage.model_name = "forged"
    event.lineage.model_version = 99
    return event, f"forged:{uuid.uuid4().hex}"


async def test_a_connection_without_credentials_is_refused(platform: EmbeddedPlatform) -> None:
    # Without a connection there is nothing to read: no event, KV bucket, object store or stream.
    with pytest.raises(NatsError, match=r"(?i)authorization violation"):
        await nats.connect(platform.nats_url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)
    with pytest.raises(NatsError, match=r"(?i)authorization violation"):
        await nats.connect(platform.nats_url, user="admin", password="admin", allow_reconnect=False, connect_timeout=3)


async def test_a_key_the_server_does_not_know_is_refused(platform: EmbeddedPlatform, tmp_path: Path) -> None:
    seed_file = tmp_path / "stranger.nk"
    nats_identity.write_private(seed_file, nats_identity.new_seed())
    with pytest.raises(NatsError, match=r"(?i)authorization violation"):
        await nats.connect(platform.nats_url, nkeys_seed=str(seed_file), allow_reconnect=False, connect_timeout=3)


async def test_the_trainer_cannot_publish_another_service_s_event(
    platform: EmbeddedPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    assert platform.nats_secrets is not None
    forged, event_id = _forged_version(platform.tenant)
    subject = f"lepton.evt.{platform.tenant}.registry.version.created"
    headers = events.headers_for(forged, event_id=event_id, source="/lepton/registry", ce_subject="forged")
    # Through lepton_core.bus.connect, as the trainer itself connects: the refusal is logged, naming it.
    caplog.set_level(logging.ERROR, logger="lepton_core.bus")
    nc = await connect(
        platform.nats_url,
        "lepton-trainer",
        seed_file=str(platform.nats_secrets.seed_file("trainer")),
        inbox=nats_identity.inbox_prefix("trainer"),
    )
    try:
        js = nc.jetstream(timeout=REFUSED_S)
        await _refused(lambda: js.publish(subject, forged.SerializeToString(), headers=headers))
        await nc.publish(subject, forged.SerializeToString(), headers=headers)  # core NATS: no better
        await nc.flush()
        # Its own bucket answers on the same connection.
        jobs = await js.key_value("jobs")
        assert (await jobs.status()).bucket == "jobs"
    finally:
        await nc.close()
    assert not await _landed(platform, subject, event_id)
    refusals = [r.getMessage() for r in caplog.records if "permissions violation" in r.getMessage()]
    assert any("lepton-trainer" in m and subject in m for m in refusals), refusals


async def test_the_trainer_cannot_read_buckets_it_has_no_business_with(platform: EmbeddedPlatform) -> None:
    errors: list[str] = []
    nc = await _as(platform, "trainer", errors)
    try:
        js = nc.jetstream(timeout=REFUSED_S)
        await _refused(lambda: js.key_value("models"))
        await _refused(lambda: js.key_value("deployments"))
        await _refused(lambda: js.get_last_msg("KV_models", "$KV.models.>", direct=True))
        # Nor snoop on the registry's writes or another identity's replies.
        await nc.subscribe("$KV.models.>")
        await nc.subscribe("_INBOX.registry.>")
        await nc.flush()
        # What it uses works on the same connection: datasets to read, its own jobs.
        assert (await (await js.object_store("datasets")).status()).bucket == "datasets"
        assert (await (await js.key_value("jobs")).status()).bucket == "jobs"
    finally:
        await nc.close()
    assert any("kv_models" in e for e in errors), errors
    assert any("kv_deployments" in e for e in errors), errors
    assert any('subscription to "$kv.models.>"' in e for e in errors), errors
    assert any('subscription to "_inbox.registry.>"' in e for e in errors), errors


async def test_the_serving_identity_only_publishes_prediction_logs(platform: EmbeddedPlatform) -> None:
    forged, event_id = _forged_version(platform.tenant)
    subject = f"lepton.evt.{platform.tenant}.registry.version.created"
    errors: list[str] = []
    nc = await _as(platform, "serving", errors)
    try:
        await nc.publish(subject, forged.SerializeToString(), headers={"ce-id": event_id, "Nats-Msg-Id": event_id})
        await nc.subscribe("lepton.pred.>")  # nor read other models' logs
        await nc.flush()
        await _refused(lambda: nc.jetstream(timeout=REFUSED_S).key_value("artifacts"))
    finally:
        await nc.close()
    assert not await _landed(platform, subject, event_id)
    assert any(f'publish to "{subject}"' in e for e in errors), errors
    assert any('subscription to "lepton.pred.>"' in e for e in errors), errors


def test_seed_files_are_private_to_their_owner(platform: EmbeddedPlatform) -> None:
    assert platform.nats_secrets is not None
    directory = platform.nats_secrets.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert platform.nats is not None
    users = platform.nats.users_file.read_text()
    for identity in nats_identity.IDENTITIES:
        path = platform.nats_secrets.seed_file(identity)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        seed = path.read_text().strip()
        # The server knows public keys only; services get the file's path, never the secret itself.
        assert seed not in users and platform.nats_secrets.public_key(identity) in users
        assert seed not in " ".join(os.environ.values())
        for process in platform.processes.values():
            assert seed not in " ".join(process.proc.args)  # type: ignore[arg-type]


async def _collect(nc: NATS, subject: str, into: list[Msg]) -> None:
    async def on_msg(msg: Msg) -> None:
        into.append(msg)

    await nc.subscribe(subject, cb=on_msg)


async def test_integrator_credentials_see_their_tenant_s_events_and_nobody_else_s(
    platform: EmbeddedPlatform,
) -> None:
    seed = platform.event_credentials(platform.tenant)
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(platform.nats_url, nkeys_seed=str(seed), error_cb=on_error, allow_reconnect=False)
    ours: list[Msg] = []
    theirs: list[Msg] = []
    everyone: list[Msg] = []
    try:
        await _collect(nc, f"lepton.evt.{platform.tenant}.>", ours)
        await _collect(nc, "lepton.evt.intruder.>", theirs)
        await _collect(nc, "lepton.evt.*.dataset.>", everyone)
        await nc.flush()
        # Both tenants upload a dataset through the platform; the data service announces each.
        names = {tenant: f"nats-integrator-{tenant}-{uuid.uuid4().hex[:6]}" for tenant in (platform.tenant, "intruder")}
        frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "target": [0.5, 1.0, 1.5, 2.0]})
        for tenant, name in names.items():
            key = platform.api_key if tenant == platform.tenant else platform.key_for(tenant)
            with la.Client(key, url=platform.url) as client:
                await asyncio.to_thread(client.datasets.upload, frame, name=name, progress=False)
        mine = f"lepton.evt.{platform.tenant}.dataset.version.created"
        for _ in range(100):
            if any(m.subject == mine and names[platform.tenant].encode() in m.data for m in ours):
                break
            await asyncio.sleep(0.1)
        # It cannot publish, not even into its own tenant's subjects, nor use JetStream.
        forged, event_id = _forged_version(platform.tenant)
        forged_subject = f"lepton.evt.{platform.tenant}.registry.version.created"
        await nc.publish(forged_subject, forged.SerializeToString(), headers={"ce-id": event_id})
        await nc.flush()
        await _refused(lambda: nc.jetstream(timeout=REFUSED_S).key_value("datasets"))
    finally:
        await nc.close()
    assert any(m.subject == mine and names[platform.tenant].encode() in m.data for m in ours), [m.subject for m in ours]
    assert all(m.subject.startswith(f"lepton.evt.{platform.tenant}.") for m in ours)
    assert theirs == [] and everyone == []
    assert any('subscription to "lepton.evt.intruder.>"' in e for e in errors), errors
    assert any('subscription to "lepton.evt.*.dataset.>"' in e for e in errors), errors
    assert any(f'publish to "{forged_subject}"' in e for e in errors), errors
    assert not await _landed(platform, forged_subject, event_id)


def test_integrator_credentials_are_refused_for_a_tenant_pattern(platform: EmbeddedPlatform) -> None:
    from lepton_core.errors import InvalidArgument

    for bad in ("a.b", "*", ">", "a b", ""):
        with pytest.raises(InvalidArgument, match="tenant"):
            platform.event_credentials(bad)


async def test_a_service_cannot_report_another_s_tenant_purge_nor_hear_the_reports(platform: EmbeddedPlatform) -> None:
    """Deleting a tenant ends when all six services report on ``lepton.access.purged.<service>``: a forged
    report would end it early, with data left behind. The trainer may report only as itself, and the
    registry checks even that report against a deletion in progress."""
    errors: list[str] = []
    nc = await _as(platform, "trainer", errors)
    try:
        forged = b'{"tenant": "%s", "records": 0}' % platform.tenant.encode()
        await nc.publish(f"{nats_identity.PURGED_ROOT}.monitor", forged)  # the monitor's report, by the trainer
        await nc.subscribe(f"{nats_identity.PURGED_ROOT}.>")  # nor listen to the reports
        await nc.flush()
        # Its own subject is open to it, and the registry answers: no deletion of that tenant is under way.
        answer = await nc.request(f"{nats_identity.PURGED_ROOT}.trainer", forged, timeout=5)
        assert answer.data.startswith(b"refused:") and b"is not being deleted" in answer.data, answer.data
    finally:
        await nc.close()
    assert any(f'publish to "{nats_identity.PURGED_ROOT}.monitor"' in e for e in errors), errors
    assert any(f'subscription to "{nats_identity.PURGED_ROOT}.>"' in e for e in errors), errors
