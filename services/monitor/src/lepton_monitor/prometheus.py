"""The Prometheus text exposition format (version 0.0.4), rendered and served over HTTP.

Written here rather than taken from ``prometheus-client``: the monitor computes its metrics itself (windows,
drift, alerts) and only needs them rendered at scrape time, which is a few lines of escaping and
formatting; ``prometheus-client`` would add a registry of live metric objects to keep in step with that
state, and another pinned dependency. The server is a minimal HTTP/1.1 responder on asyncio: ``GET /metrics``
gets the text, anything else 404, one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MetricType = Literal["counter", "gauge", "untyped"]
#: Longest request head read; a scrape sends a few hundred bytes.
MAX_REQUEST = 16 * 1024


@dataclass
class MetricFamily:
    """One metric: its name, help, type and samples (labels and value)."""

    name: str
    help: str
    type: MetricType
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, labels: Mapping[str, str], value: float) -> None:
        self.samples.append((dict(labels), float(value)))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render(families: Iterable[MetricFamily]) -> str:
    """The exposition text of ``families``: ``# HELP``, ``# TYPE``, then one line per sample."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for labels, value in family.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{family.name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{family.name} {_number(value)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves ``GET /metrics`` with the text ``collect`` returns at each scrape.

    Args:
        host: Address to bind.
        port: Port to bind (0 picks a free one; :attr:`port` says which).
        collect: Builds the metric families at scrape time.
    """

    def __init__(self, host: str, port: int, collect: Callable[[], list[MetricFamily]]) -> None:
        self.host = host
        self.port = port
        self._collect = collect
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("prometheus metrics on http://%s:%d/metrics", self.host, self.port)

    async def serve_forever(self) -> None:
        """Starts (if needed) and serves until cancelled; the socket is closed on the way out."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            if len(head) > MAX_REQUEST:
                raise ValueError("request too large")
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if method not in ("GET", "HEAD"):
                await self._respond(writer, 405, "method not allowed\n", "text/plain")
            elif path != "/metrics":
                await self._respond(writer, 404, "not found: scrape /metrics\n", "text/plain")
            else:
                body = render(self._collect())
                await self._respond(writer, 200, body if method == "GET" else "", CONTENT_TYPE)
        except Exception as exc:  # a bad client must never take the endpoint down
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, body: str, content_type: str) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
        data = body.encode()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()


__all__ = ["CONTENT_TYPE", "MetricFamily", "MetricsServer", "render"]
