"""An in-process fake of the Lepton platform's gRPC services, for the SDK's unit tests.

:class:`FakePlatform` starts one real ``grpc`` server per service on 127.0.0.1, on six
consecutive free ports in the order the SDK documents (data, trainer, evaluator,
registry, deployer, monitor; ``EventService`` beside data, ``AccessService`` beside the
registry), so ``la.Client(key, url=fake.url)`` reaches it through its real transport, as
httpx's MockTransport lets a client run its real code. Each servicer subclasses the generated ``*Servicer`` base and
keeps a tiny in-memory state. No NATS, no Triton, no service process.

Every call is recorded (:class:`Call`: method, metadata, deadline, request messages)
before anything else happens, so a test can assert on what the SDK sent even when the
call was refused. :meth:`FakePlatform.fail` makes a method answer a chosen gRPC status
(optionally only the next N times, or after N streamed items). Calls without one of
``fake.api_keys`` are UNAUTHENTICATED, as on the platform. The servicers and their
state are in fake_services.py and fake_access.py; the fixtures (``fake``, ``client``) in
conftest.py.
"""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import polars as pl
from google.protobuf.message import Message

import lepton_ai as la

from .fake_access import FakeAccess
from .fake_services import (
    TENANT,
    FakeData,
    FakeDeployer,
    FakeEvaluator,
    FakeEvents,
    FakeMonitor,
    FakeRegistry,
    FakeTrainer,
)

if TYPE_CHECKING:
    from lepton_core.tls import TlsFiles

__all__ = ["API_KEY", "SERVICES", "TENANT", "Call", "FakePlatform", "sales_frame", "write_csv"]

API_KEY = "sk-unit-7f3a9c41d2"
#: The services in port order: with url host:port, data is on port, trainer on port+1, ...
SERVICES = ("data", "trainer", "evaluator", "registry", "deployer", "monitor")
NO_DEADLINE = 1e8  # seconds: grpc reports a call without a deadline as one this far away


@dataclass
class Call:
    """One RPC as the fake received it."""

    service: str  # the port it arrived on: "data", "trainer", ...
    method: str  # "GetDataset"
    path: str  # "/lepton.data.v1.DataService/GetDataset"
    metadata: list[tuple[str, str]]
    timeout: float | None  # seconds left of the caller's deadline on arrival; None: no deadline
    requests: list[Any] = field(default_factory=list)  # one for a unary request, every message of a stream

    @property
    def request(self) -> Any:
        return self.requests[0]

    def header(self, key: str) -> str | None:
        return next((v for k, v in self.metadata if k == key), None)


@dataclass
class Fault:
    code: grpc.StatusCode
    details: str
    times: int | None  # None: every call from now on
    after: int  # a server stream sends this many items first


class FakePlatform:
    """Six fake services on consecutive ports, their state, and the calls they received."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified on every state change
        self.calls: list[Call] = []
        self.faults: dict[str, list[Fault]] = {}
        self.api_keys: dict[str, str] = {API_KEY: TENANT}
        self.stopping = False
        self.tls = tls  # None: plaintext
        self.data = FakeData(self)
        self.trainer = FakeTrainer(self)
        self.evaluator = FakeEvaluator(self)
        self.registry = FakeRegistry(self)
        self.deployer = FakeDeployer(self)
        self.monitor = FakeMonitor(self)
        self.events = FakeEvents(self)
        self.access = FakeAccess(self)
        # The fake's own key, as the platform records it: an admin of TENANT.
        self.key, _ = self.access.add_key(TENANT, "admin", "unit", secret=API_KEY)
        self.ports: dict[str, int] = {}
        self._servers: list[grpc.Server] = []

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakePlatform:
        for _ in range(50):
            base = random.randrange(20000, 32000)  # below Linux's ephemeral range
            servers: list[grpc.Server] = []
            try:
                for offset, name in enumerate(SERVICES):
                    servers.append(self._server(name, base + offset))
            except RuntimeError:  # a port is taken: try another base
                for server in servers:
                    server.stop(None)
                continue
            for server in servers:
                server.start()
            self._servers = servers
            self.ports = {name: base + offset for offset, name in enumerate(SERVICES)}
            return self
        raise RuntimeError("no six consecutive free ports found")

    def _server(self, name: str, port: int) -> grpc.Server:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"fake-{name}"),
            interceptors=[_Gate(self, name)],
            options=[("grpc.so_reuseport", 0)],  # never share a port with another test's server
        )
        servicer = getattr(self, name)
        servicer.add_to(servicer, server)
        if name == "data":  # every service serves EventService; the SDK asks data's
            self.events.add_to(self.events, server)
        if name == "registry":  # the registry's process serves AccessService
            self.access.add_to(self.access, server)
        address = f"127.0.0.1:{port}"
        if self.tls is None:
            server.add_insecure_port(address)
        else:
            from lepton_core.tls import server_credentials

            server.add_secure_port(address, server_credentials(self.tls.cert_file, self.tls.key_file))
        return server

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.changed.notify_all()
        for event in [server.stop(None) for server in self._servers]:
            event.wait(5)

    @property
    def url(self) -> str:
        """``host:port`` of the data service, the others on the next ports (``grpcs://`` with TLS)."""
        address = f"127.0.0.1:{self.ports['data']}"
        return f"grpcs://{address}" if self.tls is not None else address

    def client(self, api_key: str | None = API_KEY, **kwargs: Any) -> la.Client:
        return la.Client(api_key, self.url, **kwargs)

    # -- what tests set and read --------------------------------------------------------------

    def fail(
        self, method: str, code: grpc.StatusCode, details: str = "", *, times: int | None = None, after: int = 0
    ) -> None:
        """``method`` answers ``code`` with ``details`` (the next ``times`` calls; None: all).

        For a server-streaming method, ``after`` items are sent before the status.
        """
        with self.lock:
            self.faults.setdefault(method, []).append(Fault(code, details, times, after))

    def calls_to(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def methods(self) -> list[str]:
        """The methods called, in order."""
        with self.lock:
            return [c.method for c in self.calls]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Waits until ``predicate()`` (checked on every state change and call) is true."""
        with self.lock:
            return self.changed.wait_for(predicate, timeout)

    # -- used by the gate ---------------------------------------------------------------------

    def _record(self, service: str, path: str, context: grpc.ServicerContext) -> Call:
        remaining = context.time_remaining()
        call = Call(
            service=service,
            method=path.rsplit("/", 1)[-1],
            path=path,
            metadata=[(m.key, m.value) for m in context.invocation_metadata()],
            timeout=None if remaining is None or remaining > NO_DEADLINE else remaining,
        )
        with self.lock:
            self.calls.append(call)
            self.changed.notify_all()
        return call

    def _take_fault(self, method: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(method, [])
            if not queue:
                return None
            fault = queue[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)
            return fault

    def tenant(self, context: grpc.ServicerContext) -> str:
        """The caller's tenant from its key; aborts UNAUTHENTICATED (without echoing the key)."""
        auth = dict((m.key, m.value) for m in context.invocation_metadata()).get("authorization", "")
        key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        if not key:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: no API key")
        if key not in self.api_keys:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: unknown API key")
        return self.api_keys[key]


class _Gate(grpc.ServerInterceptor):
    """Records each call, checks its key and injects the faults asked for, then runs the servicer."""

    def __init__(self, fake: FakePlatform, service: str) -> None:
        self._fake = fake
        self._service = service

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        kind = ("stream_" if handler.request_streaming else "unary_") + (
            "stream" if handler.response_streaming else "unary"
        )
        run = getattr(handler, kind)
        path = details.method

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._fake._record(self._service, path, context)
            if handler.request_streaming:
                request = _tee(request, call.requests)
            else:
                call.requests.append(request)
            if self._fake.api_keys:
                self._fake.tenant(context)
            fault = self._fake._take_fault(call.method)
            if fault is not None and not (handler.response_streaming and fault.after):
                context.abort(fault.code, fault.details)
            result = run(request, context)
            if fault is not None:
                return _fail_after(result, fault, context)
            return result

        return handler._replace(**{kind: behaviour})


def _tee(requests: Iterable[Message], into: list[Any]) -> Iterator[Message]:
    for request in requests:
        into.append(request)
        yield request


def _fail_after(items: Iterator[Message], fault: Fault, context: grpc.ServicerContext) -> Iterator[Message]:
    for sent, item in enumerate(items, start=1):
        yield item
        if sent == fault.after:  # stop before asking for more: the next item may never come
            break
    context.abort(fault.code, fault.details)


# -- test data ----------------------------------------------------------------------------------


def sales_frame(rows: int = 5) -> pl.DataFrame:
    """A small table with a numeric target, the shape the SDK's examples use."""
    return pl.DataFrame(
        {
            "store": [f"s{i % 3}" for i in range(rows)],
            "units": list(range(1, rows + 1)),
            "price": [1.5 * (i + 1) for i in range(rows)],
            "target": [10.0 * (i + 1) for i in range(rows)],
        }
    )


def write_csv(path: Path, frame: pl.DataFrame | None = None) -> Path:
    buf = io.BytesIO()
    (frame if frame is not None else sales_frame()).write_csv(buf)
    path.write_bytes(buf.getvalue())
    return path
