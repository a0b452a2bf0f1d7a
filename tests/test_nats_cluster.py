"""deploy/nats runs: the three nodes from the shipped files, with a test CA, form a TLS cluster.

The files are used as an operator would (certificates in the TLS folder, ``users.conf`` from
``python -m lepton_platform.nats_users init``), with only addresses, ports and folders moved to
this machine. The cluster then takes the platform's topology with three replicas; an event
published on one node is read on another; a client without TLS or without credentials, and a
would-be node whose route certificate the route CA did not sign, get nowhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.errors import Error as NatsError

from lepton_core.bus import EVENTS_STREAM, connect
from lepton_core.nats_identity import ADMIN, inbox_prefix
from lepton_core.tls import TlsFiles, write_self_signed
from lepton_platform import nats_users
from lepton_platform.processes import STORE_KEY_ENV, Process, free_ports, nats_server_binary, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Cluster:
    urls: list[str]
    admin_seed: Path
    client_tls: TlsFiles
    workdir: Path
    monitoring: list[int]
    route_ports: list[int]


def _keyed() -> dict[str, str]:
    """nats-server's environment with a store key: the shipped configs encrypt the store with it."""
    return {**os.environ, STORE_KEY_ENV: nats_users.new_store_key()}


def _install(src: TlsFiles, tls: Path, cert: str, key: str, ca: str) -> None:
    for path, name in ((src.cert_file, cert), (src.key_file, key), (src.ca_file, ca)):
        (tls / name).write_bytes(path.read_bytes())
        (tls / name).chmod(0o600)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("nats-cluster")
    tls = tmp / "tls"
    tls.mkdir()
    client_tls = write_self_signed(tmp / "client-ca")
    _install(client_tls, tls, "server.pem", "server.key", "ca.pem")
    _install(write_self_signed(tmp / "route-ca", client_auth=True), tls, "route.pem", "route.key", "route-ca.pem")
    assert nats_users.main(["init", "--dir", str(tmp / "secrets")]) == 0
    (tmp / "users.conf").write_bytes((tmp / "secrets" / "users.conf").read_bytes())
    nine = free_ports(9)  # all different: a port just released can come back at once
    ports = [tuple(nine[i : i + 3]) for i in (0, 3, 6)]  # client, monitoring, route
    processes: list[Process] = []
    try:
        for node in (1, 2, 3):
            client, http, route = ports[node - 1]
            text = (ROOT / "deploy" / "nats" / f"node-{node}.conf").read_text()
            text = text.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
            text = text.replace("http: 127.0.0.1:8222", f"http: 127.0.0.1:{http}")
            text = text.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{route}")
            text = re.sub(r"lepton-nats-(\d):6222", lambda m: f"127.0.0.1:{ports[int(m[1]) - 1][2]}", text)
            text = text.replace("/etc/nats/tls/", f"{tls}/").replace("/data/jetstream", str(tmp / f"js-{node}"))
            conf = tmp / f"node-{node}.conf"
            conf.write_text(text)
            processes.append(
                Process(f"nats-{node}", [nats_server_binary(), "-c", str(conf)], tmp / f"node-{node}.log", env=_keyed())
            )
        urls = [f"tls://127.0.0.1:{client}" for client, _, _ in ports]
        admin = tmp / "secrets" / f"{ADMIN}.nk"
        # The cluster is up once JetStream has a meta leader: declaring the topology then succeeds.
        wait_until(
            lambda: nats_users.declare(",".join(urls), admin, replicas=3, tls_ca_file=client_tls.ca_file) is None,
            60,
            "the three-node cluster",
        )
        yield Cluster(urls, admin, client_tls, tmp, [h for _, h, _ in ports], [r for _, _, r in ports])
    finally:
        for process in processes:
            process.stop()


async def test_an_event_published_on_one_node_is_read_on_another_with_three_replicas(cluster: Cluster) -> None:
    async def admin_on(url: str) -> nats.NATS:
        return await connect(
            url,
            "test-cluster",
            seed_file=str(cluster.admin_seed),
            inbox=inbox_prefix(ADMIN),
            tls_ca_file=str(cluster.client_tls.ca_file),
        )

    first, second = await admin_on(cluster.urls[0]), await admin_on(cluster.urls[2])
    try:
        info = await second.jetstream().stream_info(EVENTS_STREAM)
        assert info.config.num_replicas == 3
        ack = await first.jetstream().publish("lepton.evt.acme.dataset.created", b"x", headers={"ce-id": "c1"})
        msg = await second.jetstream().get_msg(EVENTS_STREAM, ack.seq)
        assert msg.data == b"x"
    finally:
        await first.close()
        await second.close()


async def test_clients_need_tls_and_credentials(cluster: Cluster) -> None:
    trusted = ssl.create_default_context(cafile=str(cluster.client_tls.ca_file))
    with pytest.raises(NatsError, match=r"(?i)authorization violation"):
        await nats.connect(cluster.urls[0], tls=trusted, allow_reconnect=False, connect_timeout=3)
    plain = cluster.urls[0].replace("tls://", "nats://")
    with pytest.raises(Exception):  # noqa: B017 - the server demands TLS; nats-py refuses in more than one way
        await asyncio.wait_for(nats.connect(plain, allow_reconnect=False, connect_timeout=3), 10)


def _routes(monitoring_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitoring_port}/routez", timeout=2) as resp:
        return int(json.load(resp)["num_routes"])


def test_a_node_without_a_route_certificate_of_the_route_ca_cannot_join(cluster: Cluster) -> None:
    rogue = cluster.workdir / "rogue"
    tls = rogue / "tls"
    tls.mkdir(parents=True)
    # TLS for clients and routes alike, but its route certificate comes from a CA of its own.
    _install(write_self_signed(rogue / "client-ca"), tls, "server.pem", "server.key", "ca.pem")
    _install(write_self_signed(rogue / "route-ca", client_auth=True), tls, "route.pem", "route.key", "route-ca.pem")
    (rogue / "users.conf").write_bytes((cluster.workdir / "users.conf").read_bytes())
    text = (ROOT / "deploy" / "nats" / "node-1.conf").read_text().replace("lepton-nats-1", "lepton-nats-rogue", 1)
    client, http, route = free_ports(3, but=tuple(cluster.route_ports))
    text = text.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
    text = text.replace("http: 127.0.0.1:8222", f"http: 127.0.0.1:{http}")
    text = text.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{route}")
    text = re.sub(r"lepton-nats-(\d):6222", lambda m: f"127.0.0.1:{cluster.route_ports[int(m[1]) - 1]}", text)
    text = text.replace("/etc/nats/tls/", f"{tls}/").replace("/data/jetstream", str(rogue / "js"))
    (rogue / "node.conf").write_text(text)
    before = [_routes(port) for port in cluster.monitoring]
    process = Process(
        "nats-rogue", [nats_server_binary(), "-c", str(rogue / "node.conf")], rogue / "node.log", env=_keyed()
    )
    try:
        # It dials all three and fails each TLS handshake (the nodes log it); none takes it as a route.
        wait_until(lambda: rogue.joinpath("node.log").read_text().count("TLS route handshake error") >= 3, 30, "rogue")
        assert [_routes(port) for port in cluster.monitoring] == before and min(before) > 0
    finally:
        process.stop()
