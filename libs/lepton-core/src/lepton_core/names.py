"""The one grammar for names and the one for ids, checked at every entry point.

A value a request or an event carries becomes part of a JetStream KV key, a NATS subject, an
object name or a file path only after one of these checks. Each grammar is a single pattern
matched with ``re.fullmatch`` (``$`` would also match before a trailing newline):

- **name** (datasets, models, deployments, aliases, tenants): ``(?!.*--)[a-z0-9][a-z0-9_-]{0,63}``:
  lower-case ASCII letters and digits, ``_`` and ``-``, starting with a letter or digit, at most
  64 characters, and no ``--``. No ``.``, ``*``, ``>``, space or non-ASCII character can reach a
  key or subject (NATS splits subjects at ``.`` and takes ``*`` and ``>`` as wildcards), and
  ``--`` is the separator of Triton model names (``<tenant>--<deployment>``,
  ``<tenant>--<deployment>--next``), so no two tenants' or deployments' models can share one.
- **id** (made by the platform): ``<kind>_[a-z0-9_]{1,64}``, where the kind says what the id
  names (``ds`` dataset, ``dv`` dataset version, ``job`` training job, ``ev`` evaluation,
  ``inc`` incident); a field that takes a job id refuses an evaluation id.

Refusals are :class:`~lepton_core.errors.InvalidArgument` naming the field, the grammar, and the
value as :func:`shown` cuts it, so a long value never makes a long error.
"""

from __future__ import annotations

import re
from typing import Final

from lepton_core.errors import InvalidArgument

NAME_PATTERN: Final = r"(?!.*--)[a-z0-9][a-z0-9_-]{0,63}"
"""A name: 1 to 64 of ``a-z 0-9 _ -``, starting with a letter or digit, without ``--``."""
NAME_GRAMMAR: Final = "1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit, without '--'"
"""The name grammar in words, as refusals say it."""
ID_BODY_PATTERN: Final = r"[a-z0-9_]{1,64}"
"""What follows an id's ``<kind>_`` prefix."""
ID_KINDS: Final = {
    "ds": "dataset",
    "dv": "dataset version",
    "job": "training job",
    "ev": "evaluation",
    "inc": "incident",
}
"""Every id kind the platform makes, by prefix."""
SHOWN_CHARS: Final = 64
"""How much of a refused value an error message quotes."""

_NAME = re.compile(NAME_PATTERN)
_ID = {kind: re.compile(f"{kind}_{ID_BODY_PATTERN}") for kind in ID_KINDS}


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the full length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str | bytes) else f"{len(text)} characters as text"
    return f"{text[:limit]}... ({size})"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def is_name(value: str) -> bool:
    """Whether ``value`` is a name (see the module docstring)."""
    return _NAME.fullmatch(value) is not None


def check_name(value: str, field: str, *, what: str = "a name") -> str:
    """``value`` if it is a name, else InvalidArgument naming ``field`` and the grammar."""
    if not is_name(value):
        raise InvalidArgument(
            f"expected {what}: {NAME_GRAMMAR}; got {shown(value)}",
            field=field,
        )
    return value


def is_id(value: str, kind: str) -> bool:
    """Whether ``value`` is an id of ``kind`` (a key of :data:`ID_KINDS`)."""
    return _ID[kind].fullmatch(value) is not None


def check_id(value: str, field: str, kind: str) -> str:
    """``value`` if it is an id of ``kind``, else InvalidArgument naming ``field`` and the expected form."""
    if not is_id(value, kind):
        other = next((k for k in ID_KINDS if k != kind and is_id(value, k)), None)
        why = f" (that is {_a(ID_KINDS[other])} id)" if other else ""
        raise InvalidArgument(
            f"expected {_a(ID_KINDS[kind])} id like '{kind}_…' (a-z, 0-9, '_'); got {shown(value)}{why}",
            field=field,
        )
    return value


__all__ = [
    "ID_BODY_PATTERN",
    "ID_KINDS",
    "NAME_GRAMMAR",
    "NAME_PATTERN",
    "SHOWN_CHARS",
    "check_id",
    "check_name",
    "is_id",
    "is_name",
    "shown",
]
