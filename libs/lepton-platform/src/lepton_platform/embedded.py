"""The whole platform on one machine: NATS, Triton and the six services.

``make up`` runs :func:`main`; ``make demo`` and the end-to-end tests use
:class:`EmbeddedPlatform` directly, so all three start the platform the same way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import ssl
import sys
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from grpc_health.v1 import health_pb2, health_pb2_grpc

from lepton_core.nats_identity import ADMIN, SERVING, write_private
from lepton_core.tls import Peer, certificate_pair, read_pem, write_self_signed
from lepton_platform.nats_users import BootstrapKey, NatsSecrets, write_keys
from lepton_platform.processes import (
    GATEWAY,
    PORT_ORDER,
    SYNC_INTERVAL,
    NatsCluster,
    NatsServer,
    Process,
    StoreDamaged,
    TritonServer,
    free_port,
    free_port_block,
    start_service,
    wait_until,
)
from lepton_platform.signing_keys import ArtifactKeys, ensure_artifact_keys


def grpc_serving(address: str | Peer) -> bool:
    """Whether the gRPC server at ``address`` answers grpc.health.v1 with SERVING.

    A :class:`Peer` with TLS (or a ``grpcs://`` address) checks over TLS.
    """
    peer = address if isinstance(address, Peer) else Peer.parse(address)
    with peer.channel() as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


class EmbeddedPlatform:
    """Starts and stops every process of the platform; a context manager.

    Args:
        workdir: Where logs, the JetStream store and Triton's files go.
        api_key: The key clients use: an operator key of ``tenant``, whose record is made at
            the first start (the platform keeps only its digest).
        tenant: The tenant of ``api_key``.
        otlp_endpoint: Where services send spans (none: spans are not exported).
        services: Which services to start (all six and the inference gateway by default).
        triton: Whether to start the embedded Triton server.
        base_port: The data service's port; the others follow in PORT_ORDER (the six services,
            then the gateway's gRPC port, then its REST port: the layout the SDK's ``LEPTON_URL``
            assumes). None picks a free block.
        extra_api_keys: More keys, each an admin of its tenant (e.g. a second tenant in tests).
        settings: Extra settings per service (``{"monitor": {"evaluation_interval_s": "2"}}``).
        mutual_tls: ``tls``, and the six services require a client certificate from the same CA
            (``tls_require_client_cert``): each presents its own to the others, clients present
            :attr:`client_certificate`.
        tls: Serve every service over TLS with a certificate for 127.0.0.1 and localhost
            from a fresh CA written to ``workdir/tls`` (clients trust :attr:`ca_file`);
            services call each other over TLS against the same CA.
        encrypt_store: Encrypt the JetStream store at rest (the default). Off only for tests
            that search the store's files for a value, to show it there or show it gone.
        console: Start the web console too (``python -m lepton_console``) on a free loopback port:
            :attr:`console_url`. It holds no key; people sign in with theirs.
        nats_sync_interval: How often nats-server fsyncs the JetStream store (``always``, the default:
            each write before its ack; ``None``: nats-server's own default, every 2 minutes). See
            :data:`~lepton_platform.processes.SYNC_INTERVAL` and docs/operations.md.
        nats_max_file_store: The most the JetStream store may hold on disk (``"64MB"``); None: JetStream's
            default. A small one stands in for a full disk in the fault tests.
        nats_nodes: 1: one nats-server (the embedded default). 3 (or any odd number): a JetStream
            cluster of that many nodes on loopback, every stream replicated on all (:class:`NatsCluster`,
            :attr:`nats_cluster`); the services and Triton's served models list every node.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        api_key: str,
        tenant: str = "default",
        otlp_endpoint: str | None = None,
        services: Sequence[str] = PORT_ORDER,
        triton: bool = True,
        base_port: int | None = None,
        extra_api_keys: Mapping[str, str] | None = None,
        settings: Mapping[str, Mapping[str, str]] | None = None,
        tls: bool = False,
        mutual_tls: bool = False,
        encrypt_store: bool = True,
        console: bool = False,
        nats_sync_interval: str | None = SYNC_INTERVAL,
        nats_max_file_store: str | None = None,
        nats_nodes: int = 1,
    ) -> None:
        if nats_nodes < 1 or nats_nodes % 2 == 0:
            raise ValueError(f"nats_nodes: {nats_nodes}; expected 1 or an odd number (a majority must survive a loss)")
        self.workdir = workdir
        self.api_key = api_key
        self.tenant = tenant
        self.otlp_endpoint = otlp_endpoint
        self.service_names = tuple(services)
        self.want_triton = triton
        self.base_port = base_port
        self.extra_api_keys = dict(extra_api_keys or {})
        self.settings = {name: dict(values) for name, values in (settings or {}).items()}
        self.tls = tls or mutual_tls
        self.mutual_tls = mutual_tls
        self.encrypt_store = encrypt_store
        self.nats_sync_interval = nats_sync_interval
        self.nats_max_file_store = nats_max_file_store
        self.nats_nodes = nats_nodes
        self.want_console = console
        self.console_port: int | None = None
        self.client_certificate: tuple[Path, Path] | None = None
        """With ``mutual_tls``, the (certificate, key) files clients present: the platform's own
        certificate, which is good for both sides (a client of a deployment of your own gets one
        from the CA its services trust)."""
        self.ca_file: Path | None = None
        """The CA clients trust when ``tls`` is on (``LEPTON_TLS_CA_FILE``); None otherwise."""
        self.nats: NatsServer | NatsCluster | None = None
        self.nats_secrets: NatsSecrets | None = None
        """The NATS identities' seeds (``workdir/secrets/nats``), made at the first start, reused after."""
        self.artifact_keys: ArtifactKeys | None = None
        """The artifact signing key pair (``workdir/secrets``), made at the first start, reused after."""
        self.triton: TritonServer | None = None
        self.processes: dict[str, Process] = {}
        #: Each service's settings, kept so :meth:`restart` starts it as it was started.
        self._values: dict[str, dict[str, str]] = {}
        self.addresses: dict[str, str] = {}

    @property
    def nats_url(self) -> str:
        assert self.nats is not None, "platform not started"
        return self.nats.url

    @property
    def nats_cluster(self) -> NatsCluster:
        """The NATS cluster (``nats_nodes`` > 1): its nodes to kill and restart."""
        assert isinstance(self.nats, NatsCluster), "the platform runs one nats-server, not a cluster"
        return self.nats

    @property
    def nats_pids(self) -> list[int]:
        """The running nats-server processes' pids: the one, or each live node's of a cluster."""
        assert self.nats is not None, "platform not started"
        servers = self.nats.nodes if isinstance(self.nats, NatsCluster) else [self.nats]
        return [server.process.pid for server in servers if server.process.alive()]

    @property
    def nats_admin_seed(self) -> Path:
        """The admin identity's seed file: for operator tools and tests that talk to NATS themselves."""
        assert self.nats_secrets is not None, "platform not started"
        return self.nats_secrets.seed_file(ADMIN)

    def event_credentials(self, tenant: str) -> Path:
        """New subscribe-only NATS credentials for ``tenant``'s events (``lepton.evt.<tenant>.>``); the seed file.

        The server accepts them at once (its users file is rewritten and reloaded). Each call
        issues another key (``workdir/secrets/nats/integrators/``); the platform records only
        its public key (``python -m lepton_platform.nats_users revoke`` removes it).
        """
        assert self.nats is not None and self.nats_secrets is not None, "platform not started"
        out = self.nats_secrets.directory / "integrators" / f"{tenant}-{secrets.token_hex(4)}.nk"
        self.nats_secrets.issue(tenant, out)
        self.nats.reload()
        return out

    @property
    def url(self) -> str:
        """What the SDK's ``LEPTON_URL`` should be: the data service's address (``grpcs://`` with TLS)."""
        return f"{'grpcs://' if self.tls else ''}127.0.0.1:{self.base_port}"

    @property
    def gateway_url(self) -> str:
        """The inference gateway's gRPC address (KServe V2; ``tritonclient.grpc`` with ``authorization: Bearer``)."""
        return self.addresses[GATEWAY]

    @property
    def gateway_http_url(self) -> str:
        """The inference gateway's KServe V2 REST API (``http://127.0.0.1:<port>``)."""
        assert self.base_port is not None, "platform not started"
        return f"http://127.0.0.1:{self.base_port + len(PORT_ORDER)}"

    @property
    def console_url(self) -> str:
        """The web console's address (``http://127.0.0.1:<port>``; ``https://`` with ``mutual_tls``)."""
        assert self.console_port is not None, "console not started"
        return f"{'https' if self.mutual_tls else 'http'}://127.0.0.1:{self.console_port}"

    @property
    def triton_url(self) -> str:
        assert self.triton is not None, "Triton not started"
        return self.triton.url

    def key_for(self, tenant: str) -> str:
        """The extra API key of ``tenant`` (see ``extra_api_keys``)."""
        return next(key for key, owner in self.extra_api_keys.items() if owner == tenant)

    def start(self) -> EmbeddedPlatform:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "secrets").mkdir(mode=0o700, exist_ok=True)
        self.nats_secrets = NatsSecrets(self.workdir / "secrets" / "nats")
        self.nats = self._nats_server()
        self.artifact_keys = ensure_artifact_keys(self.workdir / "secrets")
        if self.want_triton:
            # The deployer's and the monitor's Triton secrets (docs/security.md), made at the first start.
            self.triton = TritonServer(
                self.workdir / "triton",
                secrets_dir=self.workdir / "secrets",
                # The served models log predictions as the ``serving`` identity (Triton's environment).
                nats_url=self.nats.url,
                nats_seed_file=self.nats_secrets.seed_file(SERVING),
                artifact_public_key_file=self.artifact_keys.public_key_file,
            )
        write_keys(
            self.nats.url,
            self.nats_secrets.seed_file(ADMIN),
            [
                BootstrapKey(self.api_key, self.tenant, role="operator"),
                *(BootstrapKey(key, tenant, name=f"{tenant} admin") for key, tenant in self.extra_api_keys.items()),
            ],
        )
        service_keys = self.nats_secrets.service_keys()
        # One more port after the gateway's gRPC port: its REST API.
        base = self.base_port = self.base_port or free_port_block(len(PORT_ORDER) + 1)
        ports = {name: base + PORT_ORDER.index(name) for name in self.service_names}
        self.addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        tls_values: dict[str, str] = {}
        if self.tls:
            files = write_self_signed(self.workdir / "tls", client_auth=self.mutual_tls)
            self.ca_file = files.ca_file
            tls_values = {
                "tls_cert_file": str(files.cert_file),
                "tls_key_file": str(files.key_file),
                "tls_ca_file": str(files.ca_file),
            }
            if self.mutual_tls:
                self.client_certificate = (files.cert_file, files.key_file)
        for name in self.service_names:
            values = {
                "nats_url": self.nats.url,
                "nats_nkey_seed_file": str(self.nats_secrets.seed_file(name)),
                "grpc_port": str(ports[name]),
                "service_keys": service_keys,
                "trace_export_delay_ms": "200",
                **tls_values,
                **({"tls_require_client_cert": "true"} if self.mutual_tls and name != GATEWAY else {}),
            }
            if self.otlp_endpoint:
                values["otlp_endpoint"] = self.otlp_endpoint
            if name in ("trainer", "registry", "evaluator"):
                values["data_url"] = self.addresses.get("data", "127.0.0.1:50051")
            if name in ("evaluator", "deployer"):
                values["registry_url"] = self.addresses.get("registry", "127.0.0.1:50054")
            if name == "registry":
                for peer in ("trainer", "evaluator", "deployer"):
                    values[f"{peer}_url"] = self.addresses.get(peer, "")
            if name in ("deployer", "monitor", GATEWAY) and self.triton is not None:
                values["triton_url"] = self.triton.url  # the host pool's 'default' entry, the same for all three
            if name == "deployer" and self.triton is not None:
                values["triton_control_secret_file"] = str(self.triton.control_secret_file)
            if name in ("deployer", "monitor") and self.triton is not None:
                values["triton_statistics_secret_file"] = str(self.triton.statistics_secret_file)
            if name in ("deployer", GATEWAY) and self.triton is not None:
                # What the served models require of inference: the gateway's requests and the smoke tests carry it.
                values["inference_secret_file"] = str(self.triton.inference_secret_file)
            if name == GATEWAY:
                values["http_port"] = str(base + len(PORT_ORDER))
            values.update(self.artifact_keys.settings(name))
            values.update(self.settings.get(name, {}))
            self._values[name] = values
            self.processes[name] = start_service(name, values, self.workdir / "logs")
        for name in self.service_names:
            self._wait_serving(name)
        if self.want_console:
            self._start_console(tls_values)

    def _start_console(self, tls_values: Mapping[str, str]) -> None:
        """The console on a free loopback port, a client of the platform like any other (it trusts the CA;
        with mutual TLS it presents the platform's certificate and serves HTTPS with it)."""
        self.console_port = free_port()
        values = {"host": "127.0.0.1", "port": str(self.console_port), "platform_url": self.url}
        if self.tls:
            values["tls_ca_file"] = tls_values["tls_ca_file"]
        if self.mutual_tls:
            values["tls_cert_file"] = tls_values["tls_cert_file"]
            values["tls_key_file"] = tls_values["tls_key_file"]
        values.update(self.settings.get("console", {}))
        process = self.processes["console"] = start_service("console", values, self.workdir / "logs")
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file is not None else None
        # Straight to loopback, never through a proxy named in the environment.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

        def answers() -> bool:
            with opener.open(f"{self.console_url}/healthz", timeout=1.0) as reply:
                return bool(reply.status == 200)

        try:
            wait_until(answers, 60, "console", process.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- console log ---\n{process.tail()}") from exc

    def _wait_serving(self, name: str, timeout: float = 60.0) -> None:
        """Waits until the service ``name`` answers gRPC health checks; its log's tail if it dies or is late."""
        process = self.processes[name]
        roots = read_pem(self.ca_file, "ca_file") if self.ca_file else None
        pair = certificate_pair(*self.client_certificate) if self.client_certificate is not None else None
        address = Peer(self.addresses[name], tls=self.tls, root_certificates=roots, client_certificate=pair)
        try:
            wait_until(lambda: grpc_serving(address), timeout, f"service {name}", process.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- {name} log ---\n{process.tail()}") from exc

    def kill(self, name: str) -> None:
        """``kill -9`` of a service and everything it started (its process group: a trainer's fit workers
        too), as a crash would leave it; :meth:`restart` starts it again."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.stop(grace=10.0)  # reaps it and closes its log

    def restart(self, name: str) -> None:
        """Starts the service ``name`` again with the settings it first had (after :meth:`kill`, or a stop
        of its own), and waits until it serves."""
        if self.processes[name].alive():
            self.processes[name].stop()
        self.processes[name] = self._launch(name)
        self._wait_serving(name)

    def add_worker(self, name: str) -> str:
        """Starts one more process of the service ``name``, with its settings but a gRPC port of its own,
        and waits until it serves: another ``trainer`` pulls jobs from the same work queue (the shared
        durable ``trainers``), which is how the trainer scales out.

        Returns:
            Its key in :attr:`processes` and :attr:`addresses` (``trainer-2``, ``trainer-3``, ...; its log
            is ``logs/<key>/``), which :meth:`kill` and :meth:`restart` take; :meth:`stop` stops it too.
        """
        key = f"{name}-{sum(1 for k in self.processes if k.partition('-')[0] == name) + 1}"
        self._values[key] = {**self._values[name], "grpc_port": str(free_port())}
        self.addresses[key] = f"127.0.0.1:{self._values[key]['grpc_port']}"
        self.processes[key] = self._launch(key)
        self._wait_serving(key)
        return key

    def _launch(self, key: str) -> Process:
        """Starts the process ``key`` (a service's name, or an extra worker's ``<service>-<n>``)."""
        service, _, extra = key.partition("-")
        logs = self.workdir / "logs"
        return start_service(service, self._values[key], logs / key if extra else logs)

    def kill_nats(self) -> None:
        """``kill -9`` of nats-server, as a crash would leave it: the services, Triton's served models and
        every client lose their connection and reconnect on their own once :meth:`restart_nats` runs."""
        assert isinstance(self.nats, NatsServer), "no single nats-server: a cluster's nodes die one at a time"
        self.nats.kill()

    def restart_nats(self) -> None:
        """Starts nats-server again on the same port, store and secrets (after :meth:`kill_nats`); returns
        once it listens. The topology it declares is there already: the declare changes nothing."""
        assert isinstance(self.nats, NatsServer), "no single nats-server: a cluster restarts a node"
        if self.nats.process.alive():
            self.nats.stop()
        self.nats = self._nats_server(port=self.nats.port)

    def _nats_server(self, port: int | None = None) -> NatsServer | NatsCluster:
        """nats-server on the platform's store, secrets and settings (on ``port``: a restart's); a cluster of
        ``nats_nodes``."""
        if self.nats_nodes > 1:
            return NatsCluster(
                self.workdir / "nats",
                self.nats_nodes,
                secrets=self.nats_secrets,
                encrypt_store=self.encrypt_store,
                sync_interval=self.nats_sync_interval,
                max_file_store=self.nats_max_file_store,
            )
        return NatsServer(
            self.workdir / "nats",
            port=port,
            secrets=self.nats_secrets,
            encrypt_store=self.encrypt_store,
            sync_interval=self.nats_sync_interval,
            max_file_store=self.nats_max_file_store,
        )

    def stop(self) -> None:
        """Stops services first (they drain and flush spans), then Triton, then NATS."""
        for process in self.processes.values():
            process.terminate()  # all at once: each takes about a second to drain
        for process in self.processes.values():
            process.stop()
        self.processes.clear()
        if self.triton is not None:
            self.triton.stop()
            self.triton = None
        if self.nats is not None:
            self.nats.stop()
            self.nats = None

    def kill_triton(self) -> None:
        """``kill -9`` of Triton and its stubs (:meth:`TritonServer.kill`): every model it served is gone.
        :meth:`restart_triton` starts it again."""
        assert self.triton is not None, "Triton not started"
        self.triton.kill()

    def restart_triton(self) -> None:
        """Starts Triton again as a restarted host (:meth:`TritonServer.restarted`): on its gRPC port (the address
        the deployer, the monitor, the gateway and its nginx front hold), and waits until it is live. It comes
        back serving nothing: the deployer's reconcile loop loads the models again."""
        assert self.triton is not None, "Triton not started"
        self.triton = self.triton.restarted()

    def __enter__(self) -> EmbeddedPlatform:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


#: Where ``lepton up`` keeps its state between runs when ``LEPTON_HOME`` names no other folder.
DEFAULT_HOME = ".lepton"


def home_dir() -> Path:
    """``LEPTON_HOME``, else ``~/.lepton``: the folder ``lepton up`` keeps its store, secrets and key in."""
    return Path(os.environ.get("LEPTON_HOME") or Path.home() / DEFAULT_HOME)


def api_key_file(home: Path) -> Path:
    """Where ``lepton up`` keeps its API key: ``home/secrets/api-key``."""
    return home / "secrets" / "api-key"


def stored_api_key(home: Path) -> str:
    """The API key kept in :func:`api_key_file` (0600): made at the first start, read at the next ones."""
    path = api_key_file(home)
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24).encode() + b"\n")
    return path.read_text().strip()


def main() -> None:
    """``make up``: the platform in the foreground until Ctrl-C or SIGTERM (``LEPTON_TLS=1``: over TLS;
    ``LEPTON_NATS_NODES=3``: on a 3-node NATS cluster).

    Its state (the JetStream store, the secrets, the API key) stays in :func:`home_dir`, so the
    next start finds the same datasets, models and key.
    """
    workdir = home_dir()
    key_file = api_key_file(workdir)
    given = os.environ.get("LEPTON_API_KEY")
    new_key = not given and not key_file.exists()
    api_key = given or stored_api_key(workdir)
    base_port = int(os.environ.get("LEPTON_BASE_PORT", "50051")) or None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"starting Lepton in {workdir} ...", flush=True)
    try:
        _serve(workdir, api_key, given, new_key, key_file, base_port, stop)
    except StoreDamaged as exc:  # said as it is, without a traceback: it is the operator's next step
        print(f"lepton: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _serve(
    workdir: Path,
    api_key: str,
    given: str | None,
    new_key: bool,
    key_file: Path,
    base_port: int | None,
    stop: threading.Event,
) -> None:
    with EmbeddedPlatform(
        workdir,
        api_key=api_key,
        otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        base_port=base_port,
        tls=os.environ.get("LEPTON_TLS", "").lower() in ("1", "true", "yes"),
        console=True,
        nats_nodes=int(os.environ.get("LEPTON_NATS_NODES") or 1),
    ) as p:
        print(f"NATS      {p.nats_url}  (nkeys only; the admin's seed: {p.nats_admin_seed})")
        print(f"Triton    {p.triton_url} (private: clients go through the gateway)")
        for name, address in p.addresses.items():
            print(f"{name:<9} {address}")
        if GATEWAY in p.addresses:
            print(f"inference {p.gateway_url} (KServe V2 gRPC) and {p.gateway_http_url} (REST), Bearer API key")
        print(f"console   {p.console_url}  (sign in with an API key)")
        # The key is shown once, when it is made; after that the output names where it is.
        if given:
            print(f"API key   from LEPTON_API_KEY  (tenant {p.tenant}, role operator)")
            key_export = ""
        elif new_key:
            print(f"API key   {api_key}  (tenant {p.tenant}, role operator; shown this once, kept in {key_file})")
            key_export = f" LEPTON_API_KEY={api_key}"
        else:
            print(f"API key   kept in {key_file}  (tenant {p.tenant}, role operator)")
            key_export = f' LEPTON_API_KEY="$(cat {key_file})"'
        ca = f" LEPTON_TLS_CA_FILE={p.ca_file}" if p.ca_file else ""
        print(f"SDK/CLI   export LEPTON_URL={p.url}{key_export}{ca}")
        print("keys      lepton keys create --role editor --name ci  (roles: docs/security.md)")
        print(f"logs      {workdir / 'logs'}\nCtrl-C stops everything.", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        print("stopping ...", file=sys.stderr)


if __name__ == "__main__":
    main()
