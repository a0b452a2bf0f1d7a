"""Pytest fixtures that start the real parts: nats-server, Triton, the platform.

Enable with ``pytest_plugins = ["lepton_platform.testing"]`` in a conftest. Set
``LEPTON_TEST_NATS_URL`` to run the NATS tests against an existing server instead, and
``LEPTON_TEST_NATS_SECRETS`` to the directory of its identities' seeds
(``python -m lepton_platform.nats_users init``; the server must use that directory's users.conf).

NATS admits only the platform's identities: tests that talk to NATS themselves connect
as the admin (:func:`admin_connect`); services started here get their own identities.

Test tiers: a test that uses one of :data:`SERVER_FIXTURES` (directly or through another
fixture) is marked ``integration`` at collection, as is every ``e2e`` test; a test that
starts servers some other way says so with ``@pytest.mark.integration``. ``make test-unit``
runs the rest (``-m "not integration"``); ``make test`` runs everything.
"""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from lepton_core import events, nats_identity
from lepton_core.access import KEYS_BUCKET, KeyRecord, ensure_key
from lepton_core.bus import DEADLETTER_ROOT, DEADLETTER_STREAM, EVENTS_ROOT, EVENTS_STREAM, connect, declare_topology
from lepton_core.nats_identity import ADMIN, SERVING
from lepton_core.telemetry import setup_telemetry
from lepton_core.tls import Peer, read_pem
from lepton_platform.embedded import EmbeddedPlatform, grpc_serving
from lepton_platform.nats_users import NatsSecrets, as_admin
from lepton_platform.processes import (
    NatsServer,
    Process,
    TritonServer,
    free_port,
    refuse_processes,
    start_service,
    wait_until,
)
from lepton_platform.signing_keys import ArtifactKeys, ensure_artifact_keys
from lepton_platform.tracesink import TraceSink

SERVER_FIXTURES = frozenset({"nats_url", "nc", "triton", "platform", "service"})
"""The fixtures that start a real nats-server, Triton or service processes."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks ``integration`` every test that needs a server (see the module docstring)."""
    for item in items:
        needs_server = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if needs_server or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """A unit-tier test (not ``integration``) cannot start a process through :mod:`lepton_platform.processes`."""
    if item.get_closest_marker("integration") is None:
        refuse_processes(f"{item.nodeid} is a unit test; mark it @pytest.mark.integration to start servers")
    try:
        return (yield)
    finally:
        refuse_processes(None)


def nats_seed_file(url: str, identity: str = ADMIN) -> Path:
    """The seed file of ``identity`` on the server at ``url`` (one this process started, or the existing one)."""
    server = NatsServer.running.get(url)
    if server is not None:
        return server.seed_file(identity)
    existing = os.environ.get("LEPTON_TEST_NATS_SECRETS")
    if existing and url == os.environ.get("LEPTON_TEST_NATS_URL"):
        return NatsSecrets(Path(existing)).seed_file(identity)
    raise LookupError(f"no identities known for the NATS server at {url}")


async def admin_connect(url: str, name: str) -> NATS:
    """A connection to ``url`` as the admin identity, which may use every subject (tests, operator tools)."""
    return await connect(url, name, seed_file=str(nats_seed_file(url)), inbox=nats_identity.inbox_prefix(ADMIN))


def set_keys(nats_url: str, keys: Mapping[str, str], role: str = "admin") -> list[KeyRecord]:
    """Makes ``{secret: tenant}`` keys of ``role`` on the server at ``nats_url``; returns their records.

    A test's key is often a short word ("key-a"): a record of the same secret left by another
    test is brought to this tenant and role (and made active again), so tests never share a key.
    """

    async def job(js: JetStreamContext) -> list[KeyRecord]:
        kv = await js.key_value(KEYS_BUCKET)
        out = []
        for secret, tenant in keys.items():
            record = await ensure_key(kv, secret, tenant=tenant, role=role, name=f"test key of {tenant}")
            if (record.tenant, record.role, record.revoked, record.expires) != (tenant, role, None, None):
                record = record.model_copy(update={"tenant": tenant, "role": role, "revoked": None, "expires": None})
                await kv.put(record.id, record.model_dump_json().encode())
            out.append(record)
        return out

    return as_admin(nats_url, nats_seed_file(nats_url), job)


def service_keys(nats_url: str) -> str:
    """The ``service_keys`` setting for services started on ``nats_url``."""
    server = NatsServer.running.get(nats_url)
    if server is not None:
        return server.secrets.service_keys()
    return NatsSecrets(Path(os.environ["LEPTON_TEST_NATS_SECRETS"])).service_keys()


@functools.cache
def artifact_keys() -> ArtifactKeys:
    """This test process's artifact signing key pair: services started here and the ``triton``
    fixture's models trust it, the trainer signs with it, and tests that plant artifacts sign with
    ``artifact_keys().signer()``. (The ``platform`` fixture makes its own, in its workdir.)"""
    return ensure_artifact_keys(Path(tempfile.mkdtemp(prefix="lepton-test-keys-")))


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real JetStream-enabled nats-server for the whole session (identities required)."""
    existing = os.environ.get("LEPTON_TEST_NATS_URL")
    if existing:
        yield existing
        return
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    """An admin connection to the session's server with the platform topology declared."""
    conn = await admin_connect(nats_url, f"test-{uuid.uuid4().hex[:6]}")
    await declare_topology(conn.jetstream())
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[TritonServer]:
    """The real Triton server from nvidia-pytriton, CPU-only, for the whole session.

    Its models log predictions to the session's NATS as the ``serving`` identity.
    """
    server = TritonServer(
        tmp_path_factory.mktemp("triton"),
        nats_url=nats_url,
        nats_seed_file=nats_seed_file(nats_url, SERVING),
        artifact_public_key_file=artifact_keys().public_key_file,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def trace_sink() -> Iterator[TraceSink]:
    """An OTLP receiver; this process's spans and the services' spans land in it."""
    sink = TraceSink()
    setup_telemetry("lepton-tests", sink.endpoint, export_delay_ms=100)
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory, trace_sink: TraceSink) -> Iterator[EmbeddedPlatform]:
    """The whole platform (NATS, Triton, six services, the gateway and the console as processes) for the session.

    Besides ``api_key`` (tenant ``default``) it accepts a key of tenant ``intruder``, for
    tenant-isolation tests, and one of tenant ``fuzzer``, so the security fuzz's objects stay
    out of every other test's view: ``platform.key_for(tenant)``.
    """
    workdir: Path = tmp_path_factory.mktemp("platform")
    p = EmbeddedPlatform(
        workdir,
        api_key=secrets.token_urlsafe(16),
        otlp_endpoint=trace_sink.endpoint,
        extra_api_keys={secrets.token_urlsafe(16): "intruder", secrets.token_urlsafe(16): "fuzzer"},
        # The monitor checks often, so drift and retraining tests take seconds, not minutes.
        settings={"monitor": {"evaluation_interval_s": "2"}, "deployer": {"reconcile_interval_s": "2"}},
        console=True,
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


class StartService:
    """Starts single services as subprocesses against the session's NATS.

    ``service("data", {"key": "tenant"}, max_rows="10")`` returns the gRPC address once
    the service answers health checks; extra keywords become its settings.
    ``service.process(address)`` is the process behind an address (to kill it).
    A service given ``tls_cert_file``/``tls_key_file`` is awaited over TLS, trusting its
    ``tls_ca_file`` (else the certificate itself); the address is ``host:port`` either way.
    """

    def __init__(self, nats_url: str, logs: Path) -> None:
        self._nats_url = nats_url
        self._logs = logs
        self.started: dict[str, Process] = {}

    def __call__(self, name: str, api_keys: Mapping[str, str], **settings: str) -> str:
        address = f"127.0.0.1:{free_port()}"
        set_keys(self._nats_url, api_keys)
        values = {
            "nats_url": self._nats_url,
            "nats_nkey_seed_file": str(nats_seed_file(self._nats_url, name)),
            "grpc_port": address.rsplit(":", 1)[1],
            "service_keys": service_keys(self._nats_url),
            **artifact_keys().settings(name),
            **settings,
        }
        process = start_service(name, values, self._logs)
        self.started[address] = process
        probe = Peer(address)
        if "tls_cert_file" in settings:
            trust = settings.get("tls_ca_file") or settings["tls_cert_file"]
            probe = Peer(address, tls=True, root_certificates=read_pem(trust, "tls_ca_file"))
        wait_until(lambda: grpc_serving(probe), 60, f"service {name}", process.proc)
        return address

    def process(self, address: str) -> Process:
        return self.started[address]

    def stop_all(self) -> None:
        for process in self.started.values():
            process.terminate()
        for process in self.started.values():
            process.stop()


@pytest.fixture(scope="module")
def service(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartService]:
    """Single services as subprocesses on the session's NATS, stopped at the end of the module."""
    launcher = StartService(nats_url, tmp_path_factory.mktemp("service-logs"))
    try:
        yield launcher
    finally:
        launcher.stop_all()


async def stored_events(
    platform: EmbeddedPlatform, kind: str, match: Callable[[Any], bool] = lambda _: True
) -> list[events.Event[Any]]:
    """Every ``kind`` event (``monitor.drift.detected``) of the platform's tenant on the EVENTS stream so far
    whose payload ``match``es, oldest first."""
    nc = await admin_connect(platform.nats_url, "test-stored-events")
    found: list[events.Event[Any]] = []
    try:
        subject = f"{EVENTS_ROOT}.{platform.tenant}.{kind}"
        sub = await nc.jetstream().subscribe(subject, stream=EVENTS_STREAM, ordered_consumer=True)
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                return found
            event = events.decode(msg)
            if match(event.data):
                found.append(event)
    finally:
        await nc.close()


async def find_event(
    nats_url: str, subject: str, match: Callable[[Any], bool], timeout: float = 10.0
) -> events.Event[Any]:
    """The first event on ``subject`` (stream EVENTS, from its start) whose payload ``match``es.

    Tests share one platform, so a subject may already hold other tests' events.
    """
    nc = await admin_connect(nats_url, "test-find-event")
    try:
        sub = await nc.jetstream().subscribe(subject, stream=EVENTS_STREAM, ordered_consumer=True)
        while True:
            event = events.decode(await sub.next_msg(timeout=timeout))
            if match(event.data):
                return event
    finally:
        await nc.close()


def lepton_cli(platform: EmbeddedPlatform, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs the ``lepton`` command of this venv against ``platform`` (its URL and key)."""
    env = {**os.environ, "LEPTON_URL": platform.url, "LEPTON_API_KEY": platform.api_key}
    if platform.ca_file:
        env["LEPTON_TLS_CA_FILE"] = str(platform.ca_file)
    cli = Path(sys.executable).parent / "lepton"
    return subprocess.run([str(cli), *args], capture_output=True, text=True, env=env, timeout=timeout)


async def expect_dead_lettered(js: JetStreamContext, consumer: str, sent: dict[str, str], timeout: float = 30) -> None:
    """Waits until every event in ``sent`` (event id -> field at fault) reached ``consumer``'s dead letters.

    Each must carry the ``Lepton-Error`` header ``InvalidArgument: <field>: ...``; fails naming
    those that did not arrive within ``timeout`` seconds.
    """
    left = dict(sent)
    sub = await js.subscribe(f"{DEADLETTER_ROOT}.{consumer}.*", stream=DEADLETTER_STREAM, ordered_consumer=True)
    deadline = time.monotonic() + timeout
    try:
        while left and time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                continue
            field = left.pop((msg.headers or {}).get("ce-id", ""), None)
            if field is not None:
                assert (msg.headers or {})["Lepton-Error"].startswith(f"InvalidArgument: {field}: ")
    finally:
        await sub.unsubscribe()
    assert not left, f"not dead-lettered: {left}"
