"""The gateway's connections to Triton: one channel per host, calls that move bytes unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

INFERENCE_SERVICE = "inference.GRPCInferenceService"
MESSAGE_LIMIT = 64 * 1024 * 1024
#: Reconnect to a restarted Triton within a second: gRPC's default backoff grows to two minutes between
#: tries, so after a 20 s outage the gateway process served again 7 s after the nginx front did.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 1000)]

#: One unary call to Triton: request bytes in, response bytes out (a ``grpc.aio.UnaryUnaryMultiCallable``).
RawCall = Any


class Upstream:
    """Channels to Triton hosts, opened on first use; every call carries the gateway's secret.

    Args:
        secret: The value of :data:`~lepton_gateway.access.SECRET_HEADER` (None: sent without).
        header: The header's name.
    """

    def __init__(self, secret: str | None, header: str) -> None:
        self._secret_md: tuple[tuple[str, str], ...] = ((header, secret),) if secret else ()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[tuple[str, str], RawCall] = {}

    def call(self, host: str, method: str) -> RawCall:
        """The raw-bytes callable of ``method`` (``ModelInfer``, ...) on ``host``."""
        found = self._calls.get((host, method))
        if found is None:
            channel = self._channels.get(host)
            if channel is None:
                channel = self._channels[host] = grpc.aio.insecure_channel(
                    host,
                    options=[
                        ("grpc.max_receive_message_length", MESSAGE_LIMIT),
                        ("grpc.max_send_message_length", MESSAGE_LIMIT),
                        *RECONNECT_OPTIONS,
                    ],
                )
            found = self._calls[(host, method)] = channel.unary_unary(f"/{INFERENCE_SERVICE}/{method}")
        return found

    def metadata(self, passed_on: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """What a forwarded call carries: the caller's trace headers, then the secret."""
        return (*passed_on, *self._secret_md) if passed_on else self._secret_md

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._calls.clear()
