"""A message is trusted only as far as its subject.

Anyone who can publish on the bus (an integrator's credentials, a compromised service, a
mistake) chooses the body of what it sends; the subject is what NATS permissions and stream
filters govern. So the tenant of an event is the one its subject names, and the body must agree:

- every ``tenant`` field of the payload, at any depth, is the subject's tenant (nested ones,
  such as the entries of a ``PredictionLogBatch``, may also be empty: they take the enclosing one's);
- every ``lepton.common.v1.ObjectRef`` the payload carries (a dataset, an artifact, at any depth)
  names one of the platform's object stores and an object under the tenant's prefix
  ``<tenant>/``, so an event of tenant b can never make a service read tenant a's objects.

:func:`check_payload` is the one implementation; :func:`lepton_core.events.decode` runs it on
every message it decodes, so every consumer (the durable consumers of the services, the
monitor's stream scans, the event stream served over gRPC) goes through it. A refusal is
:class:`ForgedEvent`, an :class:`~lepton_core.errors.InvalidArgument` naming the field at fault;
consumers dead-letter it (``Lepton-Error: InvalidArgument: <field>: ...``) and never handle it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from lepton_core.bus import OBJECT_BUCKETS
from lepton_core.errors import InvalidArgument
from lepton_core.names import shown

OBJECT_REF: Final = "lepton.common.v1.ObjectRef"
"""The full name of the object reference message every payload uses."""
TENANT_FIELD: Final = "tenant"
NAME_CHARS: Final = 160
"""How much of a refused object name an error quotes: the platform's own names (``<tenant>/<sha256>.zip``) in full."""


class ForgedEvent(InvalidArgument, ValueError):
    """A message whose body claims more than its subject grants: another tenant, another
    tenant's object, or a subject that is not the one its type is published on.

    Also a :class:`ValueError`, so readers that skip what is not a valid event skip it too.
    """


def object_prefix(tenant: str) -> str:
    """Where a tenant's objects lie in every object store: ``<tenant>/``."""
    return f"{tenant}/"


def check_object_ref(bucket: str, name: str, tenant: str, field: str, subject: str = "") -> None:
    """Refuses an object reference that is not one of ``tenant``'s objects.

    Raises:
        ForgedEvent: (field ``<field>.bucket`` or ``<field>.name``) an unknown bucket, or a name
            outside ``<tenant>/`` (or with an empty, ``.`` or ``..`` part).
    """
    where = f" (event on {subject})" if subject else ""
    if bucket not in OBJECT_BUCKETS:
        raise ForgedEvent(
            f"{shown(bucket)} is not an object store of the platform (expected one of {', '.join(OBJECT_BUCKETS)})"
            f"{where}",
            field=f"{field}.bucket",
        )
    prefix = object_prefix(tenant)
    rest = name[len(prefix) :] if name.startswith(prefix) else ""
    if not rest or any(part in ("", ".", "..") for part in rest.split("/")):
        raise ForgedEvent(
            f"object {shown(name, NAME_CHARS)} in {bucket} lies outside the prefix {prefix!r} "
            f"of tenant {tenant!r}{where}: an event may only refer to objects of the tenant its subject names",
            field=f"{field}.name",
        )


@dataclass(frozen=True)
class _Field:
    name: str
    #: "tenant", "ref" (an ObjectRef) or "message" (one that holds either, at some depth).
    kind: str
    repeated: bool
    map_values: bool


@cache
def _plan(descriptor: Descriptor) -> tuple[_Field, ...]:
    """The fields of ``descriptor`` worth visiting: tenants, object references, and messages holding them."""
    return tuple(_fields(descriptor, frozenset()))


def _fields(descriptor: Descriptor, seen: frozenset[str]) -> Iterator[_Field]:
    for f in descriptor.fields:
        repeated = f.is_repeated
        if f.name == TENANT_FIELD and f.type == FieldDescriptor.TYPE_STRING and not repeated:
            yield _Field(f.name, "tenant", False, False)
            continue
        if f.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        target: Descriptor | None = f.message_type
        is_map = target is not None and target.GetOptions().map_entry
        if target is not None and is_map:
            target = target.fields_by_name["value"].message_type  # None: a map of scalars
        if target is None:
            continue
        if target.full_name == OBJECT_REF:
            yield _Field(f.name, "ref", repeated and not is_map, is_map)
        elif target.full_name not in seen and _holds(target, seen | {descriptor.full_name}):
            yield _Field(f.name, "message", repeated and not is_map, is_map)


def _holds(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    return any(True for _ in _fields(descriptor, seen))


def check_payload(message: Message, tenant: str, subject: str = "") -> None:
    """Refuses a payload that names another tenant or another tenant's object (see the module docstring).

    Args:
        message: The decoded payload.
        tenant: The tenant the subject names.
        subject: The subject it arrived on, for the error message.

    Raises:
        ForgedEvent: naming the field at fault (``tenant``, ``training.tenant``, ``artifact.name``,
            ``logs[3].tenant``, ...).
    """
    _check(message, tenant, subject, "", top=True)


def _check(message: Message, tenant: str, subject: str, path: str, *, top: bool) -> None:
    for f in _plan(message.DESCRIPTOR):
        value = getattr(message, f.name)
        field = f"{path}{f.name}"
        if f.kind == "tenant":
            _check_tenant(value, tenant, subject, field, top=top)
            continue
        if f.map_values:
            items = [(f"{field}[{k!r}]", v) for k, v in value.items()]
        elif f.repeated:
            items = [(f"{field}[{i}]", v) for i, v in enumerate(value)]
        elif message.HasField(f.name):
            items = [(field, value)]
        else:
            continue
        for where, item in items:
            if f.kind == "ref":
                if item.bucket or item.name:
                    check_object_ref(item.bucket, item.name, tenant, where, subject)
            else:
                _check(item, tenant, subject, f"{where}.", top=False)


def _check_tenant(value: str, tenant: str, subject: str, field: str, *, top: bool) -> None:
    if value == tenant or (not top and not value):
        return
    said = f"names tenant {shown(value)}" if value else "names no tenant"
    raise ForgedEvent(
        f"the payload {said} but arrived on {subject or 'a subject'} of tenant {tenant!r}: "
        "an event is trusted only as far as its subject",
        field=field,
    )


__all__ = ["OBJECT_REF", "ForgedEvent", "check_object_ref", "check_payload", "object_prefix"]
