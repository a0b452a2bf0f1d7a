"""Every field of a deployer request is checked at the edge, and a refused request changes nothing.

Most tests run the :class:`~lepton_deployer.core.Deployer` on the in-memory hosts and store of
``test_rollout_unit.py``, and the event handlers on hand-made events; the last ones send the
same refusals to a real deployer process over gRPC (no Triton: nothing refused reaches one).
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core import events
from lepton_core.errors import FailedPrecondition, InvalidArgument
from lepton_core.rpc import client_channel
from lepton_core.wire import lineage
from lepton_deployer.api import AliasMovedHandler, VersionCreatedHandler
from lepton_deployer.core import Deployer
from lepton_deployer.records import DeploymentRecord, DeploymentState
from lepton_platform.testing import StartService

from .test_rollout_unit import CONFIG, MODEL, NAME, TENANT, A, B, Rig

pytestmark = pytest.mark.timeout(60)

TEN_KB = "x" * 10_000


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    assert rig.triton.opened == rig.triton.closed, "a host connection was left open"


def _untouched(rig: Rig) -> None:
    """Nothing was stored, published or loaded."""
    assert rig.store.writes == [] and rig.events == [] and rig.triton.loads == []


async def _serving(rig: Rig, deployer: Deployer, **kwargs: Any) -> DeploymentRecord:
    await rig.version(1)
    record = await deployer.deploy(TENANT, NAME, MODEL, 1, config=CONFIG, wait=True, **kwargs)
    assert record.state == DeploymentState.READY, record.error
    return record


async def _rolling_out(rig: Rig, deployer: Deployer, **kwargs: Any) -> DeploymentRecord:
    """Version 2 rolling out (its first load held) over a deployment serving version 1; counters cleared."""
    await _serving(rig, deployer, **kwargs)
    await rig.version(2)
    rig.triton.hold_loads = asyncio.Event()
    rig.triton.load_started.clear()
    first = await deployer.deploy(TENANT, NAME, MODEL, 2)
    await rig.triton.load_started.wait()  # the rollout holds the deployment now
    rig.store.writes.clear()
    rig.events.clear()
    rig.triton.loads.clear()
    return first


async def _finish(rig: Rig, deployer: Deployer) -> None:
    assert rig.triton.hold_loads is not None
    rig.triton.hold_loads.set()
    await asyncio.gather(*deployer.tasks)


# Names.


@pytest.mark.parametrize(
    "name", ["modèle", "\uff46\uff55\uff4c\uff4c", "Fraud", "a.b", "a*", "a>", "-a", "a b", "", "a" * 65, "a\n"]
)
async def test_a_non_ascii_deployment_name_is_invalid_not_internal(rig: Rig, name: str) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    rig.store.writes.clear()
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, name, MODEL, 1, config=CONFIG)
    assert err.value.field == "name" and "a-z, 0-9" in err.value.message
    _untouched(rig)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": "modèle"}, "model_name"),
        ({"tenant": "t.>"}, "tenant"),
        ({"follow": "champion.>"}, "follow"),
        ({"follow": "Champion"}, "follow"),
        ({"follow": "é"}, "follow"),
    ],
)
async def test_every_name_of_a_deploy_is_checked(rig: Rig, kwargs: dict[str, str], field: str) -> None:
    deployer = rig.deployer()
    args = {"tenant": TENANT, "name": NAME, "model": MODEL, "version": 1} | kwargs
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(**args)  # type: ignore[arg-type]
    assert err.value.field == field
    _untouched(rig)


async def test_an_unchecked_follow_is_refused(rig: Rig) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    for follow in ("champion.*", "x" * 65, "../champion", "LATEST"):
        with pytest.raises(InvalidArgument) as err:
            await deployer.deploy(TENANT, NAME, MODEL, 1, follow=follow, config=CONFIG)
        assert err.value.field == "follow" and "alias name" in err.value.message
    _untouched(rig)
    # An alias name, "latest", or empty (follow nothing) are what follow takes.
    record = await deployer.deploy(TENANT, NAME, MODEL, 1, follow="champion", config=CONFIG, wait=True)
    assert record.follow == "champion"
    assert (await deployer.deploy(TENANT, NAME, MODEL, 1, follow="latest")).follow == "latest"
    assert (await deployer.deploy(TENANT, NAME, MODEL, 1, follow="")).follow == ""


async def test_events_with_bad_names_or_versions_are_refused_before_anything_is_stored(rig: Rig) -> None:
    deployer = rig.deployer()
    created = VersionCreatedHandler(deployer, auto_deploy=True)
    moved = AliasMovedHandler(deployer)

    def event(message: Any) -> events.Event[Any]:
        return events.Event(id="e", type="t", source="/test", time="", subject="", data=message, headers={})

    for tenant, model, version, field in [
        (TENANT, "m.>", 1, "lineage.model_name"),
        ("t*", MODEL, 1, "tenant"),
        (TENANT, MODEL, -1, "lineage.model_version"),
        (TENANT, MODEL, 0, "lineage.model_version"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            await created(
                event(
                    events_pb2.ModelVersionCreated(
                        tenant=tenant, lineage=lineage(model_name=model, model_version=version)
                    )
                )
            )
        assert err.value.field == field
    for alias, version, field in [("champion.*", 2, "alias"), ("champion", -1, "lineage.model_version")]:
        with pytest.raises(InvalidArgument) as err:
            await moved(
                event(
                    events_pb2.ModelAliasMoved(
                        tenant=TENANT, lineage=lineage(model_name=MODEL, model_version=version), alias=alias
                    )
                )
            )
        assert err.value.field == field
    assert await rig.versions.values(f"{TENANT}.version.*") == []
    _untouched(rig)


# Versions.


@pytest.mark.parametrize("version", [-1, -(2**63), 0])
async def test_negative_versions_are_refused(rig: Rig, version: int) -> None:
    """The core takes a version number: -1 is not "latest" (only the gRPC edge resolves 0, with the registry)."""
    deployer = rig.deployer()
    await rig.version(1)
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, NAME, MODEL, version, config=CONFIG)
    assert err.value.field == "version" and "a version number from 1" in err.value.message
    _untouched(rig)


# Hosts.


async def test_an_empty_host_is_refused_and_starts_nothing(rig: Rig) -> None:
    """Hosts are names of the operator's pool (``test_pool.py`` has the rest)."""
    deployer = rig.deployer()
    await rig.version(1)
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 1, hosts=[""], config=CONFIG)
    assert err.value.field == "hosts[0]" and "the name of a host in the deployer's pool" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 1, hosts=[A, ""], config=CONFIG)
    assert err.value.field == "hosts[1]"
    _untouched(rig)
    assert rig.triton.opened == 0


async def test_duplicate_hosts_and_too_many_hosts_are_refused(rig: Rig) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 1, hosts=[A, B, A])
    assert err.value.field == "hosts[2]" and "hosts[0] already" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 1, hosts=[f"triton-{i}:8001" for i in range(17)])
    assert err.value.field == "hosts" and "at most 16" in err.value.message
    _untouched(rig)


# Serving configuration, canary and strategy.


async def test_ten_thousand_preferred_batch_sizes_are_refused(rig: Rig) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    config = CONFIG.model_copy(update={"max_batch_size": 4096, "preferred_batch_sizes": list(range(1, 10_001))})
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 1, config=config)
    assert err.value.field == "config.preferred_batch_sizes" and "at most 16 sizes, got 10000" in err.value.message
    _untouched(rig)


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"max_batch_size": 0}, "config.max_batch_size"),
        ({"max_batch_size": 4097}, "config.max_batch_size"),
        ({"preferred_batch_sizes": [4, 2]}, "config.preferred_batch_sizes"),
        ({"preferred_batch_sizes": [4, 4]}, "config.preferred_batch_sizes"),
        ({"preferred_batch_sizes": [0]}, "config.preferred_batch_sizes"),
        ({"preferred_batch_sizes": [9]}, "config.preferred_batch_sizes"),
        ({"max_queue_delay_us": -1}, "config.max_queue_delay_us"),
        ({"max_queue_delay_us": 10**7 + 1}, "config.max_queue_delay_us"),
        ({"instance_count": 0}, "config.instance_count"),
        ({"instance_count": 65}, "config.instance_count"),
        ({"instance_kind": "tpu"}, "config.instance_kind"),
        ({"instance_kind": "CPU"}, "config.instance_kind"),
        ({"log_sample_rate": math.nan}, "config.log_sample_rate"),
        ({"log_sample_rate": 1.5}, "config.log_sample_rate"),
        ({"log_sample_rate": -0.1}, "config.log_sample_rate"),
        ({"log_max_per_s": math.nan}, "config.log_max_per_s"),
        ({"log_max_per_s": math.inf}, "config.log_max_per_s"),
        ({"log_max_per_s": -1.0}, "config.log_max_per_s"),
        ({"log_max_per_s": 1e6 + 1}, "config.log_max_per_s"),
        ({"backend": "tensorrt"}, "config.backend"),
    ],
)
async def test_serving_config_values_out_of_range_are_refused(rig: Rig, update: dict[str, Any], field: str) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 1, config=CONFIG.model_copy(update=update))
    assert err.value.field == field
    _untouched(rig)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"strategy": "yolo"}, "strategy"),
        ({"strategy": "Canary"}, "strategy"),
        ({"canary_weights": [0.5, 0.2]}, "canary_weights"),
        ({"canary_weights": [0.2, 0.2]}, "canary_weights"),
        ({"canary_weights": [0.0]}, "canary_weights"),
        ({"canary_weights": [1.0]}, "canary_weights"),
        ({"canary_weights": [math.nan]}, "canary_weights"),
        ({"canary_weights": [0.1, math.inf]}, "canary_weights"),
        ({"canary_weights": [i / 100 for i in range(1, 12)]}, "canary_weights"),
        ({"canary_step_seconds": math.nan}, "canary_step_seconds"),
        ({"canary_step_seconds": math.inf}, "canary_step_seconds"),
        ({"canary_step_seconds": -1.0}, "canary_step_seconds"),
        ({"canary_step_seconds": 3601.0}, "canary_step_seconds"),
    ],
)
async def test_strategy_and_canary_values_out_of_range_are_refused(
    rig: Rig, kwargs: dict[str, Any], field: str
) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    with pytest.raises(InvalidArgument) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 1, config=CONFIG, **kwargs)
    assert err.value.field == field
    _untouched(rig)


async def test_a_10kb_value_is_cut_in_the_error(rig: Rig) -> None:
    deployer = rig.deployer()
    await rig.version(1)
    for kwargs, field in [
        ({"name": TEN_KB}, "name"),
        ({"model": TEN_KB}, "model_name"),
        ({"follow": TEN_KB}, "follow"),
        ({"hosts": [TEN_KB]}, "hosts[0]"),
        ({"hosts": [TEN_KB + ":8001"]}, "hosts[0]"),
        ({"strategy": TEN_KB}, "strategy"),
        ({"config": CONFIG.model_copy(update={"backend": TEN_KB})}, "config.backend"),
        ({"config": CONFIG.model_copy(update={"instance_kind": TEN_KB})}, "config.instance_kind"),
    ]:
        args: dict[str, Any] = {"tenant": TENANT, "name": NAME, "model": MODEL, "version": 1} | kwargs
        with pytest.raises(InvalidArgument) as err:
            await deployer.deploy(**args)
        assert err.value.field == field
        message = str(err.value)
        assert len(message) < 400 and re.search(r"\.\.\. \(100\d\d characters\)$", message), message
    _untouched(rig)


# The join.


async def test_a_join_with_a_different_strategy_is_refused(rig: Rig) -> None:
    deployer = rig.deployer()
    first = await _rolling_out(rig, deployer)
    with pytest.raises(FailedPrecondition) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 2, strategy="canary")
    assert err.value.field == "strategy"
    assert "rolling out version 2 with strategy 'all_at_once'" in err.value.message, err.value.message
    assert rig.store.writes == [] and rig.events == []
    # The same settings, said or left out, join.
    again = await deployer.deploy(TENANT, NAME, MODEL, 2, strategy="all_at_once", config=first.config)
    assert again.updated_at == first.updated_at
    await _finish(rig, deployer)
    record = await deployer.get(TENANT, NAME)
    assert (record.model_version, record.strategy) == (2, "all_at_once")
    assert [h.to_version for h in record.history] == [1, 2]


async def test_a_join_with_different_hosts_is_refused(rig: Rig) -> None:
    deployer = rig.deployer()
    await _rolling_out(rig, deployer, hosts=[A])
    for hosts in ([A, B], [B]):
        with pytest.raises(FailedPrecondition) as err:
            await deployer.deploy(TENANT, NAME, MODEL, 2, hosts=hosts)
        assert err.value.field == "hosts"
    assert rig.store.writes == [] and rig.events == []
    await deployer.deploy(TENANT, NAME, MODEL, 2, hosts=[A])  # the same hosts: joins
    await _finish(rig, deployer)
    assert rig.triton.serving(B) == {}  # B was never added


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"canary_weights": [0.2]}, "canary_weights"),
        ({"canary_step_seconds": 7.0}, "canary_step_seconds"),
        ({"follow": "champion"}, "follow"),
        ({"config": CONFIG.model_copy(update={"max_batch_size": 4})}, "config.max_batch_size"),
        ({"config": CONFIG.model_copy(update={"log_sample_rate": 0.5})}, "config.log_sample_rate"),
    ],
)
async def test_a_join_with_other_settings_is_refused_naming_the_field(
    rig: Rig, kwargs: dict[str, Any], field: str
) -> None:
    deployer = rig.deployer()
    await _rolling_out(rig, deployer)
    with pytest.raises(FailedPrecondition) as err:
        await deployer.deploy(TENANT, NAME, MODEL, 2, **kwargs)
    assert err.value.field == field
    assert rig.store.writes == [] and rig.events == []
    await _finish(rig, deployer)


# Over real gRPC: the same refusals, with their status codes (no Triton runs: nothing refused reaches one).

KEY = "key-" + uuid.uuid4().hex
GRPC_TENANT = "edge" + uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def address(service: StartService) -> str:
    return service("deployer", {KEY: GRPC_TENANT}, triton_url="127.0.0.1:9", auto_deploy="false")


async def _refused(address: str, method: str, request: Any) -> grpc.aio.AioRpcError:
    async with client_channel(address, KEY) as ch:
        stub = deployer_pb2_grpc.DeploymentServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(stub, method)(request, timeout=10)
    return err.value


@pytest.mark.parametrize(
    ("method", "request_fields", "field"),
    [
        ("Deploy", {"name": "modèle", "model_name": "m", "version": 1}, "name"),
        ("Deploy", {"name": "d", "model_name": "m", "version": -1}, "version"),
        ("Deploy", {"name": "d", "model_name": "m", "version": 1, "hosts": [""]}, "hosts[0]"),
        ("Deploy", {"name": "d", "model_name": "m", "version": 1, "follow": "champion.>"}, "follow"),
        ("Deploy", {"name": "d", "model_name": "m", "alias": "champion.*"}, "alias"),
        (
            "Deploy",
            {"name": "d", "model_name": "m", "version": 1, "canary_step_seconds": math.nan},
            "canary_step_seconds",
        ),
        ("GetDeployment", {"name": "modèle"}, "name"),
        ("GetDeploymentStatus", {"name": "a.>"}, "name"),
        ("DeleteDeployment", {"name": "Fraud"}, "name"),
        ("Rollback", {"name": "\uff46"}, "name"),
    ],
)
async def test_refusals_over_grpc_are_invalid_argument_naming_the_field(
    address: str, method: str, request_fields: dict[str, Any], field: str
) -> None:
    request_type = {"Deploy": deployer_pb2.DeployRequest, "Rollback": deployer_pb2.RollbackRequest}.get(
        method, deployer_pb2.GetDeploymentRequest
    )
    err = await _refused(address, method, request_type(**request_fields))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert (err.details() or "").startswith(field + ":"), err.details()


async def test_ten_thousand_preferred_batch_sizes_are_refused_over_grpc(address: str) -> None:
    config = deployer_pb2.ServingConfig(max_batch_size=4096, preferred_batch_sizes=range(1, 10_001))
    err = await _refused(
        address, "Deploy", deployer_pb2.DeployRequest(name="d", model_name="m", version=1, config=config)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("config.preferred_batch_sizes: at most 16 sizes"), err.details()


async def test_a_10kb_value_is_cut_in_the_error_over_grpc(address: str) -> None:
    for request in (
        deployer_pb2.DeployRequest(name=TEN_KB, model_name="m", version=1),
        deployer_pb2.DeployRequest(name="d", model_name="m", version=1, hosts=[TEN_KB]),
        deployer_pb2.DeployRequest(name="d", model_name="m", version=1, strategy=TEN_KB),
    ):
        err = await _refused(address, "Deploy", request)
        details = err.details() or ""
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(details) < 400 and "(10000 characters)" in details, details
    # Nothing was created by any of the refusals above.
    async with client_channel(address, KEY) as ch:
        listed = await deployer_pb2_grpc.DeploymentServiceStub(ch).ListDeployments(
            deployer_pb2.ListDeploymentsRequest(), timeout=10
        )
    assert list(listed.deployments) == []
