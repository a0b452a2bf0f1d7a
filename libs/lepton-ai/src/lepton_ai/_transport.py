"""Channels and calls: one place that turns gRPC failures into SDK exceptions."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import grpc
from google.protobuf.message import Message

from lepton_ai.errors import InvalidArgument, LeptonError, Unavailable, from_rpc_error
from lepton_core.rpc import call_metadata
from lepton_core.tls import is_loopback

T = TypeVar("T")
M = TypeVar("M", bound=Message)

#: The platform's gRPC ports in order: with LEPTON_URL=host:port, data listens on
#: port, trainer on port+1, ... monitor on port+5, the inference gateway on port+6 (what `make up` uses).
SERVICES = ("data", "trainer", "evaluator", "registry", "deployer", "monitor", "gateway")
DEFAULT_URL = "127.0.0.1:50051"
MESSAGE_LIMIT = 64 * 1024 * 1024
#: How long a long wait (fit, deploy, watch, predict) rides through a service that stopped answering, as a
#: restarting service does for a few seconds, before it raises ``Unavailable``.
OUTAGE_S = 60.0
#: Reconnect soon after a restart: gRPC's default backoff grows to two minutes between tries.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000)]

log = logging.getLogger("lepton_ai")


def pauses(first: float = 0.02, most: float = 0.25) -> Iterator[float]:
    """Pauses between tries: look again soon (most waits end within a second), then less often."""
    pause = first
    while True:
        yield pause
        pause = min(pause * 2, most)


class Outage:
    """A long wait's time without an answer from ``service``: :meth:`ride` sleeps and returns while the
    outage is younger than ``limit`` seconds, and re-raises past it; an answer (:meth:`over`) ends it."""

    def __init__(self, service: str, limit: float = OUTAGE_S) -> None:
        self.service, self.limit = service, limit
        self._since: float | None = None
        self._pauses = pauses(0.2, 2.0)

    def over(self) -> None:
        self._since = None
        self._pauses = pauses(0.2, 2.0)

    def ride(self, exc: Unavailable) -> float:
        """Seconds left to ride (after sleeping a pause); raises ``exc`` once the outage is ``limit`` old."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
            log.warning("%s unavailable (restarting?); retrying for up to %.0f s", self.service, self.limit)
        left = self._since + self.limit - now
        if left <= 0:
            raise exc
        time.sleep(min(next(self._pauses), left))
        return left

    def notice(self, left: float) -> str:
        """What a progress bar says meanwhile."""
        return f"{self.service} unavailable, retrying ({left:.0f} s left)"


def ride_out(service: str, attempt: Callable[[], T], limit: float = OUTAGE_S) -> T:
    """``attempt()`` until it answers, through ``Unavailable`` (a restarting ``service``) for up to ``limit`` s.
    Only for calls that may be repeated (reads, and requests the platform treats as the same request)."""
    outage = Outage(service, limit)
    while True:
        try:
            return attempt()
        except Unavailable as exc:
            outage.ride(exc)


def message(cls: type[M], where: str = "", /, **fields: Any) -> M:
    """``cls(**fields)`` for a request built from a caller's keywords or dict.

    A field ``cls`` does not have, or a value of the wrong type, is an
    :class:`InvalidArgument` naming it (``where`` is its path's prefix, e.g. ``"config."``),
    not protobuf's ValueError or TypeError.
    """
    known = cls.DESCRIPTOR.fields_by_name
    for name in fields:
        if name not in known:
            raise InvalidArgument(f"{where}{name}: no such field; expected one of {', '.join(sorted(known))}")
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:
        culprit = ""
        for name, value in fields.items():  # which value protobuf refused: its message does not say
            try:
                cls(**{name: value})
            except (TypeError, ValueError):
                culprit = name
                break
        raise InvalidArgument(f"{where}{culprit}: {exc}" if culprit else f"{where.rstrip('.')}: {exc}") from None


#: What ``root_certificates=`` accepts: a PEM file's path or the PEM bytes themselves.
RootCertificates = str | os.PathLike[str] | bytes


def load_root_certificates(value: RootCertificates | None) -> tuple[bytes | None, str]:
    """The PEM CA certificates to trust (None: the system's) and where they came from, for messages.

    ``value`` wins over ``LEPTON_TLS_CA_FILE``; a file that cannot be read, or holds no
    PEM certificate, is an :class:`InvalidArgument` naming the argument or variable.
    """
    if value is None:
        env = os.environ.get("LEPTON_TLS_CA_FILE")
        if not env:
            return None, ""
        return _read_pem(env, "LEPTON_TLS_CA_FILE"), f"LEPTON_TLS_CA_FILE={env}"
    if isinstance(value, bytes):
        if b"-----BEGIN CERTIFICATE-----" not in value:
            raise InvalidArgument("root_certificates: the bytes hold no PEM certificate (-----BEGIN CERTIFICATE-----)")
        return value, "root_certificates= as bytes"
    return _read_pem(value, "root_certificates"), f"root_certificates={os.fspath(value)}"


#: What ``client_certificate=`` accepts: (certificate chain, private key), each a PEM file's path.
ClientCertificate = tuple[str | os.PathLike[str], str | os.PathLike[str]]


def load_client_certificate(value: ClientCertificate | None) -> tuple[bytes, bytes] | None:
    """(PEM chain, PEM key) to present to a platform that requires mutual TLS, or None.

    ``value`` wins over ``LEPTON_TLS_CERT_FILE`` with ``LEPTON_TLS_KEY_FILE``.
    """
    if value is None:
        env_cert, env_key = os.environ.get("LEPTON_TLS_CERT_FILE"), os.environ.get("LEPTON_TLS_KEY_FILE")
        if not env_cert and not env_key:
            return None
        if not (env_cert and env_key):
            raise InvalidArgument("LEPTON_TLS_CERT_FILE and LEPTON_TLS_KEY_FILE: set both for a client certificate")
        return _read_pem(env_cert, "LEPTON_TLS_CERT_FILE"), _read_pem(env_key, "LEPTON_TLS_KEY_FILE", "PRIVATE KEY")
    cert, key = value
    return _read_pem(cert, "client_certificate[0]"), _read_pem(key, "client_certificate[1]", "PRIVATE KEY")


def _read_pem(path: str | os.PathLike[str], name: str, kind: str = "CERTIFICATE") -> bytes:
    what = "CA file" if name.endswith(("CA_FILE", "root_certificates")) else "file"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{name}: cannot read the {what} {os.fspath(path)}: {exc.strerror or exc}") from None
    if f"-----BEGIN {kind}-----".encode() not in data and f" {kind}-----".encode() not in data:
        raise InvalidArgument(f"{name}: {os.fspath(path)} holds no PEM {kind.lower()} (-----BEGIN {kind}-----)")
    return data


def resolve_endpoints(url: str | None, endpoints: Mapping[str, str] | None = None) -> tuple[dict[str, str], bool]:
    """Service addresses from a base URL (and per-service overrides), and whether to use TLS."""
    raw = url or os.environ.get("LEPTON_URL") or DEFAULT_URL
    parsed = urlparse(raw if "://" in raw else f"grpc://{raw}")
    if parsed.scheme not in ("grpc", "grpcs", "http", "https"):
        raise InvalidArgument(f"url: scheme {parsed.scheme!r} is not supported; use host:port or grpcs://host:port")
    tls = parsed.scheme in ("grpcs", "https")
    host = parsed.hostname or "127.0.0.1"
    base = parsed.port or 50051
    out = {name: f"{host}:{base + i}" for i, name in enumerate(SERVICES)}
    unknown = sorted(set(endpoints or {}) - set(SERVICES))
    if unknown:
        raise InvalidArgument(f"endpoints: no service named {unknown[0]!r}; the services are {', '.join(SERVICES)}")
    out.update(endpoints or {})
    return out, tls


def insecure_allowed(insecure: bool | None) -> bool:
    """``insecure``, or when None the ``LEPTON_INSECURE`` environment variable (1, true or yes)."""
    if insecure is not None:
        return insecure
    return os.environ.get("LEPTON_INSECURE", "").strip().lower() in ("1", "true", "yes")


def refuse_plaintext_beyond_loopback(endpoints: Mapping[str, str], tls: bool, insecure: bool | None) -> None:
    """InvalidArgument when a call would carry the API key unencrypted to another machine."""
    if tls or insecure_allowed(insecure):
        return
    remote = sorted({h for h in (a.rsplit(":", 1)[0] for a in endpoints.values()) if not is_loopback(h)})
    if remote:
        raise InvalidArgument(
            f"url: {remote[0]} is another machine and the connection would be plaintext, so the API key would "
            "cross the network unencrypted. Use grpcs://host:port (TLS; root_certificates= or LEPTON_TLS_CA_FILE "
            "for a private CA), or insecure=True (LEPTON_INSECURE=1) on a network you trust"
        )


class Transport:
    """Lazily opened channels to each service, and calls that carry the key and trace."""

    def __init__(
        self,
        api_key: str | None,
        url: str | None,
        endpoints: Mapping[str, str] | None = None,
        root_certificates: RootCertificates | None = None,
        insecure: bool | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("LEPTON_API_KEY")
        self.endpoints, tls = resolve_endpoints(url, endpoints)
        self._roots, self._trusted = load_root_certificates(root_certificates)
        self._client_certificate = load_client_certificate(client_certificate)
        # A CA to trust means TLS even at host:port, as it does for the services' own calls.
        self.tls = tls or self._roots is not None
        refuse_plaintext_beyond_loopback(self.endpoints, self.tls, insecure)
        self._channels: dict[str, grpc.Channel] = {}
        # AsyncClient calls from worker threads: one channel per service even when first calls race.
        self._lock = threading.Lock()

    def address(self, service: str) -> str:
        """Where calls to ``service`` go, as a user would write it (``grpcs://`` for TLS)."""
        return f"grpcs://{self.endpoints[service]}" if self.tls else self.endpoints[service]

    def _credentials(self) -> grpc.ChannelCredentials:
        chain, key = self._client_certificate or (None, None)
        return grpc.ssl_channel_credentials(self._roots, private_key=key, certificate_chain=chain)

    def channel(self, service: str) -> grpc.Channel:
        with self._lock:
            if service not in self._channels:
                address = self.endpoints[service]
                options = [
                    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
                    ("grpc.max_send_message_length", MESSAGE_LIMIT),
                    *RECONNECT_OPTIONS,
                ]
                self._channels[service] = (
                    grpc.secure_channel(address, self._credentials(), options=options)
                    if self.tls
                    else grpc.insecure_channel(address, options=options)
                )
            return self._channels[service]

    def aio_channel(self, service: str) -> grpc.aio.Channel:
        """A new ``grpc.aio`` channel to ``service`` for async calls; the caller closes it.

        Made as :meth:`channel` makes its channels (TLS, trusted roots, message limits), but
        not shared: an asyncio channel belongs to the event loop it was made in.
        """
        address = self.endpoints[service]
        options = [
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
            *RECONNECT_OPTIONS,
        ]
        if self.tls:
            return grpc.aio.secure_channel(address, self._credentials(), options=options)
        return grpc.aio.insecure_channel(address, options=options)

    def call(self, service: str, method: Callable[..., T], request: Any, timeout: float = 60.0) -> T:
        """One unary (or client-streaming) call; failures become :mod:`lepton_ai.errors` exceptions."""
        try:
            return method(request, metadata=call_metadata(self.api_key), timeout=timeout)
        except grpc.RpcError as exc:
            raise self.error(exc, service) from None

    def stream(
        self, service: str, method: Callable[..., Iterator[T]], request: Any, timeout: float = 600.0
    ) -> Iterator[T]:
        """A server-streaming call, with the same error mapping while iterating."""
        try:
            yield from method(request, metadata=call_metadata(self.api_key), timeout=timeout)
        except grpc.RpcError as exc:
            raise self.error(exc, service) from None

    def error(self, exc: grpc.RpcError, service: str) -> LeptonError:
        """The SDK exception for a failed call to ``service``."""
        return from_rpc_error(exc, self.address(service), tls=self.tls, trusted=self._trusted)

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
        for channel in channels:
            channel.close()
