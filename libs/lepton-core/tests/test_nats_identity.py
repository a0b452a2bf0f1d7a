"""The NATS permission table: each identity reaches what it uses and nothing else (no server needed).

``tests/security/test_nats_attacks.py`` plays the same rules against a real nats-server.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from lepton_core import nats_identity
from lepton_core.bus import DEADLETTER_STREAM, stream_of
from lepton_core.errors import InvalidArgument
from lepton_core.nats_identity import ADMIN, GRANTS, SERVING, Permissions, permissions

SERVICES = {"data": "dataset", "trainer": "training", "evaluator": "evaluation"}
SERVICES |= {"registry": "registry", "deployer": "deployment", "monitor": "monitor"}


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` the rest."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def _may_publish(perms: Permissions, subject: str) -> bool:
    allowed = any(_matches(p, subject) for p in perms.publish_allow)
    return allowed and not any(_matches(p, subject) for p in perms.publish_deny)


def _may_subscribe(perms: Permissions, subject: str) -> bool:
    return any(_matches(p, subject) for p in perms.subscribe_allow)


def test_the_matcher_matches_as_nats_does() -> None:
    assert _matches("lepton.evt.*.training.>", "lepton.evt.a.training.completed")
    assert not _matches("lepton.evt.*.training.>", "lepton.evt.a.registry.version.created")
    assert not _matches("a.*", "a.b.c") and _matches("a.>", "a.b.c") and not _matches("a.>", "a")


@pytest.mark.parametrize(("service", "other"), list(itertools.permutations(SERVICES, 2)))
def test_a_service_publishes_its_own_events_and_never_another_s(service: str, other: str) -> None:
    perms = permissions(service)
    assert _may_publish(perms, f"lepton.evt.acme.{SERVICES[service]}.something.happened")
    assert not _may_publish(perms, f"lepton.evt.acme.{SERVICES[other]}.something.happened")
    for durable in GRANTS[service].durables:
        assert _may_publish(perms, f"lepton.dlq.{durable}.acme")
    # Nor another service's durable consumers or dead letters.
    for durable in GRANTS[other].durables:
        assert not _may_publish(perms, f"$JS.API.CONSUMER.DELETE.EVENTS.{durable}")
        assert not _may_publish(perms, f"$JS.API.CONSUMER.MSG.NEXT.EVENTS.{durable}")
        assert not _may_publish(perms, f"lepton.dlq.{durable}.acme")


@pytest.mark.parametrize("identity", [i for i in nats_identity.IDENTITIES if i != ADMIN])
def test_no_identity_but_the_admin_changes_the_topology_or_reads_other_inboxes(identity: str) -> None:
    perms = permissions(identity)
    grants = GRANTS[identity]
    own = {f"KV_{b}" for b in grants.kv_write} | {f"OBJ_{b}" for b in grants.objects_write}
    for stream in ("EVENTS", "JOBS", "PREDICTIONS", "DEADLETTER", "KV_models", "KV_jobs", "OBJ_artifacts"):
        for verb in ("CREATE", "UPDATE", "DELETE"):
            assert not _may_publish(perms, f"$JS.API.STREAM.{verb}.{stream}"), (identity, verb, stream)
        # Purging is how a store replaces an object: only the bucket's writer may.
        assert _may_publish(perms, f"$JS.API.STREAM.PURGE.{stream}") == (stream in own), (identity, stream)
        # Erasing (a deletion's message deletes): the bucket's writer, and what its grants name.
        erases = stream in own or stream in grants.erase or stream in {s for s, _ in grants.purge}
        # Its durables' dead letters: those it replayed, those of a deleted tenant.
        erases = erases or (stream == DEADLETTER_STREAM and bool(grants.durables))
        assert _may_publish(perms, f"$JS.API.STREAM.MSG.DELETE.{stream}") == erases, (identity, stream)
    for other in nats_identity.IDENTITIES:
        if other != identity:
            assert not _may_subscribe(perms, f"{nats_identity.inbox_prefix(other)}.abc.1")


def test_each_service_reports_a_deleted_tenant_s_erasing_as_itself_and_only_the_registry_hears_it() -> None:
    services = [i for i in nats_identity.IDENTITIES if f"{i}-tenants" in GRANTS[i].durables]
    assert services == ["data", "trainer", "evaluator", "registry", "deployer", "monitor"]
    for identity in nats_identity.IDENTITIES:
        perms = permissions(identity)
        for service in services:
            subject = f"{nats_identity.PURGED_ROOT}.{service}"
            assert _may_publish(perms, subject) == (identity in (service, ADMIN)), (identity, subject)
        heard = _may_subscribe(perms, f"{nats_identity.PURGED_ROOT}.data")
        assert heard == (identity in ("registry", ADMIN)), identity
    # The registry answers the reports (one reply per request, within a minute), and no one else answers anything.
    assert [i for i in nats_identity.IDENTITIES if permissions(i).allow_responses] == ["registry"]
    assert permissions("registry").to_config()["allow_responses"] == {"max": 1, "expires": "1m"}
    # The deletion's last step: only the registry (and the admin) erase events.
    assert [
        i for i in nats_identity.IDENTITIES if _may_publish(permissions(i), "$JS.API.STREAM.MSG.DELETE.EVENTS")
    ] == [
        "registry",
        ADMIN,
    ]


def test_buckets_are_reached_only_by_the_identities_that_use_them() -> None:
    trainer = permissions("trainer")
    assert _may_publish(trainer, "$KV.jobs.acme.job_1") and _may_publish(trainer, "$JS.API.STREAM.INFO.KV_jobs")
    assert not _may_publish(trainer, "$JS.API.STREAM.INFO.KV_models")
    assert not _may_publish(trainer, "$JS.API.DIRECT.GET.KV_deployments.$KV.deployments.acme.prod")
    # Reads datasets, writes artifacts: the read-only store takes no writes.
    assert _may_publish(trainer, "$JS.API.CONSUMER.CREATE.OBJ_datasets.x.$O.datasets.C.abc")
    assert not _may_publish(trainer, "$O.datasets.M.bmFtZQ==") and _may_publish(trainer, "$O.artifacts.C.abc")
    # The job queue is the trainer's alone.
    for other in ("data", "evaluator", "registry", "deployer", "monitor"):
        assert not _may_publish(permissions(other), "$JS.API.CONSUMER.MSG.NEXT.JOBS.trainers")
        assert not _may_publish(permissions(other), "lepton.jobs.training")


def test_erasing_in_a_store_an_identity_does_not_write_is_granted_by_name() -> None:
    """DeleteModelVersion erases the version's artifact (the registry still cannot write one) and its logs."""
    registry = permissions("registry")
    assert _may_publish(registry, "$JS.API.STREAM.MSG.DELETE.OBJ_artifacts")
    assert not _may_publish(registry, "$O.artifacts.C.abc") and not _may_publish(registry, "$O.artifacts.M.bmFtZQ==")
    # Events only as a deleted tenant's last step (the next test); the audit trail never.
    assert not _may_publish(registry, "$JS.API.STREAM.MSG.DELETE.AUDIT")
    for identity in ("data", "deployer", "gateway", SERVING):
        assert not _may_publish(permissions(identity), "$JS.API.STREAM.MSG.DELETE.OBJ_artifacts"), identity
    # The monitor erases a deleted version's prediction logs; nobody else erases any.
    for identity in nats_identity.IDENTITIES:
        erases = _may_publish(permissions(identity), "$JS.API.STREAM.MSG.DELETE.PREDICTIONS")
        assert erases == (identity in ("monitor", ADMIN)), identity


def test_serving_publishes_prediction_logs_and_nothing_else() -> None:
    serving = permissions(SERVING)
    assert _may_publish(serving, "lepton.pred.acme.prod")
    assert not _may_publish(serving, "lepton.evt.acme.registry.version.created")
    assert not _may_publish(serving, "$JS.API.STREAM.INFO.KV_deployments")
    assert serving.subscribe_allow == ()
    assert serving.to_config()["subscribe"] == {"deny": [">"]}  # an empty allow list would allow everything


def test_integrators_subscribe_to_their_tenant_s_events_only() -> None:
    perms = nats_identity.integrator_permissions("acme")
    assert _may_subscribe(perms, "lepton.evt.acme.registry.version.created")
    assert not _may_subscribe(perms, "lepton.evt.intruder.registry.version.created")
    assert not _may_subscribe(perms, "_INBOX.acme.x") and not _may_subscribe(perms, "$KV.datasets.acme")
    assert perms.publish_allow == () and perms.to_config()["publish"] == {"deny": [">"]}
    for bad in ("a.b", "*", ">", "", "a b"):
        with pytest.raises(InvalidArgument, match="tenant"):
            nats_identity.integrator_permissions(bad)


def test_seeds_are_user_nkeys_written_private(tmp_path: Path) -> None:
    seed = nats_identity.new_seed()
    assert seed.startswith(b"SU") and nats_identity.public_key(seed).startswith("U")
    assert nats_identity.public_key(seed) != nats_identity.public_key(nats_identity.new_seed())
    path = tmp_path / "keys" / "trainer.nk"
    nats_identity.write_private(path, seed)
    assert path.stat().st_mode & 0o777 == 0o600 and nats_identity.check_seed_file(path) == path
    os.chmod(path, 0o644)
    with pytest.raises(InvalidArgument, match="chmod 600"):
        nats_identity.check_seed_file(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"not a seed")
    with pytest.raises(InvalidArgument, match="no nkey user seed"):
        nats_identity.check_seed_file(path)
    with pytest.raises(InvalidArgument, match="cannot read"):
        nats_identity.check_seed_file(tmp_path / "missing.nk")


def test_a_service_writes_audit_records_and_key_use_reports_under_its_own_name_only() -> None:
    """The audit trail's service and a key-use report's sender are vouched for by the subject."""
    from lepton_core.nats_identity import KEY_USE_ROOT

    services = [name for name, grants in GRANTS.items() if grants.service]
    assert {"data", "registry", "gateway"} <= set(services)
    for identity in GRANTS:
        if identity == ADMIN:
            continue
        perms = permissions(identity)
        for other in services:
            mine = identity == other
            assert _may_publish(perms, f"lepton.audit.acme.{other}") == mine, (identity, other)
            assert _may_publish(perms, f"{KEY_USE_ROOT}.{other}") == mine, (identity, other)
        # Only the registry hears the reports and reads the trail back.
        assert _may_subscribe(perms, f"{KEY_USE_ROOT}.data") == (identity == "registry"), identity
        assert _may_publish(perms, "$JS.API.CONSUMER.CREATE.AUDIT") == (identity == "registry"), identity
    assert nats_identity.integrator_permissions("acme").publish_allow == ()


def test_every_stream_an_identity_writes_it_may_ask_the_info_of() -> None:
    """After a write times out, the services ask the stream's info to tell a stream a full disk stopped from
    one that is away (``lepton_core.failover.stalled``): refused, that probe would cost its timeout and log a
    permissions violation. Only the info: the audit trail's messages stay the registry's to read."""
    for identity in GRANTS:
        if identity in (ADMIN, SERVING):  # everything; plain publishes that wait for no answer
            continue
        perms = permissions(identity)
        written = {
            stream_of(subject.replace("*", "acme").replace(">", "x"))
            for subject in perms.publish_allow
            if not subject.startswith("$JS.")
        }
        for stream in written - {None}:
            assert _may_publish(perms, f"$JS.API.STREAM.INFO.{stream}"), (identity, stream)
        assert _may_publish(perms, "$JS.API.CONSUMER.CREATE.AUDIT") == (identity == "registry"), identity
        assert not _may_publish(perms, "$JS.API.STREAM.MSG.GET.AUDIT") or identity == "registry", identity
