"""The gateway's compiled front: nginx answers gRPC ``ModelInfer`` itself, the gateway process the rest.

A Python gRPC hop costs about 640 µs of CPU a request (a ``grpc.aio`` server plus a
``grpc.aio`` client call; docs/benchmarks.md, runs 27-28), more than the model it fronts. So
the gateway runs nginx (Debian's ``nginx-light`` with ``libnginx-mod-http-lua``) on its public
gRPC port:

- ``ModelInfer`` is answered in nginx by ``infer.lua``: the key's tenant (the SHA-256 of the
  key it is sent, computed in Lua with OpenSSL's ``SHA256``, looked up among the digests of the
  key records), the tenant's rate, the deployment's route, the request readdressed to the
  tenant's Triton model, the gateway's secret added and the key removed; then ``grpc_pass`` to
  the Triton host, and ``response.lua`` readdresses the answer to the deployment's name (``status.lua``
  turns Triton's NOT_FOUND for the routed model, a host that lost it, into UNAVAILABLE). What
  nginx does not admit itself (no key; a key unknown to it, revoked, expired, or whose role
  cannot predict; a key that predicts by a per-deployment grant) goes on to the gateway
  process, whose answer is the refusal or the prediction it gives when it serves alone.
- Every other call (metadata, config, readiness, health, the refused ones) goes on to the
  gateway process, which listens on a Unix socket in a directory only its user can open; so
  does the REST API, which nginx serves on the REST port (over TLS with the gateway's
  certificate). ``rate.lua`` takes each of these calls' token first: one bucket a tenant for
  gRPC and REST, and none taken again behind nginx.

nginx's configuration holds no secret: the gateway pushes the keys' digests, routes, rates and
the inference secret over another Unix socket in that directory (:class:`FrontState`,
``admin.lua``) at start, after each change of the deployer's records and after each change of
the key records (a revoked key is refused within :data:`KEYS_POLL_S` and a push). A key's
expiry is checked by nginx itself at each call. nginx counts the keys it admitted, and the
gateway collects them (:meth:`NginxFront.take_seen`) for the registry's ``last_used``. The
gateway starts nginx and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import math
import os
import pwd
import re
import shutil
import signal
import tempfile
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import aiohttp

from lepton_core.access import KeyBook, KeyRecord, principal_of
from lepton_core.children import die_with_parent
from lepton_core.errors import FailedPrecondition
from lepton_core.triton_pool import HostPool
from lepton_gateway.access import may_somewhere
from lepton_gateway.allowance import Allowances
from lepton_gateway.limits import RateLimits
from lepton_gateway.permissions import RULES, full_name
from lepton_gateway.routes import RouteTable

log = logging.getLogger(__name__)

#: Debian's nginx (package nginx), and the modules the fast path needs (libnginx-mod-http-lua and -ndk).
NGINX = Path("/usr/sbin/nginx")
MODULES = (
    Path("/usr/lib/nginx/modules/ndk_http_module.so"),
    Path("/usr/lib/nginx/modules/ngx_http_lua_module.so"),
)
INSTALL_HINT = "apt-get install nginx libnginx-mod-http-lua (make setup does), or set LEPTON_GATEWAY_FRONT=none"
#: The largest request body, as the gateway's own gRPC server takes (lepton_gateway.upstream.MESSAGE_LIMIT).
BODY_LIMIT_MB = 64
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
#: Characters that would break a record of the push (lines of tab-separated fields).
_SEPARATORS = frozenset("\t\n\r\x1f")
#: How often the gateway looks whether the key records changed since its last push.
KEYS_POLL_S = 0.25
_DIGEST = re.compile(r"[0-9a-f]{64}")


def lua_dir() -> Path:
    """The folder of ``infer.lua``, ``response.lua``, ``status.lua``, ``admin.lua`` and ``lepton/state.lua``."""
    return Path(str(resources.files("lepton_gateway") / "front"))


def upstream_names(pool: HostPool) -> dict[str, str]:
    """nginx's upstream group for each pool entry: ``triton_<n>``, in the order of the entries' names."""
    return {name: f"triton_{i}" for i, name in enumerate(sorted(pool.entries))}


#: Upstream connections kept open for good: nginx's default closes one after 1,000 requests.
KEEPALIVE = "keepalive 64; keepalive_requests 1000000; keepalive_timeout 300s;"


def process_config(directory: Path, workers: int = 1) -> str:
    """The top of an nginx.conf that runs in ``directory`` in the foreground, and the start of its ``http``.

    Its pid file and temporary files go in ``directory``. Started by root, nginx would run its
    workers as another user, who cannot open that folder: here they run as this process's user.
    """
    d = directory
    me = f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"
    user = f"user {me};\n" if os.geteuid() == 0 else ""
    temp = "".join(f"  {k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}worker_processes {workers};
pid {d}/nginx.pid;
error_log stderr warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server_tokens off;
{temp}"""


class FrontState:
    """What nginx must know to answer ``ModelInfer``: rendered as the lines ``admin.lua`` reads.

    A key is there only as the SHA-256 digest its record holds (the gateway knows no secret):
    ``key <digest> <tenant> <key id> <end> <scope>``, one for each key active now that may predict
    (:func:`lepton_gateway.access.may_somewhere`). ``end`` is when it stops being active (its
    expiry or a revocation set ahead, in whole unix seconds, rounded down so that nginx never
    admits a key past it; 0: never); ``scope`` is ``all`` when its role predicts on every
    deployment, ``granted`` when only grants let it (nginx takes the tenant's rate, the gateway
    process checks the deployment). A key that cannot predict is not sent: nginx hands its calls
    to the gateway process, which refuses them.
    """

    def __init__(
        self,
        book: KeyBook,
        secret: str | None,
        limits: RateLimits,
        routes: RouteTable,
        pool: HostPool,
        allowances: Allowances | None = None,
    ) -> None:
        self._book = book
        self._secret = secret
        self._limits = limits
        self._routes = routes
        self._upstreams = upstream_names(pool)
        self._allowances = allowances
        self._generation: int | None = None
        self._pushed_limits: list[str] = []

    @property
    def stale(self) -> bool:
        """Whether the key records, or a tenant's rate or month, changed since the last :meth:`render`."""
        return self._book.generation != self._generation or self._limit_lines() != self._pushed_limits

    def _limit_lines(self) -> list[str]:
        """The rates (the lower of the configured one and the plan's) and the tenants past their month."""
        tenants = set(self._limits.per_tenant)
        blocked: dict[str, str] = {}
        if self._allowances is not None:
            tenants.update(self._allowances.plans.tenants())
            blocked = self._allowances.blocked()
        lines = [f"rate\t{self._limits.default_rate!r}\t{self._limits.burst!r}"]
        lines += [f"tenantrate\t{t}\t{self._limits.rate_of(t)!r}" for t in sorted(tenants) if _clean(t)]
        lines += [f"blocked\t{t}\t{why}" for t, why in blocked.items() if _clean(t) and _clean(why)]
        return lines

    def render(self) -> bytes:
        self._generation = self._book.generation
        self._pushed_limits = self._limit_lines()
        lines = []
        if self._secret:
            lines.append(f"secret\t{self._secret}")
        lines += self._pushed_limits
        now = datetime.now(UTC)
        lines += [line for record in self._book.records() if (line := _key_line(record, now))]
        for served, hosts in self._routes.snapshot():
            key = f"{served.tenant}/{served.name}"
            fields = [key, served.state, *(f for m, v, _ in served.routes for f in (m, v))]
            if not all(_clean(f) for f in fields):
                log.warning("deployment %r not pushed to nginx: its record holds a separator", key)
                continue
            routes = [f"{m}\x1f{v}\x1f{w!r}" for m, v, w in served.routes]
            upstreams = ",".join(self._upstreams[h] for h in hosts)
            lines.append(f"route\t{key}\t" + "\t".join([served.state, upstreams, *routes]))
        return ("\n".join(lines) + "\n").encode()


_INFER_RULE = RULES[full_name("ModelInfer")]


def _key_line(record: KeyRecord, now: datetime) -> str:
    """The ``key`` line of ``record``, or ``""`` for a key nginx need not know (see :class:`FrontState`)."""
    if record.state(now) != "active":
        return ""
    principal = principal_of(record)
    if not may_somewhere(principal, _INFER_RULE):
        return ""
    if not (_DIGEST.fullmatch(record.digest) and _clean(record.tenant) and _clean(record.id)):
        log.warning("key %r not pushed to nginx: its record holds a separator or a malformed digest", record.id)
        return ""
    ends = [t for t in (record.expires, record.revoked) if t is not None]
    end = math.floor(min(ends).timestamp()) if ends else 0
    scope = "all" if principal.allows(_INFER_RULE.permission) else "granted"
    return f"key\t{record.digest}\t{record.tenant}\t{record.id}\t{end}\t{scope}"


def _clean(text: str) -> bool:
    return not _SEPARATORS.intersection(text)


class NginxFront:
    """nginx on the gateway's public gRPC address; see the module docstring.

    Args:
        host, port: The public gRPC address.
        pool: The Triton hosts: one upstream group each.
        tls: Certificate and key files, to serve TLS (gRPC and REST); None: plaintext.
        workers: nginx worker processes.
        timeout_s: Longest wait for Triton's answer.
        http_host, http_port: The public REST address (0: no REST API), passed on to the gateway
            process after the tenant's rate is taken.
    """

    def __init__(
        self,
        host: str,
        port: int,
        pool: HostPool,
        tls: tuple[str, str] | None = None,
        workers: int = 1,
        timeout_s: float = 60.0,
        http_host: str = "127.0.0.1",
        http_port: int = 0,
    ) -> None:
        for path in (NGINX, *MODULES):
            if not path.exists():
                raise FailedPrecondition(f"the gateway's nginx front needs {path}: {INSTALL_HINT}")
        self.directory = Path(tempfile.mkdtemp(prefix="lepton-gw-"))  # mode 0700: only this user opens the sockets
        self.host, self.port, self.pool, self.tls = host, port, pool, tls
        self.workers, self.timeout_s = workers, timeout_s
        self.http_host, self.http_port = http_host, http_port
        self.process: asyncio.subprocess.Process | None = None

    @property
    def backend(self) -> str:
        """Where the gateway process's gRPC server listens, behind nginx (``unix:<path>``)."""
        return f"unix:{self.directory / 'gateway.sock'}"

    @property
    def rest_backend(self) -> Path:
        """Where the gateway process's REST API listens, behind nginx (a Unix socket)."""
        return self.directory / "rest.sock"

    @property
    def admin_socket(self) -> Path:
        return self.directory / "admin.sock"

    def config(self) -> str:
        """nginx.conf: no secret in it (they come by :meth:`push`)."""
        d, lua = self.directory, lua_dir()
        upstreams = "".join(
            f"  upstream {group} {{ server {self.pool.entries[name].url}; {KEEPALIVE} }}\n"
            for name, group in upstream_names(self.pool).items()
        )
        ssl = " ssl" if self.tls else ""
        listen = f"listen {self.host}:{self.port} http2{ssl};"
        tls = f"    ssl_certificate {self.tls[0]};\n    ssl_certificate_key {self.tls[1]};\n" if self.tls else ""
        t = f"{self.timeout_s:g}s"
        return f"""# Written by lepton_gateway.front; holds no secret.
load_module {MODULES[0]};
load_module {MODULES[1]};
{process_config(d, self.workers)}  lua_package_path "{lua}/?.lua;;";
  lua_shared_dict lepton 32m;
  lua_shared_dict lepton_buckets 8m;
  lua_shared_dict lepton_seen 1m;
{upstreams}  upstream gateway {{ server unix:{d}/gateway.sock; {KEEPALIVE} }}
  server {{
    {listen}
{tls}    keepalive_requests 1000000;
    client_max_body_size {BODY_LIMIT_MB}m;
    client_body_buffer_size 1m;
    grpc_read_timeout {t};
    grpc_send_timeout {t};
    location = /inference.GRPCInferenceService/ModelInfer {{
      set $lepton_upstream "";
      access_by_lua_file {lua}/infer.lua;
      header_filter_by_lua_file {lua}/status.lua;
      body_filter_by_lua_file {lua}/response.lua;
      grpc_pass grpc://$lepton_upstream;
    }}
    location / {{
      set $lepton_protocol grpc;
      access_by_lua_file {lua}/rate.lua;
      grpc_pass grpc://gateway;
    }}
    location @gateway {{
      grpc_pass grpc://gateway;
    }}
  }}
{self._rest_server(tls, t)}
  server {{
    listen unix:{self.admin_socket};
    location = /state {{
      client_max_body_size 32m;
      client_body_buffer_size 32m;
      content_by_lua_file {lua}/admin.lua;
    }}
    location = /seen {{
      content_by_lua_file {lua}/admin.lua;
    }}
  }}
}}
"""

    def _rest_server(self, tls: str, timeout: str) -> str:
        """The REST API's server block: the tenant's rate, then the gateway process's REST API."""
        if not self.http_port:
            return ""
        ssl = " ssl" if self.tls else ""
        lua = lua_dir()
        return f"""  upstream gateway_rest {{ server unix:{self.rest_backend}; {KEEPALIVE} }}
  server {{
    listen {self.http_host}:{self.http_port}{ssl};
{tls}    keepalive_requests 1000000;
    client_max_body_size {BODY_LIMIT_MB}m;
    location / {{
      set $lepton_protocol rest;
      access_by_lua_file {lua}/rate.lua;
      proxy_pass http://gateway_rest;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout {timeout};
      proxy_send_timeout {timeout};
    }}
  }}
"""

    async def start(self) -> None:
        """Starts nginx; FailedPrecondition (with its words) when it does not come up."""
        conf = self.directory / "nginx.conf"
        conf.write_text(self.config())
        self.process = await asyncio.create_subprocess_exec(
            # SIGTERM, nginx's fast shutdown, when the gateway dies: nothing behind nginx answers then.
            *die_with_parent("TERM"),
            str(NGINX),
            "-p",
            str(self.directory),
            "-c",
            str(conf),
        )
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        # Until nginx accepts on its admin socket: the file appears at bind(), a moment before listen(), and
        # a connection in between is refused (seen on a loaded machine, where the first push then failed).
        while not await self._admin_accepts():
            if self.process.returncode is not None:
                raise FailedPrecondition(f"nginx exited with {self.process.returncode}; its words are in this log")
            if asyncio.get_running_loop().time() > deadline:
                raise FailedPrecondition(f"nginx did not open {self.admin_socket} in {START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.02)

    async def _admin_accepts(self) -> bool:
        try:
            _, writer = await asyncio.open_unix_connection(str(self.admin_socket))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        return True

    async def push(self, state: bytes) -> None:
        """Hands nginx a whole new state (``admin.lua``); RuntimeError when it refuses it."""
        connector = aiohttp.UnixConnector(path=str(self.admin_socket))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post("http://front/state", data=state) as answer,
        ):
            text = await answer.text()
            if answer.status != 200:
                raise RuntimeError(f"nginx refused the state ({answer.status}): {text.strip()}")

    async def take_seen(self) -> dict[str, float]:
        """Key id to the last time nginx admitted it, since the last call (then nginx forgets them)."""
        connector = aiohttp.UnixConnector(path=str(self.admin_socket))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://front/seen") as answer,
        ):
            text = await answer.text()
            if answer.status != 200:
                raise RuntimeError(f"nginx did not say which keys it saw ({answer.status}): {text.strip()}")
        seen: dict[str, float] = {}
        for line in text.splitlines():
            key_id, _, when = line.partition("\t")
            with contextlib.suppress(ValueError):
                seen[key_id] = max(float(when), seen.get(key_id, 0.0))
        return seen

    async def stop(self) -> None:
        """Stops nginx (gracefully: in-flight requests finish), then removes its folder."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGQUIT)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


async def keep_pushed(
    front: NginxFront, state: FrontState, changed: asyncio.Event, retry_s: float = 1.0, poll_s: float = KEYS_POLL_S
) -> None:
    """Pushes ``state`` each time ``changed`` is set (the deployer's records changed) or the key records
    changed (:attr:`FrontState.stale`, looked at every ``poll_s``), until cancelled."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), poll_s)
        if not (changed.is_set() or state.stale):
            continue
        changed.clear()
        try:
            await front.push(state.render())
        except Exception:
            log.exception("pushing the state to nginx failed; trying again")
            changed.set()
            await asyncio.sleep(retry_s)


__all__ = ["FrontState", "NginxFront", "keep_pushed"]
