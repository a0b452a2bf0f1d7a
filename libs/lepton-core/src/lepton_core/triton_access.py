"""Who may use Triton's restricted protocols: the platform's two Triton credentials.

Triton restricts groups of its protocols to requests that carry a header with a given value
(``--grpc-restricted-protocol``, ``--http-restricted-api``); a protocol belongs to one group at
most. The platform makes two groups, each with its own secret:

- :data:`CONTROL`: model-repository (load and unload, which runs a model's code, and the
  repository index), model-config, shared-memory, trace and logging. Only the deployer holds it.
- :data:`STATISTICS`: Triton's per-model counters. The deployer (canary checks, deployment
  status) and the monitor hold it; it changes nothing.

Health, metadata and inference are not in either group. Each secret lives in its own file
(mode 0600); services are given the file's path in their settings, never the value.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

#: Prefix Triton puts before a group's key to name its gRPC header (HTTP uses the bare key).
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"

#: What a secret may hold: Triton splits its option at ``:``, ``,`` and ``=``, and it travels in a header.
_SECRET = re.compile(r"[A-Za-z0-9_\-.~+/]{16,512}")


@dataclass(frozen=True)
class ProtocolGroup:
    """A set of Triton protocols restricted to requests carrying one header.

    Attributes:
        key: The header key: ``triton-grpc-protocol-<key>`` over gRPC, ``<key>`` over HTTP.
        protocols: Triton's names of the protocols (gRPC) and APIs (HTTP) in the group.
        file_name: The secret file's name in the platform's secrets folder.
    """

    key: str
    protocols: tuple[str, ...]
    file_name: str

    def option(self, secret: str) -> str:
        """The ``<protocols>:<key>=<value>`` value of Triton's restriction options."""
        return f"{','.join(self.protocols)}:{self.key}={check_secret(secret, self.key)}"


CONTROL = ProtocolGroup(
    "lepton-triton-control",
    ("model-repository", "model-config", "shared-memory", "trace", "logging"),
    "triton-control",
)
STATISTICS = ProtocolGroup("lepton-triton-statistics", ("statistics",), "triton-statistics")
GROUPS = (CONTROL, STATISTICS)


def check_secret(value: str, what: str) -> str:
    """``value`` if Triton can take it as a restriction value; else a ``ValueError`` naming ``what``."""
    if not _SECRET.fullmatch(value):
        raise ValueError(
            f"{what}: a Triton secret must be 16 to 512 characters of letters, digits and -_.~+/ "
            f"(got {len(value)} characters{'' if value.isascii() else ', not all ASCII'})"
        )
    return value


@dataclass(frozen=True, repr=False)
class TritonCredential:
    """The secret of one :class:`ProtocolGroup`, as the headers that carry it."""

    group: ProtocolGroup
    secret: str

    def grpc_headers(self) -> dict[str, str]:
        """The gRPC metadata that opens the group's protocols (tritonclient's ``headers=``)."""
        return {GRPC_HEADER_PREFIX + self.group.key: self.secret}

    def http_headers(self) -> dict[str, str]:
        """The HTTP headers that open the group's APIs."""
        return {self.group.key: self.secret}

    def __repr__(self) -> str:
        return f"TritonCredential({self.group.key}, secret=<hidden>)"

    @classmethod
    def from_file(cls, group: ProtocolGroup, path: str | Path) -> TritonCredential:
        """The credential whose secret is the content of ``path`` (surrounding whitespace ignored)."""
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"{group.key} secret file {path}: {exc.strerror or exc}") from exc
        return cls(group, check_secret(value, f"{group.key} secret file {path}"))


def grpc_headers(credential: TritonCredential | None) -> dict[str, str] | None:
    """``credential``'s gRPC headers; None without one (a Triton that restricts nothing)."""
    return credential.grpc_headers() if credential is not None else None


def ensure_secret_file(path: Path) -> str:
    """The secret in ``path``, made first (32 random bytes, URL-safe base64, mode 0600) if it is missing.

    The folder is made with mode 0700 when missing.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return check_secret(path.read_text().strip(), f"secret file {path}")
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def read_secret_file(path: str | Path) -> str:
    """The secret in ``path`` (the inference secret the gateway and the deployer send the serving models).

    Raises:
        ValueError: naming the file, when it cannot be read or its content is no secret Triton can carry.
    """
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"secret file {path}: {exc.strerror or exc}") from exc
    return check_secret(value, f"secret file {path}")


__all__ = [
    "CONTROL",
    "GROUPS",
    "GRPC_HEADER_PREFIX",
    "STATISTICS",
    "ProtocolGroup",
    "TritonCredential",
    "check_secret",
    "ensure_secret_file",
    "grpc_headers",
    "read_secret_file",
]
