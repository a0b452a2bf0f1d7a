"""Deploy targets come from the operator's host pool (issue 16, item 6), played as an attacker.

``DeployRequest.hosts`` once took addresses: any API key could make the deployer connect to an
address of its choosing and send it the model (and the serving model's bus address). Now a
request names pool entries, and anything else is refused before a connection is made:

- an address, even the one a socket of this test listens on, is INVALID_ARGUMENT on ``hosts[i]``,
  and the socket sees no connection;
- another tenant's private entry gets exactly the answer an unknown name gets;
- deployment and model names holding ``--``, ``.``, ``*`` or ``>`` (Triton model name and NATS
  subject separators) are refused, naming the field;
- a deployer whose API keys map a key to a tenant that is not a name does not start, and says
  which setting, never the key.

The legitimate path stays open: a deployment on the ``default`` entry, named, serves predictions
(two real Tritons and a second named entry: ``services/deployer/tests/test_deployer.py``).
"""

from __future__ import annotations

import functools
import json
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_ai import deployments as la_deployments
from lepton_ai._transport import ride_out
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import start_service
from lepton_platform.testing import StartService

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

#: How long a refused Deploy is given to (wrongly) connect anyway, in a background rollout.
CONNECT_GRACE_S = 2.0


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on loopback: where an attacker points the deployer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock
    finally:
        sock.close()


def _no_connection(sock: socket.socket, within: float = CONNECT_GRACE_S) -> None:
    """Fails if anything connects to ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        conn, peer = sock.accept()
    except TimeoutError:
        return
    conn.close()
    raise AssertionError(f"the deployer connected to the attacker's address (from {peer})")


def _refused(call: Callable[[], object]) -> la.InvalidArgument:
    with pytest.raises(la.InvalidArgument) as err:
        call()
    return err.value


def test_a_deploy_naming_an_address_is_refused_and_the_address_sees_no_connection(
    platform: EmbeddedPlatform, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    assert platform.triton is not None
    with la.Client(platform.api_key, url=platform.url) as client:
        for i, hosts in enumerate(
            (
                [f"127.0.0.1:{port}"],
                [f"localhost:{port}"],
                ["default", f"127.0.0.1:{port}"],
                [platform.triton.url],  # the platform's own Triton, by address: no more than any other
            )
        ):
            name = f"ssrf-{i}"
            err = _refused(partial(client.deployments.deploy, name, "any-model", 1, hosts=hosts, wait=False))
            field = f"hosts[{len(hosts) - 1}]"
            assert (err.code, err.field) == ("INVALID_ARGUMENT", field), err.message
            said = err.message.removeprefix(f"{field}: ")
            assert said.startswith("expected the name of a host in the deployer's pool, one of ['default']"), said
            assert client.deployments.get_or_none(name) is None  # nothing stored
        _no_connection(listener)


def test_names_that_would_split_a_triton_model_or_a_subject_are_refused(platform: EmbeddedPlatform) -> None:
    with la.Client(platform.api_key, url=platform.url) as client:
        for bad in ("a--b", "a.b", "a*", "a>", "x.>", "b--next"):
            for call, field in (
                (lambda b=bad: client.deployments.deploy(b, "m", 1, wait=False), "name"),
                (lambda b=bad: client.deployments.deploy("d", b, 1, wait=False), "model_name"),
                (lambda b=bad: client.deployments.get(b), "name"),
                (lambda b=bad: client.deployments.rollback(b), "name"),
                (lambda b=bad: client.models.get(b), "name"),
            ):
                err = _refused(call)
                assert err.field == field and "without '--'" in err.message, (bad, err.message)
        assert client.deployments.get_or_none("d") is None


def test_a_legitimate_deploy_on_the_default_entry_still_serves(
    platform: EmbeddedPlatform, pipeline: PipelineResult
) -> None:
    rows = pl.from_pandas(load_diabetes(as_frame=True, scaled=False).frame).drop("target").head(5)
    version = pipeline.model_version
    with la.Client(platform.api_key, url=platform.url) as client:
        d = client.deployments.deploy("pool-default", version.model_name, version.version, hosts=["default"])
        assert list(d.hosts) == ["default"] and [h.url for h in d.host_states] == ["default"]
        assert np.isfinite(client.deployments.predict("pool-default", rows)).all()
        listed = {x.name: list(x.hosts) for x in client.deployments.list()}
        assert listed["pool-default"] == ["default"]
        client.deployments.delete("pool-default")


def test_another_tenant_s_private_entry_is_refused_as_an_unknown_name(
    service: StartService, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployer whose pool has an entry private to ``acme`` (at the test's socket): ``evil``
    naming it is told what it is told of a name that does not exist, and nothing connects."""
    # acme's call gets UNAVAILABLE (no registry): its first answer is enough, not the SDK's minute of retries.
    monkeypatch.setattr(la_deployments, "ride_out", functools.partial(ride_out, limit=1.0))
    acme_key, evil_key = "key-" + secrets.token_hex(8), "key-" + secrets.token_hex(8)
    private = f"127.0.0.1:{listener.getsockname()[1]}"
    address = service(
        "deployer",
        {acme_key: "acme", evil_key: "evil"},
        triton_url="127.0.0.1:9",
        registry_url="127.0.0.1:9",
        auto_deploy="false",
        hosts=json.dumps({"acme-gpu": {"url": private, "tenants": ["acme"]}, "shared": {"url": "127.0.0.1:9"}}),
    )
    with la.Client(evil_key, url=address, endpoints={"deployer": address}) as evil:
        private_err = _refused(lambda: evil.deployments.deploy("d", "m", 1, hosts=["acme-gpu"], wait=False))
        unknown_err = _refused(lambda: evil.deployments.deploy("d", "m", 1, hosts=["no-such"], wait=False))
    assert private_err.field == unknown_err.field == "hosts[0]"
    assert private_err.message.replace("'acme-gpu'", "'no-such'") == unknown_err.message
    assert "['default', 'shared']" in unknown_err.message and private not in unknown_err.message
    # acme may name it: the request gets past the hosts (to the registry, which is not there).
    with la.Client(acme_key, url=address, endpoints={"deployer": address}) as acme:
        with pytest.raises(la.LeptonError) as err:
            acme.deployments.deploy("d", "m", 1, hosts=["acme-gpu"], wait=False)
        assert err.value.field != "hosts[0]" and err.value.code != "INVALID_ARGUMENT", err.value.message
    _no_connection(listener)


def test_keys_in_the_environment_stop_the_service_at_start_naming_the_setting_never_the_key(tmp_path: Path) -> None:
    """Keys are records (docs/security.md): a process given keys the old way refuses to run with them."""
    key = "secret-" + secrets.token_hex(16)
    process = start_service(
        "deployer", {"nats_url": "nats://127.0.0.1:9", "api_keys": json.dumps({key: "acme"})}, tmp_path
    )
    try:
        try:
            code = process.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the deployer started with keys in its environment") from None
        assert code != 0
    finally:
        process.stop()
    log = (tmp_path / "deployer.log").read_text()
    assert "LEPTON_DEPLOYER_API_KEYS: API keys are no longer configured per process" in log, log[-2000:]
    assert key not in log
