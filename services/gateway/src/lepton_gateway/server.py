"""The gateway process: NATS (the deployer's records, the key records), the gRPC and REST servers, until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from lepton_core import nats_identity
from lepton_core.access import KeyBook
from lepton_core.access_service import SEEN_EVERY_S, SEEN_SUBJECT
from lepton_core.audit import AuditLog
from lepton_core.bus import connect, require_topology
from lepton_core.service import open_access, open_plans
from lepton_core.tls import server_credentials
from lepton_core.triton_access import read_secret_file
from lepton_core.usage import USAGE_BUCKET
from lepton_gateway.access import SECRET_HEADER, Gate
from lepton_gateway.allowance import Allowances
from lepton_gateway.forwarding import Forwarder
from lepton_gateway.front import FrontState, NginxFront, keep_pushed
from lepton_gateway.grpc_api import KServeGrpc
from lepton_gateway.limits import RateLimits
from lepton_gateway.permissions import RULES
from lepton_gateway.rest import RestServer
from lepton_gateway.routes import BUCKET, RouteTable, follow
from lepton_gateway.settings import GatewaySettings
from lepton_gateway.upstream import INFERENCE_SERVICE, MESSAGE_LIMIT, Upstream

log = logging.getLogger("lepton_gateway")

#: The gateway's gRPC port when its settings name none: after the six services' 50051-50056.
DEFAULT_PORT = 50057
#: Its name: its NATS identity, its logs.
NAME = "gateway"
#: Longest wait for the deployer's records at start-up before serving anyway.
LOAD_TIMEOUT_S = 30.0
SHUTDOWN_STEP_S = 10.0


async def _connect(settings: GatewaySettings) -> tuple[NATS, JetStreamContext]:
    """NATS as the ``gateway`` identity: it reads the deployer's records and the key records, writes
    its audit records and its reports of the keys it saw used, nothing else."""
    seed_file = settings.nats_nkey_seed_file
    if seed_file:
        nats_identity.check_seed_file(seed_file)
    nc = await connect(settings.nats_url, "lepton-gateway", seed_file=seed_file, inbox=nats_identity.inbox_prefix(NAME))
    js = nc.jetstream()
    await require_topology(js, nats_identity.streams_of(NAME))
    return nc, js


async def _report_seen(nc: NATS, book: KeyBook, front: NginxFront | None) -> None:
    """Every :data:`SEEN_EVERY_S`, tells the registry which keys were used here: the gateway process's
    and nginx's (whose fast path the process never sees), until cancelled."""
    while True:
        await asyncio.sleep(SEEN_EVERY_S)
        try:
            seen = book.take_seen()
            if front is not None:
                for key_id, when in (await front.take_seen()).items():
                    seen[key_id] = max(when, seen.get(key_id, 0.0))
            if seen:
                await nc.publish(f"{SEEN_SUBJECT}.{NAME}", json.dumps(seen).encode())
        except Exception:
            log.exception("reporting the keys used failed; next time they are reported with the others")


async def serve(settings: GatewaySettings) -> None:
    """Runs the gateway until SIGTERM/SIGINT."""
    credentials = (
        server_credentials(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_cert_file and settings.tls_key_file
        else None
    )
    secret = read_secret_file(settings.inference_secret_file) if settings.inference_secret_file else None
    if secret is None:
        log.warning("no inference_secret_file: Lepton models will refuse every request sent through this gateway")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    nc, js = await _connect(settings)
    pool = settings.pool()
    changed = asyncio.Event()
    routes = RouteTable(pool, on_change=changed.set)
    loaded = asyncio.Event()
    watch = asyncio.create_task(follow(await js.key_value(BUCKET), routes, loaded), name="deployments-watch")
    # The key records, followed as every service follows them (waits, bounded, for them to load).
    access, follow_keys = await open_access(NAME, js, settings, RULES)
    book = access.book
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loaded.wait(), LOAD_TIMEOUT_S)

    # The plans' prediction limits: each tenant's rate, and the month's count the registry meters.
    plans, follow_plans = await open_plans(js)
    allowances = Allowances(plans)
    follow_usage = asyncio.create_task(allowances.follow_usage(await js.key_value(USAGE_BUCKET)), name="usage-watch")
    limits = RateLimits(settings.rate_per_s, settings.rate_burst, settings.tenant_rates, plan_rate=allowances.plan_rate)
    # Behind nginx, nginx takes every call's token from one bucket per tenant (rate.lua, infer.lua).
    gate = Gate(book, RateLimits(0.0) if settings.front == "nginx" else limits, AuditLog(js, NAME), allowances)
    upstream = Upstream(secret, SECRET_HEADER)
    forwarder = Forwarder(routes, gate, upstream, settings.triton_url)
    kserve = KServeGrpc(forwarder, settings.forward_timeout_s)
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", MESSAGE_LIMIT), ("grpc.max_send_message_length", MESSAGE_LIMIT)]
    )
    server.add_generic_rpc_handlers((kserve.handler(),))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    public_port = settings.grpc_port or DEFAULT_PORT
    front: NginxFront | None = None
    pushing: asyncio.Task[None] | None = None
    if settings.front == "nginx":
        # nginx takes the public port and answers ModelInfer; this process serves the rest behind it.
        cert, key = settings.tls_cert_file, settings.tls_key_file
        tls = (cert, key) if cert and key else None
        front = NginxFront(
            settings.grpc_host,
            public_port,
            pool,
            tls,
            settings.front_workers,
            settings.forward_timeout_s,
            settings.http_host,
            settings.http_port,
        )
        server.add_insecure_port(front.backend)
        port = public_port
    else:
        address = f"{settings.grpc_host}:{public_port}"
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    rest: RestServer | None = None
    if settings.http_port:
        behind = str(front.rest_backend) if front is not None else None
        rest = RestServer(forwarder, settings.http_host, settings.http_port, settings.forward_timeout_s, behind)
        await rest.start()
    if front is not None:  # last: what it passes calls on to is listening
        await front.start()
        state = FrontState(book, secret, limits, routes, pool, allowances)
        changed.clear()
        await front.push(state.render())
        pushing = asyncio.create_task(keep_pushed(front, state, changed), name="front-push")
    reporting = asyncio.create_task(_report_seen(nc, book, front), name="key-use report")
    for name in ("", INFERENCE_SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "gateway serving",
        extra={
            "grpc_port": port,
            "http_port": settings.http_port,
            "deployments": len(routes),
            "keys": len(book.records()),
            "triton": settings.triton_url,
            "front": settings.front,
        },
    )
    await stop.wait()
    log.info("gateway stopping")
    await health.enter_graceful_shutdown()
    steps = [("grpc server", server.stop(5.0)), ("triton channels", upstream.close())]
    if rest is not None:
        steps.insert(1, ("rest server", rest.stop()))
    background = [
        watch,
        follow_keys,
        follow_plans,
        follow_usage,
        reporting,
        *([pushing] if pushing is not None else []),
    ]
    for task in background:
        task.cancel()
    if front is not None:
        steps.insert(0, ("nginx front", front.stop()))
    for what, step in steps:
        try:
            await asyncio.wait_for(step, SHUTDOWN_STEP_S)
        except (TimeoutError, Exception) as exc:
            log.warning("shutdown step %s did not finish cleanly: %r", what, exc)
    for task in background:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), SHUTDOWN_STEP_S)
    log.info("gateway stopped")
