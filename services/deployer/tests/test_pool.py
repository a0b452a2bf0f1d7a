"""The operator's host pool: a Deploy names pool entries, never addresses, and the deployer connects
to the pool's addresses alone.

On the in-memory hosts and store of ``test_rollout_unit.py``: its pool holds ``default`` and
``b`` (shared) and ``other-gpu`` (open to tenant ``other`` alone). The same refusal over real
gRPC, with a socket that must see no connection, is in ``tests/security/test_deploy_targets.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from lepton_core.errors import InvalidArgument
from lepton_core.names import shown
from lepton_core.triton_pool import DEFAULT_HOST, NOT_IN_POOL, HostPool, PoolEntry, is_address
from lepton_deployer.api import deployment_to_pb
from lepton_deployer.core import Deployer
from lepton_deployer.records import DeploymentRecord, DeploymentState, HostState
from lepton_deployer.settings import DeployerSettings

from .test_rollout_unit import CONFIG, MODEL, NAME, POOL, PRIVATE, STABLE, TENANT, A, B, Rig

pytestmark = pytest.mark.timeout(60)

A_URL, B_URL = POOL.entries[A].url, POOL.entries[B].url


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    assert rig.triton.opened == rig.triton.closed, "a host connection was left open"


def refusal(value: str) -> str:
    """What tenant ``t`` is told of any host it may not name: the names it may use, and its own value."""
    return (
        f"expected the name of a host in the deployer's pool, one of {[B, A]} "
        f"(hosts are named by the operator, never given as addresses); got {shown(value)}"
    )


async def _serving(rig: Rig, deployer: Deployer, **kwargs: object) -> DeploymentRecord:
    await rig.version(1)
    record = await deployer.deploy(TENANT, NAME, MODEL, 1, config=CONFIG, wait=True, **kwargs)  # type: ignore[arg-type]
    assert record.state == DeploymentState.READY, record.error
    return record


# A Deploy names entries.


@pytest.mark.parametrize(
    "host",
    [
        A_URL,  # the default entry's own address
        "127.0.0.1:9",
        "[::1]:8001",
        "grpc://triton-a:8001",
        "169.254.169.254:80",
        "",
        "no-such-host",
        "DEFAULT",
        "default.>",
        PRIVATE,  # another tenant's entry: the answer an unknown name gets
    ],
)
async def test_a_host_that_is_not_an_entry_open_to_the_tenant_is_refused_before_any_connection(
    rig: Rig, host: str
) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    for hosts, field in (([host], "hosts[0]"), ([A, host], "hosts[1]")):
        with pytest.raises(InvalidArgument) as err:
            await deployer.deploy(TENANT, NAME, MODEL, 1, hosts=hosts, config=CONFIG)
        assert (err.value.field, err.value.message) == (field, refusal(host))
        # Never an address of the pool, never another tenant's entry.
        assert "triton-" not in err.value.message.replace(shown(host), "")
        assert PRIVATE not in err.value.message.replace(shown(host), "")
    assert rig.connected == [] and rig.store.writes == [] and rig.events == []


async def test_deployments_go_to_the_default_entry_or_the_entries_they_name(rig: Rig) -> None:
    deployer = rig.deployer()
    record = await _serving(rig, deployer)
    assert record.hosts == [DEFAULT_HOST] and rig.connected and set(rig.connected) == {A_URL}
    pb = deployment_to_pb(record, POOL)
    assert list(pb.hosts) == [A] and [h.url for h in pb.host_states] == [A] and pb.triton_url == ""

    record = await deployer.deploy(TENANT, NAME, MODEL, 1, hosts=[A, B], wait=True)
    assert record.hosts == [A, B] and rig.triton.serving(B) == {STABLE: [1]}
    assert set(rig.connected) == {A_URL, B_URL}
    assert list(deployment_to_pb(record, POOL).hosts) == [A, B]


async def test_a_tenant_deploys_on_its_private_entry() -> None:
    rig = Rig(pool=HostPool({**POOL.entries, "t-gpu": PoolEntry(url="triton-t:8001", tenants=[TENANT])}))
    deployer = rig.deployer()
    record = await _serving(rig, deployer, hosts=["t-gpu"])
    assert record.hosts == ["t-gpu"] and rig.triton.serving("t-gpu") == {STABLE: [1]}
    assert set(rig.connected) == {"triton-t:8001"}


async def test_a_change_of_an_entry_s_address_is_followed(rig: Rig) -> None:
    await _serving(rig, rig.deployer(), hosts=[B])
    rig.pool = HostPool({**POOL.entries, B: PoolEntry(url="triton-b2:8001")})
    rig.triton.models[B].clear()  # the new machine starts empty
    rig.connected.clear()

    assert await rig.deployer().reconcile() == [f"{NAME} v1 on {B}"]
    assert set(rig.connected) == {"triton-b2:8001"} and rig.triton.serving(B) == {STABLE: [1]}


# Records written before hosts had names.


async def _old_record(rig: Rig, deployer: Deployer, address: str) -> None:
    """The deployment as a deployer before host names left it: addresses in ``hosts`` and ``host_states``."""
    record = await _serving(rig, deployer)
    old = record.model_copy(
        update={"hosts": [address], "triton_url": address, "host_states": [HostState(url=address, ready=True)]}
    )
    await rig.store.put(f"{TENANT}.{NAME}", old)
    rig.connected.clear()


async def test_an_old_record_s_address_of_an_open_entry_becomes_its_name(rig: Rig) -> None:
    deployer = rig.deployer()
    await _old_record(rig, deployer, A_URL)
    old = await deployer.get(TENANT, NAME)
    pb = deployment_to_pb(old, POOL)
    assert list(pb.hosts) == [A] and [h.url for h in pb.host_states] == [A] and pb.triton_url == ""

    assert await deployer.reconcile() == []  # still served there: nothing to repair
    record = await deployer.get(TENANT, NAME)
    assert record.hosts == [A] and [h.url for h in record.host_states] == [A]
    assert set(rig.connected) == {A_URL}


@pytest.mark.parametrize("address", ["10.9.9.9:8001", POOL.entries[PRIVATE].url])
async def test_an_old_record_s_other_address_is_never_reached_again(rig: Rig, address: str) -> None:
    deployer = rig.deployer()
    await _old_record(rig, deployer, address)
    pb = deployment_to_pb(await deployer.get(TENANT, NAME), POOL)
    assert list(pb.hosts) == [NOT_IN_POOL] and [h.url for h in pb.host_states] == [NOT_IN_POOL]
    assert pb.triton_url == ""

    assert await deployer.reconcile() == []
    (state,) = (await deployer.get(TENANT, NAME)).host_states
    assert (state.url, state.ready) == (NOT_IN_POOL, False) and "not in the deployer's host pool" in state.error
    assert address not in state.error

    await rig.version(2)
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, wait=True)
    assert record.model_version == 1 and "not in the deployer's host pool" in record.history[-1].reason
    assert rig.connected == []
    # Deployed again naming a pool entry, it serves there.
    record = await deployer.deploy(TENANT, NAME, MODEL, 2, hosts=[B], wait=True)
    assert (record.model_version, record.hosts) == (2, [B]), record.error


# The pool itself.


def test_names_and_address_lookups_follow_the_tenants() -> None:
    assert POOL.names(TENANT) == [B, A] and POOL.names("other") == [B, A, PRIVATE]
    assert POOL.check("other", [PRIVATE, A]) == [PRIVATE, A]
    assert POOL.name_of(TENANT, PRIVATE) is None and POOL.name_of("other", PRIVATE) == PRIVATE
    assert POOL.name_of(TENANT, A_URL) == A and POOL.name_of(TENANT, POOL.entries[PRIVATE].url) is None
    with pytest.raises(InvalidArgument) as err:
        POOL.check(TENANT, [A, B, A])
    assert err.value.field == "hosts[2]" and "hosts[0] already" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        POOL.check(TENANT, [A] * 17)
    assert err.value.field == "hosts" and "at most 16" in err.value.message


@pytest.mark.parametrize(
    "url",
    [
        "",
        "triton",
        "triton:",
        ":8001",
        "triton:0",
        "triton:65536",
        "triton:+80",
        "triton:8001 ",
        "grpc://triton:8001",
        "grpcs://triton:8001",
        "tri_ton:8001",
        "-triton:8001",
        "triton-.lan:8001",
        "triton..lan:8001",
        "999.1.1.1:8001",
        "1.2.3:8001",
        "[::g]:8001",
        "::1:8001",
        "trïton:8001",
        "a" * 64 + ".lan:8001",
        "a/b:8001",
        "user@triton:8001",
    ],
)
def test_an_entry_s_url_is_a_triton_grpc_address(url: str) -> None:
    assert not is_address(url)
    with pytest.raises(ValidationError, match="expected a Triton gRPC address"):
        PoolEntry(url=url)


@pytest.mark.parametrize(
    "url", ["triton:8001", "triton-b.gpu.internal:1", "127.0.0.1:65535", "[::1]:8001", "[fe80::1]:8001", "TRITON:80"]
)
def test_addresses_triton_takes_are_accepted(url: str) -> None:
    assert PoolEntry(url=url).url == url


def test_the_settings_make_the_pool_with_triton_url_as_its_default_entry() -> None:
    settings = DeployerSettings(
        triton_url="127.0.0.1:8001",
        hosts={"gpu-a": {"url": "10.0.0.5:8001"}, "acme-gpu": {"url": "10.0.0.9:8001", "tenants": ["acme"]}},
    )
    pool = settings.pool()
    assert pool.names("acme") == ["acme-gpu", DEFAULT_HOST, "gpu-a"] and pool.names("t") == [DEFAULT_HOST, "gpu-a"]
    assert pool.address("t", DEFAULT_HOST) == "127.0.0.1:8001"
    assert DeployerSettings().pool().names("t") == [DEFAULT_HOST]  # no hosts set: triton_url alone


@pytest.mark.parametrize(
    ("triton_url", "hosts", "said"),
    [
        ("127.0.0.1:8001", {"default": {"url": "10.0.0.5:8001"}}, "'default' is the entry of triton_url"),
        ("127.0.0.1:8001", {"gpu.a": {"url": "10.0.0.5:8001"}}, "host names are names"),
        ("127.0.0.1:8001", {"a--b": {"url": "10.0.0.5:8001"}}, "host names are names"),
        ("127.0.0.1:8001", {"gpu": {"url": "http://10.0.0.5:8001"}}, "expected a Triton gRPC address"),
        ("127.0.0.1:8001", {"gpu": {"url": "10.0.0.5:8001", "tenants": []}}, "list at least one tenant"),
        ("127.0.0.1:8001", {"gpu": {"url": "10.0.0.5:8001", "tenants": ["a.*"]}}, "expected tenant names"),
        ("127.0.0.1:8001", {"gpu": {"url": "10.0.0.5:8001", "port": 1}}, "Extra inputs are not permitted"),
        ("http://127.0.0.1:8001", {}, "expected a Triton gRPC address"),
    ],
)
def test_a_bad_pool_stops_the_deployer_at_start(triton_url: str, hosts: dict[str, object], said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        DeployerSettings(triton_url=triton_url, hosts=hosts)
