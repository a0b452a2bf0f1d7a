"""Who may do what on NATS: the permission table, and the nkeys every identity connects with.

Every connection to the platform's nats-server authenticates with an nkey (an Ed25519 key
pair; the server knows only public keys) and gets the publish/subscribe permissions
derived here from :data:`GRANTS`: the subjects, streams, KV buckets and object stores the
identity uses, and nothing else. lepton_platform renders this table into the server's
users file (``authorization { users = [...] }``), so the table is the one place to change.

Identities:

- one per service (``data`` ... ``monitor``): its own event area (``lepton.evt.*.<area>.>``;
  a service cannot publish another service's events), its own KV bucket, the object
  stores it reads or writes, the streams it consumes, the dead letters of its own durables;
- ``serving``: the Triton models, which only publish prediction logs (``lepton.pred.>``);
- ``admin``: everything; declares the topology, used by operator tools and test fixtures;
- integrators (:func:`integrator_permissions`): subscribe to ``lepton.evt.<tenant>.>``, nothing else.

Replies come to a per-identity inbox (``_INBOX.<identity>.>``, :func:`inbox_prefix`), so
no identity can read the answers another one gets from JetStream.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from lepton_core.bus import (
    AUDIT_ROOT,
    AUDIT_STREAM,
    DEADLETTER_ROOT,
    DEADLETTER_STREAM,
    EVENTS_ROOT,
    EVENTS_STREAM,
    JOBS_ROOT,
    JOBS_STREAM,
    PREDICTIONS_ROOT,
    PREDICTIONS_STREAM,
)
from lepton_core.errors import InvalidArgument

ADMIN = "admin"
KEY_USE_ROOT = "lepton.access.seen"
"""Each process reports the keys it saw used on ``<root>.<identity>`` (core NATS); the registry listens."""
PURGED_ROOT = "lepton.access.purged"
"""Each service reports what it erased of a deleted tenant on ``<root>.<identity>`` (a core NATS
request; :mod:`lepton_core.tenant_deletion`); the registry answers."""
SERVING = "serving"
_TENANT = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Grants:
    """What one identity uses; its permissions are derived from this (:func:`permissions`).

    Attributes:
        events: Event areas it publishes (``training`` -> ``lepton.evt.*.training.>``).
        publish: Other subjects it publishes plainly or to JetStream (the job queue, prediction logs).
        streams: Streams it reads: consumers (its durables, ephemeral ones), stream info, acks.
        durables: Its durable consumers; it may dead-letter to ``lepton.dlq.<durable>.<tenant>`` and
            no other identity may create, read or delete them.
        kv_write: KV buckets it reads and writes.
        kv_read: KV buckets it only reads.
        objects_write: Object stores it reads and writes.
        objects_read: Object stores it only reads.
        everything: Publish and subscribe to every subject (the admin).
        service: A process that serves gRPC: it follows the ``keys`` bucket (API keys) and the
            ``tenants`` bucket (plans, :mod:`lepton_core.quotas`) and
            writes its own audit records (``lepton.audit.*.<identity>``).
        subscribe: Plain (core NATS) subjects it listens to.
        erase: Streams whose messages it may erase (``$JS.API.STREAM.MSG.DELETE``) besides its
            own KV buckets and object stores, which it may always erase from: what a deletion
            must remove from a stream it only reads.
        purge: ``(stream, subject root)`` pairs: a deleted tenant's messages there
            (``<root>.<tenant>.>``) are this identity's to erase (:mod:`lepton_core.tenant_deletion`);
            each stream is added to ``erase``.
        responds: It answers requests it receives on its ``subscribe`` subjects (one reply each,
            within a minute: nats-server's ``allow_responses``), without a grant on the
            requesters' inboxes.
    """

    events: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    durables: tuple[str, ...] = ()
    kv_write: tuple[str, ...] = ()
    kv_read: tuple[str, ...] = ()
    objects_write: tuple[str, ...] = ()
    objects_read: tuple[str, ...] = ()
    everything: bool = False
    service: bool = True
    subscribe: tuple[str, ...] = ()
    erase: tuple[str, ...] = ()
    purge: tuple[tuple[str, str], ...] = ()
    responds: bool = False


#: The table. Every service serves ``EventService.Subscribe``, so every service reads EVENTS.
GRANTS: dict[str, Grants] = {
    # Each service's ``<name>-tenants`` durable erases what it keeps of a deleted tenant.
    "data": Grants(
        events=("dataset",),
        streams=(EVENTS_STREAM,),
        durables=("data-tenants",),
        kv_write=("datasets",),
        objects_write=("datasets",),
    ),
    "trainer": Grants(
        events=("training",),
        publish=(f"{JOBS_ROOT}.>",),
        streams=(EVENTS_STREAM, JOBS_STREAM),
        durables=("trainers", "trainer-retrain", "trainer-tenants"),
        # A deleted tenant's queued training requests.
        purge=((JOBS_STREAM, JOBS_ROOT),),
        kv_write=("jobs",),
        objects_read=("datasets",),
        objects_write=("artifacts",),
    ),
    "evaluator": Grants(
        events=("evaluation",),
        streams=(EVENTS_STREAM,),
        durables=("evaluator", "evaluator-compare", "evaluator-tenants"),
        kv_write=("evaluations",),
        objects_read=("datasets",),
        objects_write=("artifacts",),
    ),
    "registry": Grants(
        events=("registry",),
        # registry-usage and registry-predictions meter each tenant's usage (lepton_core.usage).
        durables=("registry", "registry-promotions", "registry-usage", "registry-predictions", "registry-tenants"),
        # keys and tenants (plans): AccessService writes them, every process follows them; usage: the meter's.
        kv_write=("models", "keys", "tenants", "usage"),
        # Which keys the processes saw used (AccessService's last_used).
        # What each service erased of a deleted tenant (AccessService.GetTenantDeletion).
        subscribe=(f"{KEY_USE_ROOT}.>", f"{PURGED_ROOT}.>"),
        responds=True,
        objects_read=("artifacts",),
        # The audit trail, read back for AccessService.QueryAudit; predictions, counted for usage.
        streams=(EVENTS_STREAM, AUDIT_STREAM, PREDICTIONS_STREAM),
        # DeleteModelVersion erases the version's artifact (the trainer wrote it); a deleted
        # tenant's events go once every service has erased its part (not by ``purge``: the
        # others have yet to read the deletion's event).
        erase=("OBJ_artifacts", EVENTS_STREAM),
    ),
    "deployer": Grants(
        events=("deployment",),
        streams=(EVENTS_STREAM,),
        durables=("deployer", "deployer-tenants"),
        kv_write=("deployments",),
        objects_read=("artifacts", "datasets"),
    ),
    "monitor": Grants(
        events=("monitor",),
        streams=(EVENTS_STREAM, PREDICTIONS_STREAM),
        durables=("monitor", "monitor-events", "monitor-tenants"),
        kv_write=("monitor",),
        objects_read=("artifacts", "datasets"),
        # A deleted model version's prediction logs are erased with it, a deleted tenant's all.
        erase=(PREDICTIONS_STREAM,),
        purge=((PREDICTIONS_STREAM, PREDICTIONS_ROOT),),
    ),
    # The inference gateway: the deployer's records (routes), and the usage the registry meters
    # (the plans' predictions a month).
    "gateway": Grants(kv_read=("deployments", "usage")),
    SERVING: Grants(publish=(f"{PREDICTIONS_ROOT}.>",), service=False),
    ADMIN: Grants(everything=True, service=False),
}
IDENTITIES: tuple[str, ...] = tuple(GRANTS)
"""Every identity the platform generates a key for (integrators are issued on demand)."""


@dataclass(frozen=True)
class Permissions:
    """One nats-server user's permissions: allow and deny lists for publish and subscribe."""

    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    #: May publish one reply to each request it received, within a minute (``allow_responses``).
    allow_responses: bool = False

    def to_config(self) -> dict[str, Any]:
        """The ``permissions`` map of a user in nats-server's configuration.

        An empty allow list is written as a deny of ``>``: nats-server reads a missing
        allow list as "everything".
        """

        def side(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
            if not allow:
                return {"deny": [">"]}
            return {"allow": list(allow), **({"deny": list(deny)} if deny else {})}

        config: dict[str, Any] = {
            "publish": side(self.publish_allow, self.publish_deny),
            "subscribe": side(self.subscribe_allow, self.subscribe_deny),
        }
        if self.allow_responses:
            config["allow_responses"] = {"max": 1, "expires": "1m"}
        return config


def inbox_prefix(identity: str) -> str:
    """Where ``identity``'s replies arrive (nats-py's ``inbox_prefix``); only it may subscribe there."""
    return f"_INBOX.{identity}"


def _stream_api(stream: str) -> list[str]:
    """Reading ``stream``: info, direct and message gets, consumers on it, acks and flow control."""
    api = "$JS.API"
    return [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.>",
        f"{api}.CONSUMER.DELETE.{stream}.>",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _durable_api(stream: str, durable: str) -> list[str]:
    """The API subjects that create, read or delete the durable consumer ``durable`` of ``stream``."""
    api = "$JS.API.CONSUMER"
    return [
        f"{api}.CREATE.{stream}.{durable}",
        f"{api}.CREATE.{stream}.{durable}.>",
        f"{api}.DURABLE.CREATE.{stream}.{durable}",
        f"{api}.DELETE.{stream}.{durable}",
        f"{api}.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def permissions(identity: str) -> Permissions:
    """The permissions of one of :data:`IDENTITIES`, derived from its :class:`Grants`.

    Raises:
        KeyError: ``identity`` is not in the table.
    """
    grants = GRANTS[identity]
    if grants.everything:
        return Permissions(publish_allow=(">",), subscribe_allow=(">",))
    publish = [f"{EVENTS_ROOT}.*.{area}.>" for area in grants.events]
    publish += list(grants.publish)
    if grants.service:
        # The audit stream's info too (not its messages): after a write there timed out, the service asks
        # whether the stream stopped writing (lepton_core.failover.stalled), as for every stream it writes.
        publish += [f"{AUDIT_ROOT}.*.{identity}", f"{KEY_USE_ROOT}.{identity}", f"$JS.API.STREAM.INFO.{AUDIT_STREAM}"]
    if any(durable.endswith("-tenants") for durable in grants.durables):
        publish += [f"{PURGED_ROOT}.{identity}"]
    # Its durables' dead letters, by tenant (lepton_core.events.dead_letter_subject).
    publish += [f"{DEADLETTER_ROOT}.{durable}.*" for durable in grants.durables]
    for stream in grants.streams:
        publish += _stream_api(stream)
    if grants.service:
        # EventService lists the caller's dead letters, and a service removes those of its durables
        # it replayed, or those of a deleted tenant.
        publish += _stream_api(DEADLETTER_STREAM)
        if grants.durables:
            publish += [f"$JS.API.STREAM.MSG.DELETE.{DEADLETTER_STREAM}"]
    for bucket in _kv_read(grants):
        publish += _stream_api(f"KV_{bucket}")
    for bucket in grants.kv_write:
        publish += [f"$KV.{bucket}.>", f"$JS.API.STREAM.PURGE.KV_{bucket}", f"$JS.API.STREAM.MSG.DELETE.KV_{bucket}"]
    for bucket in (*grants.objects_write, *grants.objects_read):
        publish += _stream_api(f"OBJ_{bucket}")
    for bucket in grants.objects_write:
        publish += [f"$O.{bucket}.>", f"$JS.API.STREAM.PURGE.OBJ_{bucket}", f"$JS.API.STREAM.MSG.DELETE.OBJ_{bucket}"]
    publish += [f"$JS.API.STREAM.MSG.DELETE.{stream}" for stream in (*grants.erase, *(s for s, _ in grants.purge))]
    # Other identities' durables on the streams this one reads stay theirs.
    deny = [
        subject
        for other, theirs in GRANTS.items()
        if other != identity
        for durable in theirs.durables
        for stream in grants.streams
        if stream in theirs.streams
        for subject in _durable_api(stream, durable)
    ]
    # JetStream answers (acks, API replies, pushed consumer messages) come to the identity's inbox;
    # an identity that only publishes plainly (the serving models) subscribes to nothing.
    uses_jetstream = any((grants.events, grants.streams, grants.kv_write, grants.kv_read, grants.service))
    uses_jetstream = uses_jetstream or any((grants.objects_write, grants.objects_read))
    subscribe = [f"{inbox_prefix(identity)}.>"] if uses_jetstream else []
    subscribe += list(grants.subscribe)
    return Permissions(
        publish_allow=tuple(dict.fromkeys(publish)),
        subscribe_allow=tuple(subscribe),
        publish_deny=tuple(dict.fromkeys(deny)),
        allow_responses=grants.responds,
    )


def _kv_read(grants: Grants) -> tuple[str, ...]:
    """The buckets an identity reads: those it writes, those it reads, and ``keys`` (API keys) and
    ``tenants`` (plans) for every service."""
    followed = ("keys", "tenants") if grants.service else ()
    return tuple(dict.fromkeys((*grants.kv_write, *grants.kv_read, *followed)))


def streams_of(identity: str) -> list[str]:
    """The streams (``KV_``/``OBJ_`` ones included) ``identity`` uses: what a service checks at start-up."""
    grants = GRANTS[identity]
    return [
        *grants.streams,
        *(f"KV_{b}" for b in _kv_read(grants)),
        *(f"OBJ_{b}" for b in (*grants.objects_write, *grants.objects_read)),
    ]


def integrator_permissions(tenant: str) -> Permissions:
    """An integrator of ``tenant``: subscribes to ``lepton.evt.<tenant>.>``, publishes nothing.

    Raises:
        InvalidArgument: (field ``tenant``) not a single subject token, which would widen the subscription.
    """
    check_tenant(tenant)
    return Permissions(publish_allow=(), subscribe_allow=(f"{EVENTS_ROOT}.{tenant}.>",))


def check_tenant(tenant: str) -> str:
    """``tenant`` when it is one subject token (letters, digits, ``_``, ``-``); :class:`InvalidArgument` otherwise."""
    if not _TENANT.fullmatch(tenant):
        raise InvalidArgument(
            f"{tenant!r} is not a tenant name: use letters, digits, '_' and '-' only "
            "('.', '*' and '>' would reach other tenants' subjects)",
            field="tenant",
        )
    return tenant


def new_seed() -> bytes:
    """A fresh nkey user seed (``SU...``), from the OS's CSPRNG."""
    return bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    """The public key (``U...``) of a user seed; what the server's users file names."""
    key_pair = nkeys.from_seed(bytearray(seed.strip()))
    try:
        return str(key_pair.public_key.decode())
    finally:
        key_pair.wipe()


def write_private(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` readable by its owner only (0600), never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_private(path: str | os.PathLike[str], setting: str, what: str = "file") -> bytes:
    """The bytes of ``path``, a file only its owner can read.

    Raises:
        InvalidArgument: (field ``setting``) unreadable, or readable by group or others.
    """
    file = Path(path)
    try:
        mode = file.stat().st_mode
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {file}: {exc.strerror}", field=setting) from None
    if mode & 0o077:
        raise InvalidArgument(
            f"the {what} {file} is readable by others (mode {mode & 0o777:o}); chmod 600 it", field=setting
        )
    return data


def check_seed_file(path: str | os.PathLike[str], setting: str = "nats_nkey_seed_file") -> Path:
    """``path`` when it holds an nkey user seed that only its owner can read.

    Raises:
        InvalidArgument: (field ``setting``) missing, readable by group or others, or not a user seed.
    """
    seed = read_private(path, setting, "NATS seed file").strip()
    if not seed.startswith(b"SU"):
        raise InvalidArgument(f"{path} holds no nkey user seed (expected one line starting SU)", field=setting)
    return Path(path)


def users(keys: Iterable[tuple[str, Permissions]]) -> list[dict[str, object]]:
    """The ``authorization.users`` list of nats-server's configuration for ``(public key, permissions)`` pairs."""
    return [{"nkey": key, "permissions": perms.to_config()} for key, perms in keys]
