"""Channels and calls: one place that turns gRPC failures into SDK exceptions."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

import grpc

from lepton_ai.errors import InvalidArgument, from_rpc_error
from lepton_core.rpc import call_metadata

T = TypeVar("T")

#: The platform's services in port order: with LEPTON_URL=host:port, data listens on
#: port, trainer on port+1, ... monitor on port+5 (what `make up` uses).
SERVICES = ("data", "trainer", "evaluator", "registry", "deployer", "monitor")
DEFAULT_URL = "127.0.0.1:50051"
MESSAGE_LIMIT = 64 * 1024 * 1024


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
    out.update(endpoints or {})
    return out, tls


class Transport:
    """Lazily opened channels to each service, and calls that carry the key and trace."""

    def __init__(self, api_key: str | None, url: str | None, endpoints: Mapping[str, str] | None = None) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("LEPTON_API_KEY")
        self.endpoints, self._tls = resolve_endpoints(url, endpoints)
        self._channels: dict[str, grpc.Channel] = {}

    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            address = self.endpoints[service]
            options = [
                ("grpc.max_receive_message_length", MESSAGE_LIMIT),
                ("grpc.max_send_message_length", MESSAGE_LIMIT),
            ]
            self._channels[service] = (
                grpc.secure_channel(address, grpc.ssl_channel_credentials(), options=options)
                if self._tls
                else grpc.insecure_channel(address, options=options)
            )
        return self._channels[service]

    def call(self, service: str, method: Callable[..., T], request: Any, timeout: float = 60.0) -> T:
        """One unary (or client-streaming) call; failures become :mod:`lepton_ai.errors` exceptions."""
        try:
            return method(request, metadata=call_metadata(self.api_key), timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.endpoints[service]) from None

    def stream(
        self, service: str, method: Callable[..., Iterator[T]], request: Any, timeout: float = 600.0
    ) -> Iterator[T]:
        """A server-streaming call, with the same error mapping while iterating."""
        try:
            yield from method(request, metadata=call_metadata(self.api_key), timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.endpoints[service]) from None

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
