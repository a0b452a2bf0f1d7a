"""The start-up and shutdown every service shares (used by each ``__main__``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from lepton_core import event_stream, events, nats_identity
from lepton_core.access import KEYS_BUCKET, Access, KeyBook, Rule, ServiceSigner, ServiceVerifier
from lepton_core.access_service import SEEN_EVERY_S, report_seen
from lepton_core.audit import AuditLog, event_resource
from lepton_core.bus import EVENTS_ROOT, EVENTS_STREAM, ObjectStore, connect, require_topology
from lepton_core.logs import setup_logging
from lepton_core.quotas import TENANTS_BUCKET, PlanBook
from lepton_core.rpc import create_server, current_principal_or_none
from lepton_core.settings import ServiceSettings
from lepton_core.telemetry import setup_telemetry, shutdown_telemetry
from lepton_core.tenant_deletion import TenantPurger, TenantStep, durable_of
from lepton_core.tls import server_credentials

log = logging.getLogger(__name__)

#: Longest wait for one shutdown step (consumers, gRPC server, NATS close).
SHUTDOWN_STEP_S = 15.0

SERVICES = ("data", "trainer", "evaluator", "registry", "deployer", "monitor")
"""The six services, in pipeline order."""
GATEWAY = "gateway"
"""The inference gateway (``python -m lepton_gateway``): a process of the platform, not an event service."""
PORT_ORDER = (*SERVICES, GATEWAY)
"""The platform's gRPC ports in order: data on the base port, the gateway after the monitor (base + 6)."""
DEFAULT_PORTS = {name: 50051 + i for i, name in enumerate(PORT_ORDER)}
"""Each process's gRPC port when its settings name none: data on 50051, the rest after it, the gateway on 50057."""


@dataclass
class Runtime:
    """What a service's set-up code gets: connections, settings, event helpers."""

    name: str
    settings: ServiceSettings
    nc: NATS
    js: JetStreamContext
    objects: ObjectStore
    access: Access
    #: Every tenant's plan, followed from the ``tenants`` bucket (:mod:`lepton_core.quotas`).
    plans: PlanBook = field(default_factory=PlanBook)
    #: Where the service's audit records go: its calls' (the interceptor) and its own actions'.
    audit: AuditLog | None = None
    consumers: list[events.Consumer] = field(default_factory=list)
    periodic: list[tuple[str, float, Callable[[], Awaitable[object]]]] = field(default_factory=list)
    #: What the service does of its own when a tenant is deleted, before its records are erased.
    tenant_steps: list[TenantStep] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"/lepton/{self.name}"

    def consume(
        self,
        stream: str,
        durable: str,
        handlers: dict[type[Message], events.Handler],
        ack_wait: float | None = None,
    ) -> None:
        """Registers a durable consumer, started once the gRPC server is up.

        ``ack_wait`` (default: the ``ack_wait_s`` setting) is how long a delivery may go without an
        ack or heartbeat before JetStream redelivers it: how fast work of a dead process moves elsewhere.
        """
        if durable not in nats_identity.GRANTS[self.name].durables:
            raise ValueError(
                f"durable consumer {durable!r} is not among {self.name}'s in lepton_core.nats_identity.GRANTS: "
                "add it there, or NATS will refuse it"
            )
        self.consumers.append(
            events.Consumer(
                js=self.js,
                stream=stream,
                durable=durable,
                handlers=handlers,
                max_deliver=self.settings.max_deliver,
                source=self.source,
                ack_wait=ack_wait if ack_wait is not None else self.settings.ack_wait_s,
            )
        )

    def on_tenant_deleted(self, step: TenantStep) -> None:
        """Runs ``step(tenant)`` when a tenant is deleted, before the service's records of it are erased
        (:mod:`lepton_core.tenant_deletion`); it returns what it removed. It must be idempotent:
        a failed deletion is redelivered."""
        self.tenant_steps.append(step)

    def every(self, name: str, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        """Runs ``job`` every ``seconds`` once the service serves, until it stops.

        A failing run is logged and the next one runs on time: a periodic check must
        outlive a broker or host that is down for a while.
        """
        self.periodic.append((name, seconds, job))

    async def publish(
        self, message: Message, *, tenant: str, event_id: str, key: str | None = None, ce_subject: str = ""
    ) -> None:
        """Publishes an event; one the service publishes on its own (from another event, a timer,
        not inside a caller's call) is also an audit record, with the service as the principal."""
        await events.publish(
            self.js, message, tenant=tenant, event_id=event_id, source=self.source, key=key, ce_subject=ce_subject
        )
        spec = events.spec_of(message)
        if self.audit is not None and spec.root == EVENTS_ROOT and spec.audited and current_principal_or_none() is None:
            await self.audit.write(
                tenant=tenant,
                principal=f"service:{self.name}",
                key_id="",
                via="",
                method=f"event:{spec.name}",
                resource=event_resource(spec.name, ce_subject),
                permission="",
                outcome="OK",
            )


Register = Callable[[grpc.aio.Server], Iterable[str]]
Setup = Callable[[Runtime], Awaitable[Register]]


def grpc_service(add: Callable[[Any, grpc.aio.Server], None], servicer: object, service: ServiceDescriptor) -> Register:
    """What a service's ``setup`` returns: adds ``servicer`` to the server, names it for health and reflection.

    Args:
        add: The generated ``add_<Name>Servicer_to_server`` function.
        servicer: The servicer instance.
        service: The service's descriptor, e.g. ``data_pb2.DESCRIPTOR.services_by_name["DataService"]``.
    """

    def register(server: grpc.aio.Server) -> Iterable[str]:
        add(servicer, server)
        return [service.full_name]

    return register


def run_service(name: str, settings: ServiceSettings, setup: Setup, rules: Mapping[str, Rule]) -> None:
    """Runs a service until SIGTERM/SIGINT; the process entry point of each service.

    ``rules`` is the service's permission table (``<service>.permissions.RULES``): a method
    it does not name is refused to every caller.
    """
    setup_logging(name, settings.log_level)
    asyncio.run(_serve(name, settings, setup, rules))


#: How long a starting service waits for the key records before it serves anyway (refusing
#: the keys it has not seen yet, rather than never starting while NATS is slow).
KEYS_LOAD_S = 15.0


async def open_access(
    name: str, js: JetStreamContext, settings: ServiceSettings, rules: Mapping[str, Rule]
) -> tuple[Access, asyncio.Task[None]]:
    """This process's :class:`Access`: the key records followed from NATS, its signer and verifier.

    Returns the access and the task that follows the ``keys`` bucket (cancel it to stop).
    """
    book = KeyBook()
    follow = await _followed(js, KEYS_BUCKET, book.follow, book.loaded, "keys are refused until they arrive")
    seed = settings.nats_nkey_seed_file
    return (
        Access(
            book=book,
            rules=rules,
            verifier=ServiceVerifier(settings.service_keys),
            signer=ServiceSigner(name, seed) if seed else None,
        ),
        follow,
    )


async def open_plans(js: JetStreamContext) -> tuple[PlanBook, asyncio.Task[None]]:
    """Every tenant's plan, followed from the ``tenants`` bucket; and the task that follows it.

    A process that starts before the entries arrive applies the default plan (no limits)
    until they do, as it refuses keys it has not seen yet: a start is not held up by NATS.
    """
    plans = PlanBook()
    follow = await _followed(
        js, TENANTS_BUCKET, plans.follow, plans.loaded, "the default plan applies until they arrive"
    )
    return plans, follow


async def _followed(
    js: JetStreamContext,
    bucket: str,
    follow: Callable[[KeyValue], Coroutine[Any, Any, None]],
    loaded: asyncio.Event,
    meanwhile: str,
) -> asyncio.Task[None]:
    """Starts following ``bucket`` and waits (at most :data:`KEYS_LOAD_S`) for its entries to load."""
    task = asyncio.create_task(follow(await js.key_value(bucket)), name=f"{bucket}-watch")
    try:
        await asyncio.wait_for(loaded.wait(), KEYS_LOAD_S)
    except TimeoutError:
        log.warning("the %s bucket was not loaded within %.0f s; %s", bucket, KEYS_LOAD_S, meanwhile)
    return task


async def _serve(name: str, settings: ServiceSettings, setup: Setup, rules: Mapping[str, Rule]) -> None:
    # Read before anything connects: a bad certificate or key stops the service at once.
    credentials = (
        server_credentials(
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_ca_file if settings.tls_require_client_cert else None,
        )
        if settings.tls_cert_file and settings.tls_key_file
        else None
    )
    setup_telemetry(f"lepton-{name}", settings.otlp_endpoint, export_delay_ms=settings.trace_export_delay_ms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    seed_file = settings.nats_nkey_seed_file
    if seed_file:
        nats_identity.check_seed_file(seed_file)
    nc = await connect(
        settings.nats_url,
        f"lepton-{name}",
        seed_file=seed_file,
        inbox=nats_identity.inbox_prefix(name),
        tls_ca_file=settings.tls_ca_file,
    )
    js = nc.jetstream()
    await require_topology(js, nats_identity.streams_of(name))
    access, follow_keys = await open_access(name, js, settings, {**rules, **event_stream.RULES})
    plans, follow_plans = await open_plans(js)
    audit = AuditLog(js, name)
    runtime = Runtime(
        name=name, settings=settings, nc=nc, js=js, objects=ObjectStore(js), access=access, plans=plans, audit=audit
    )
    register = await setup(runtime)
    if name in SERVICES:
        purger = TenantPurger(name, nc, js, runtime.objects, runtime.tenant_steps)
        runtime.consume(EVENTS_STREAM, durable_of(name), {events_pb2.TenantDeleted: purger})
    server = await create_server(
        service=name,
        host=settings.grpc_host,
        port=settings.grpc_port or DEFAULT_PORTS[name],
        access=access,
        # Every service also serves EventService, so the SDK can subscribe at any address.
        register=lambda server: [*register(server), event_stream.register(server, js, name, runtime.consumers)],
        credentials=credentials,
        audit=audit,
    )
    runtime.every("key-use report", SEEN_EVERY_S, lambda: report_seen(nc, name, access.book))
    for consumer in runtime.consumers:
        await consumer.start()
    tasks = [asyncio.create_task(_periodic(*p), name=p[0]) for p in runtime.periodic]
    tasks += [follow_keys, follow_plans]
    log.info(
        "%s serving",
        name,
        extra={"grpc_port": server.port, "nats": settings.nats_url, "tls": bool(settings.tls_cert_file)},
    )
    await stop.wait()
    log.info("%s stopping", name)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Each step is bounded so one stuck step cannot keep the process alive.
    for what, step in (
        ("consumers", asyncio.gather(*(c.stop() for c in runtime.consumers))),
        ("grpc server", server.stop()),
        # Consumers are stopped and every publish awaited its ack: nothing is in flight.
        ("nats close", nc.close()),
    ):
        try:
            await asyncio.wait_for(step, SHUTDOWN_STEP_S)
        except (TimeoutError, Exception) as exc:
            log.warning("shutdown step %s did not finish cleanly: %r", what, exc)
    shutdown_telemetry()
    log.info("%s stopped", name)


async def _periodic(name: str, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("periodic job %s failed", name)
