"""Who may call what: API keys as records, roles, per-resource grants, and service identity.

- A key is a :class:`KeyRecord` in the ``keys`` KV bucket (key: its id). The platform keeps
  only the SHA-256 digest of the secret (:func:`digest`): secrets are 256 random bits, so a
  plain hash resists guessing as well as a slow one would. Only the registry's process writes
  the bucket (it serves ``AccessService``); every process follows it (:class:`KeyBook`), so a
  revoked or changed key is refused everywhere as soon as the change arrives (milliseconds;
  the acceptance bound is two seconds), and an expired one at its expiry, with no restart.
- A role is a set of permissions (:data:`ROLES`); each service names the permission of every
  RPC in its own table of :class:`Rule` s (``<service>.permissions.RULES``), and the
  interceptor (:mod:`lepton_core.rpc`) refuses a call whose key lacks it, naming it.
- A :class:`Grant` gives a key one role's permissions on one resource (``model/churn``), as
  MLflow's per-model permissions do; a rule whose request names a resource honours it.
- A service that calls another on a caller's behalf never forwards the caller's secret: it
  presents a short-lived token it signs with its own NATS nkey (:class:`ServiceSigner`),
  naming the caller's principal; the receiver checks the signature against the public keys it
  was given (:class:`ServiceVerifier`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import nkeys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import Message
from nats.js.kv import KeyValue
from pydantic import BaseModel

from lepton_core.bus import follow_bucket
from lepton_core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from lepton_core.names import check_name
from lepton_core.nats_identity import read_private

log = logging.getLogger(__name__)

KEYS_BUCKET: Final = "keys"
"""The KV bucket of key records: written by the registry's process, read by every process."""
SEEN_PREFIX: Final = "seen."
"""Entries of the bucket that hold when a key was last used (``seen.<key id>``), not records."""


def seen_key(key_id: str) -> str:
    return f"{SEEN_PREFIX}{key_id}"


# --- permissions and roles -------------------------------------------------------------------

READ: Final = frozenset(
    {
        "datasets.read",
        "jobs.read",
        "evaluations.read",
        "models.read",
        "deployments.read",
        "monitor.read",
        "events.read",
    }
)
PREDICT: Final = "deployments.predict"
WRITE: Final = frozenset({"datasets.write", "jobs.write", "evaluations.write", "models.write", "monitor.write"})
DEPLOY: Final = frozenset({"deployments.write", "models.promote"})
MANAGE: Final = frozenset(
    {"datasets.delete", "models.delete", "keys.manage", "audit.read", "usage.read", "events.replay"}
)
AUTHENTICATED: Final = "authenticated"
"""The permission of calls any valid key may make (``WhoAmI``): every role has it."""
ANY_TENANT: Final = "tenants.manage"
"""Acting on another tenant's keys, audit trail and usage, and assigning plans: the operator's alone."""
TENANTS_DELETE: Final = "tenants.delete"
"""Deleting a whole tenant (``AccessService.DeleteTenant``): the operator's alone."""
TENANTS_READ: Final = "tenants.read"
"""Following a tenant's deletion (``GetTenantDeletion``): the operator's alone."""
MUTATING: Final = (
    WRITE
    | DEPLOY
    | {
        "datasets.delete",
        "models.delete",
        "keys.manage",
        "events.replay",
        ANY_TENANT,
        TENANTS_DELETE,
    }
)
"""The permissions of calls that change something: each such call is an audit record."""

ROLES: Final[Mapping[str, frozenset[str]]] = {
    "viewer": READ | {AUTHENTICATED},
    "inference": frozenset({PREDICT, AUTHENTICATED}),
    "editor": READ | WRITE | {PREDICT, AUTHENTICATED},
    "deployer": READ | DEPLOY | {PREDICT, AUTHENTICATED},
    "admin": READ | WRITE | DEPLOY | MANAGE | {PREDICT, AUTHENTICATED},
    "operator": READ | WRITE | DEPLOY | MANAGE | {PREDICT, AUTHENTICATED, ANY_TENANT, TENANTS_DELETE, TENANTS_READ},
}
"""Each role's permissions. docs/security.md has the table."""
GRANT_ROLES: Final = ("viewer", "editor", "deployer")
"""The roles a per-resource grant may give."""
RESOURCE_KINDS: Final = {"model": "models.", "dataset": "datasets.", "deployment": "deployments."}
"""What a grant may name, and the permissions (by prefix) it can give on it."""
ALL_PERMISSIONS: Final = frozenset().union(*ROLES.values())


def check_role(role: str, field: str = "role") -> str:
    if role not in ROLES:
        raise InvalidArgument(f"{role!r} is not a role; expected one of {', '.join(ROLES)}", field=field)
    return role


@dataclass(frozen=True)
class Rule:
    """The permission one RPC needs, and the resource its request names.

    ``resource`` is a template over the request's fields, ``"model/{model_name}"``: it names the
    call's resource in the audit trail and lets a :class:`Grant` on that resource allow the call.
    Empty when the request names no single resource (lists, uploads).
    """

    permission: str
    resource: str = ""
    _parsed: tuple[str, str, tuple[str, ...]] = field(default=("", "", ()), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.permission not in ALL_PERMISSIONS:
            raise ValueError(f"{self.permission!r} is not a permission of any role")
        kind, _, template = self.resource.partition("/")
        # Parsed once: the interceptor asks every call's resource.
        object.__setattr__(self, "_parsed", (kind, template, tuple(re.findall(r"{(\w+)}", template))))

    def resource_of(self, request: object) -> str:
        """The resource ``request`` names, or ``""`` when a field the template needs is empty."""
        kind, template, names = self._parsed
        if not names or not isinstance(request, Message):
            return ""
        values = {name: getattr(request, name, "") for name in names}
        if not all(isinstance(v, str) and v for v in values.values()):
            return ""
        return f"{kind}/{template.format(**values)}"


Rules = Mapping[str, Rule]
"""A service's permission table: full method name (``/pkg.Service/Method``) to its rule."""


def rules_for(service_full_name: str, table: Mapping[str, Rule]) -> dict[str, Rule]:
    """``{"Method": rule}`` for one service, keyed by full method name."""
    return {f"/{service_full_name}/{method}": rule for method, rule in table.items()}


# --- records ---------------------------------------------------------------------------------


class GrantRecord(BaseModel):
    resource: str
    role: str


class KeyRecord(BaseModel):
    """One API key as stored: never its secret."""

    id: str
    name: str
    tenant: str
    role: str
    digest: str
    creator: str
    created: datetime
    expires: datetime | None = None
    revoked: datetime | None = None
    grants: list[GrantRecord] = []

    def state(self, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        if self.revoked is not None and self.revoked <= now:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        return "active"


def digest(secret: str) -> str:
    """What the platform keeps of a secret: SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


SECRET_PREFIX: Final = "lep_"
"""Every secret the platform makes starts so, which secret scanners can look for."""


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def check_grants(grants: Iterable[tuple[str, str]], field: str = "grants") -> list[GrantRecord]:
    out = []
    for i, (resource, role) in enumerate(grants):
        kind, _, name = resource.partition("/")
        if kind not in RESOURCE_KINDS or not name:
            raise InvalidArgument(
                f"{resource!r} is not a resource; expected one of " + ", ".join(f"{k}/<name>" for k in RESOURCE_KINDS),
                field=f"{field}[{i}].resource",
            )
        if role not in GRANT_ROLES:
            raise InvalidArgument(
                f"{role!r} cannot be granted on a resource; expected one of {', '.join(GRANT_ROLES)}",
                field=f"{field}[{i}].role",
            )
        out.append(GrantRecord(resource=resource, role=role))
    return out


@dataclass(frozen=True)
class Principal:
    """Who a call is from: the key's tenant, id, name and role, and the service acting for it."""

    tenant: str
    key_id: str
    role: str
    name: str = ""
    grants: tuple[tuple[str, str], ...] = ()
    via: str = ""
    """The service that presented this principal on the caller's behalf; empty for a direct call."""
    service: str = ""
    """Set when a service acts on its own (a retraining policy): the principal is the service."""
    expires: datetime | None = None

    @property
    def label(self) -> str:
        """``key:<id>``, or ``service:<name>`` for a service acting on its own: what the audit trail names."""
        return f"service:{self.service}" if self.service else f"key:{self.key_id}"

    @property
    def permissions(self) -> frozenset[str]:
        return ROLES.get(self.role, frozenset())

    def allows(self, permission: str, resource: str = "") -> bool:
        """Whether the role, or a grant on ``resource``, gives ``permission``."""
        if permission in self.permissions:
            return True
        if not resource:
            return False
        kind = resource.partition("/")[0]
        prefix = RESOURCE_KINDS.get(kind)
        if prefix is None:
            return False
        return any(
            granted == resource and permission.startswith(prefix) and permission in ROLES[role]
            for granted, role in self.grants
        )

    def require(self, permission: str, method: str, resource: str = "") -> None:
        """Raises :class:`PermissionDenied` naming ``permission`` unless this principal has it."""
        if self.allows(permission, resource):
            return
        who = f"service {self.service}" if self.service else f"key {self.key_id} ({self.name or 'unnamed'})"
        on = f" on {resource}" if resource else ""
        raise PermissionDenied(
            f"{method.rsplit('/', 1)[-1]} needs the permission {permission}{on}; {who} has role {self.role}, "
            f"which lacks it (roles that have it: {', '.join(r for r, p in ROLES.items() if permission in p)})"
        )


def principal_of(record: KeyRecord) -> Principal:
    return Principal(
        tenant=record.tenant,
        key_id=record.id,
        role=record.role,
        name=record.name,
        grants=tuple((g.resource, g.role) for g in record.grants),
        expires=record.expires,
    )


# --- the book every process follows ---------------------------------------------------------


class KeyBook:
    """The key records a process knows, by digest: kept current by :meth:`follow`.

    Also counts when each key was last seen (:meth:`take_seen`), for the registry to record.
    """

    def __init__(self, records: Iterable[KeyRecord] = ()) -> None:
        self._by_digest: dict[str, KeyRecord] = {}
        self._by_id: dict[str, KeyRecord] = {}
        self._seen: dict[str, float] = {}
        self.loaded = asyncio.Event()
        self.generation = 0
        """Counts changes: a front that caches the book (the gateway's nginx) compares it."""
        for record in records:
            self.put(record)

    @classmethod
    def of(cls, keys: Mapping[str, str], role: str = "admin") -> KeyBook:
        """A book of ``{secret: tenant}``, each key of ``role``: for tests and tools."""
        now = datetime.now(UTC)
        return cls(
            KeyRecord(
                id=new_key_id(),
                name=f"key {i}",
                tenant=tenant,
                role=role,
                digest=digest(secret),
                creator="bootstrap",
                created=now,
            )
            for i, (secret, tenant) in enumerate(keys.items(), start=1)
        )

    def put(self, record: KeyRecord) -> None:
        old = self._by_id.pop(record.id, None)
        if old is not None:
            self._by_digest.pop(old.digest, None)
        self._by_id[record.id] = record
        self._by_digest[record.digest] = record
        self.generation += 1

    def remove(self, key_id: str) -> None:
        old = self._by_id.pop(key_id, None)
        if old is not None:
            self._by_digest.pop(old.digest, None)
            self.generation += 1

    def apply(self, key_id: str, value: bytes | None) -> None:
        """One KV entry: a record, or ``None`` for a deleted one."""
        if key_id.startswith(SEEN_PREFIX):
            return
        if value is None:
            self.remove(key_id)
            return
        try:
            self.put(KeyRecord.model_validate_json(value))
        except ValueError:
            log.error("key record %s is not valid; it is ignored (so the key is refused)", key_id)
            self.remove(key_id)

    def records(self) -> list[KeyRecord]:
        return list(self._by_id.values())

    def get(self, key_id: str) -> KeyRecord | None:
        return self._by_id.get(key_id)

    def authenticate(self, secret: str | None) -> Principal:
        """The principal of ``secret``.

        Raises:
            Unauthenticated: no secret, an unknown one, or the key was revoked or has expired
                (saying which, and when: the holder of the secret learns nothing new from it).
        """
        if not secret:
            raise Unauthenticated("no API key: send 'authorization: Bearer <key>'")
        record = self._by_digest.get(digest(secret))
        if record is None:
            raise Unauthenticated("the API key is not valid")
        state = record.state()
        if state == "revoked":
            raise Unauthenticated(f"the API key {record.id} was revoked at {record.revoked:%Y-%m-%d %H:%M:%S} UTC")
        if state == "expired":
            raise Unauthenticated(f"the API key {record.id} expired at {record.expires:%Y-%m-%d %H:%M:%S} UTC")
        self._seen[record.id] = time.time()
        return principal_of(record)

    def take_seen(self) -> dict[str, float]:
        """Key id to the last time it authenticated here, since the last call; then forgets."""
        seen, self._seen = self._seen, {}
        return seen

    async def follow(self, kv: KeyValue) -> None:
        """Applies every record of ``kv``, then each change as it happens, until cancelled;
        ``loaded`` is set once the records there were at the start are in."""
        await follow_bucket(kv, self.apply, self.loaded, f"the {KEYS_BUCKET} bucket")


async def ensure_key(
    kv: KeyValue, secret: str, *, tenant: str, role: str, name: str, creator: str = "bootstrap"
) -> KeyRecord:
    """The record of ``secret``, written if no record has its digest (how a bootstrap key comes to be).

    Idempotent: a second start with the same secret finds the record and changes nothing, so a
    key revoked since stays revoked.
    """
    check_role(role)
    check_name(tenant, "tenant", what="a tenant")
    wanted = digest(secret)
    for key in await _keys(kv):
        if key.startswith(SEEN_PREFIX):
            continue  # when a key was last used, not a record
        entry = await kv.get(key)
        if entry.value:
            record = KeyRecord.model_validate_json(entry.value)
            if record.digest == wanted:
                return record
    record = KeyRecord(
        id=new_key_id(),
        name=name,
        tenant=tenant,
        role=role,
        digest=wanted,
        creator=creator,
        created=datetime.now(UTC),
    )
    await kv.create(record.id, record.model_dump_json().encode())
    return record


async def _keys(kv: KeyValue) -> list[str]:
    from nats.js.errors import NoKeysError

    try:
        return list(await kv.keys())
    except NoKeysError:
        return []


# --- service identity ----------------------------------------------------------------------

SERVICE_TOKEN_HEADER: Final = "lepton-service-token"
"""The metadata a service's call on a caller's behalf carries instead of the caller's key."""
TOKEN_TTL_S: Final = 60.0
"""How long a service token is good for: one call, or a few close together."""


class ServiceSigner:
    """Signs tokens with one service's NATS nkey: ``base64(claims).base64(signature)``."""

    def __init__(self, service: str, seed_file: str | Path) -> None:
        self.service = service
        self._seed = bytearray(Path(seed_file).read_bytes().strip())

    def token(self, principal: Principal, ttl_s: float = TOKEN_TTL_S) -> str:
        claims = {
            "svc": self.service,
            "ten": principal.tenant,
            "kid": principal.key_id,
            "role": principal.role,
            "name": principal.name,
            "grants": [list(g) for g in principal.grants],
            "own": principal.service,
            "exp": time.time() + ttl_s,
            "nonce": secrets.token_hex(8),
        }
        body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode()
        key_pair = nkeys.from_seed(bytearray(self._seed))
        try:
            signature = key_pair.sign(body.encode())
        finally:
            key_pair.wipe()
        return f"{body}.{base64.urlsafe_b64encode(signature).decode()}"

    def acting_as(self, tenant: str, role: str, reason: str) -> Principal:
        """This service as the principal of work it starts itself (a retraining policy), in ``tenant``."""
        return Principal(tenant=tenant, key_id="", role=role, name=reason, service=self.service)


class ServiceVerifier:
    """Checks service tokens against the services' public nkeys (``{"trainer": "U..."}``)."""

    def __init__(self, public_keys: Mapping[str, str]) -> None:
        self._keys = dict(public_keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def verify(self, token: str) -> Principal:
        """The principal a valid, unexpired token names, with ``via`` set to its service.

        Raises:
            Unauthenticated: a token that is malformed, signed by no known service, or expired.
        """
        body, _, signature = token.partition(".")
        try:
            claims = json.loads(base64.urlsafe_b64decode(body.encode()))
            service = str(claims["svc"])
            raw_signature = base64.urlsafe_b64decode(signature.encode())
        except (ValueError, KeyError, TypeError):
            raise Unauthenticated("the service token is malformed") from None
        public = self._keys.get(service)
        if public is None:
            raise Unauthenticated(f"the service token names {service!r}, which is not a service this one trusts")
        try:
            Ed25519PublicKey.from_public_bytes(_raw_public_key(public)).verify(raw_signature, body.encode())
        except Exception:
            raise Unauthenticated(f"the service token of {service!r} does not carry its signature") from None
        if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < time.time():
            raise Unauthenticated(f"the service token of {service!r} has expired")
        role = str(claims.get("role", ""))
        if role not in ROLES:
            raise Unauthenticated(f"the service token of {service!r} names no role")
        return Principal(
            tenant=str(claims["ten"]),
            key_id=str(claims.get("kid", "")),
            role=role,
            name=str(claims.get("name", "")),
            grants=tuple((str(r), str(g)) for r, g in claims.get("grants", [])),
            via=service,
            service=str(claims.get("own", "")),
        )


def _raw_public_key(public: str) -> bytes:
    """The 32 Ed25519 bytes of an nkey user public key (``U...``: base32 of prefix, key, CRC-16)."""
    raw = base64.b32decode(public + "=" * (-len(public) % 8))
    if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
        raise ValueError("not a user public key")
    if raw[33:] != bytes(nkeys.crc16_checksum(raw[:33])):
        raise ValueError("the public key's checksum does not match")
    return raw[1:33]


def service_public_keys(values: Mapping[str, str] | str | None) -> dict[str, str]:
    """Parses the ``service_keys`` setting: JSON ``{"service": "U..."}``."""
    if not values:
        return {}
    parsed: Any = json.loads(values) if isinstance(values, str) else values
    return {str(k): str(v) for k, v in dict(parsed).items()}


@dataclass
class Access:
    """What the interceptor of one process checks calls with."""

    book: KeyBook
    rules: Mapping[str, Rule]
    verifier: ServiceVerifier = field(default_factory=lambda: ServiceVerifier({}))
    signer: ServiceSigner | None = None


MIN_SECRET_CHARS: Final = 32
"""A bootstrap secret shorter than this is refused: it would be guessable."""


def read_secret_file(path: str | Path, setting: str) -> str:
    """The key secret in ``path``, a file only its owner may read.

    Raises:
        InvalidArgument: (field ``setting``) unreadable, readable by others, or too short to be a secret.
    """
    value = read_private(path, setting, "key file").decode(errors="replace").strip()
    if len(value) < MIN_SECRET_CHARS or any(c.isspace() for c in value):
        raise InvalidArgument(
            f"{path} holds no key secret (expected one line of at least {MIN_SECRET_CHARS} characters, no spaces)",
            field=setting,
        )
    return value
