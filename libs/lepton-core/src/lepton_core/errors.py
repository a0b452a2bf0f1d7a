"""The Lepton error tree.

Every error a service raises on purpose derives from :class:`LeptonError`. The gRPC
layer (:mod:`lepton_core.rpc`) maps each class to one status code, so service code
never touches gRPC status codes, and event handlers can tell a retryable failure
from a permanent one.
"""

from __future__ import annotations

import errno
from typing import TypeGuard

MAX_DETAILS_CHARS = 2000
"""The longest status message a service sends, in characters."""
MAX_DETAILS_WIRE = 6000
"""The most bytes a status message takes on the wire: gRPC percent-encodes it in a trailer, each
byte of a non-ASCII character as three, and refuses trailers past 8 KiB (16 KiB hard)."""


def _wire_size(char: str) -> int:
    return 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "surrogatepass"))


def details(error: BaseException | str) -> str:
    """The status message for ``error``, cut so that no refusal breaks the transport.

    At most :data:`MAX_DETAILS_CHARS` characters and :data:`MAX_DETAILS_WIRE` bytes once
    percent-encoded, whatever alphabet the message (or the value it quotes) is in.
    """
    text = str(error)
    size = 0
    for i, char in enumerate(text):
        size += _wire_size(char)
        if i >= MAX_DETAILS_CHARS - 60 or size > MAX_DETAILS_WIRE - 60:
            return f"{text[:i]}... (message cut from {len(text)} characters)"
    return text


#: The operating system's "no room" answers to a write: the disk full, or the user's disk quota reached.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc`` is a write on this host's own disk that found no room (an upload's spool, a file
    being written): the platform's fault to fix, never the caller's input to blame."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


class LeptonError(Exception):
    """Base of all Lepton errors.

    Attributes:
        message: What went wrong, phrased so the user can act on it.
        field: The request field at fault, when there is one.
        retryable: Whether trying the same thing again later may succeed.
    """

    retryable: bool = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InvalidArgument(LeptonError):
    """The request itself is wrong (bad value, bad file, unknown name)."""


class NotFound(LeptonError):
    """The named thing does not exist for this tenant."""


class AlreadyExists(LeptonError):
    """The thing to create is already there."""


class FailedPrecondition(LeptonError):
    """The system is not in a state where the request can be carried out."""


class Conflict(LeptonError):
    """A concurrent change won a compare-and-set; re-read and try again."""

    retryable = True


class Unauthenticated(LeptonError):
    """No API key, or one that is not known."""


class PermissionDenied(LeptonError):
    """The key is known but may not do this."""


class ResourceExhausted(LeptonError):
    """A limit of the tenant's plan would be passed (:mod:`lepton_core.quotas`); nothing was stored.

    Attributes:
        limit: The limit's name (``datasets``); also the error's ``field``.
        used: What the tenant uses of it (or what the request asked for at once).
        maximum: The limit's value on the plan.
        plan: The tenant's plan.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        limit: str = "",
        used: int = 0,
        maximum: int = 0,
        plan: str = "",
    ) -> None:
        super().__init__(message, field=field)
        self.limit = limit
        self.used = used
        self.maximum = maximum
        self.plan = plan


class Unavailable(LeptonError):
    """A dependency (NATS, Triton, another service) cannot be reached right now."""

    retryable = True


class DataIntegrityError(LeptonError):
    """Stored bytes do not match their recorded digest (tampered or corrupt)."""
