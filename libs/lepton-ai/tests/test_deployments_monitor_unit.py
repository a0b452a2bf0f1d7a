"""``client.deployments`` and ``client.monitor`` against the in-process fake."""

from __future__ import annotations

import grpc
import pytest
from lepton.deployer.v1 import deployer_pb2
from lepton.monitor.v1 import monitor_pb2

import lepton_ai as la

from .fakes import FakePlatform

pytestmark = pytest.mark.timeout(30)


# -- client.deployments -------------------------------------------------------------------------


def test_list_and_get_return_the_platforms_deployments(client: la.Client, fake: FakePlatform) -> None:
    fake.deployer.add("churn-prod", "churn", 3)
    fake.deployer.add("price-prod", "price", 1)
    assert [d.name for d in client.deployments.list()] == ["churn-prod", "price-prod"]
    got = client.deployments.get("churn-prod")
    assert (got.state, got.lineage.model_name, got.lineage.model_version) == (
        deployer_pb2.DEPLOYMENT_STATE_READY,
        "churn",
        3,
    )
    assert fake.calls_to("GetDeployment")[0].request.name == "churn-prod"


def test_get_of_an_unknown_deployment_is_not_found(client: la.Client) -> None:
    with pytest.raises(la.NotFound) as caught:
        client.deployments.get("nope")
    assert caught.value.field == "name"


def test_get_or_none_is_none_only_when_there_is_no_such_deployment(client: la.Client, fake: FakePlatform) -> None:
    assert client.deployments.get_or_none("nope") is None
    fake.deployer.add("churn-prod", "churn", 1)
    got = client.deployments.get_or_none("churn-prod")
    assert got is not None and got.name == "churn-prod"
    fake.fail("GetDeployment", grpc.StatusCode.UNAVAILABLE, "deployer restarting")
    with pytest.raises(la.Unavailable):  # an outage is not "no deployment"
        client.deployments.get_or_none("churn-prod")


def test_deploy_sends_the_version_and_serving_config(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn")
    fake.registry.add_version("churn")
    deployed = client.deployments.deploy(
        "churn-prod", "churn", 1, config={"max_batch_size": 32, "instance_kind": "cpu"}, strategy="canary"
    )
    request = fake.calls_to("Deploy")[0].request
    assert (request.name, request.model_name, request.version, request.alias, request.wait) == (
        "churn-prod",
        "churn",
        1,
        "",
        True,
    )
    assert (request.config.max_batch_size, request.config.instance_kind, request.strategy) == (32, "cpu", "canary")
    assert not request.HasField("follow")  # None: leave it as it is, not set it to ""
    assert deployed.lineage.model_version == 1 and deployed.config.max_batch_size == 32


def test_deploy_by_alias_and_follow(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn")
    fake.registry.add_version("churn")
    fake.registry.models["churn"].aliases["champion"] = 1
    deployed = client.deployments.deploy("churn-prod", "churn", alias="champion", follow="champion", wait=False)
    request = fake.calls_to("Deploy")[0].request
    assert (request.alias, request.follow, request.wait) == ("champion", "champion", False)
    assert request.HasField("follow")
    assert deployed.lineage.model_version == 1


@pytest.mark.parametrize(
    ("config", "field"),
    [({"max_batch": 32}, "config.max_batch"), ({"max_batch_size": "big"}, "config.max_batch_size")],
    ids=["unknown-key", "wrong-type"],
)
def test_a_bad_serving_config_is_refused_before_any_call(
    client: la.Client, fake: FakePlatform, config: dict[str, object], field: str
) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        client.deployments.deploy("churn-prod", "churn", config=config)
    assert caught.value.field == field
    assert fake.calls == []


def test_route_reads_the_routes_once_then_again_after_a_rollout(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn")
    fake.deployer.add("churn-prod", "churn", 1)
    deployment, route = client.deployments.route("churn-prod")
    again, _ = client.deployments.route("churn-prod")  # within the routes' TTL: no second read
    assert (route.triton_model, route.triton_version, route.model_version) == ("churn-prod", "1", 1)
    assert again.name == deployment.name
    assert len(fake.calls_to("GetDeployment")) == 1
    client.deployments.deploy("churn-prod", "churn", 1)  # a rollout must not leave stale routes behind
    client.deployments.route("churn-prod")
    assert len(fake.calls_to("GetDeployment")) == 2


def test_route_of_a_deployment_serving_nothing_is_failed_precondition(client: la.Client, fake: FakePlatform) -> None:
    fake.deployer.add("empty", "churn", 1, routes=0)
    with pytest.raises(la.FailedPrecondition, match="serves nothing yet"):
        client.deployments.route("empty")


def test_delete_returns_the_deployment_that_went(client: la.Client, fake: FakePlatform) -> None:
    fake.deployer.add("churn-prod", "churn", 1)
    assert client.deployments.delete("churn-prod").name == "churn-prod"
    assert client.deployments.list() == []


# -- client.monitor -----------------------------------------------------------------------------


def test_send_labels_takes_a_mapping_or_rows(client: la.Client, fake: FakePlatform) -> None:
    assert client.monitor.send_labels("churn-prod", {"req-1": 1, "req-2": 0.5}).accepted == 2
    client.monitor.send_labels("churn-prod", [("req-3", 4, 2.0)])
    by_mapping, by_rows = (c.request for c in fake.calls_to("SendLabels"))
    assert [(x.request_id, x.row, x.value) for x in by_mapping.labels] == [("req-1", 0, 1.0), ("req-2", 0, 0.5)]
    assert [(x.request_id, x.row, x.value) for x in by_rows.labels] == [("req-3", 4, 2.0)]
    assert by_mapping.deployment == "churn-prod"


def test_set_rules_builds_rules_from_dicts_and_names_a_bad_key(client: la.Client, fake: FakePlatform) -> None:
    rules = client.monitor.set_rules(
        "churn-prod", [{"name": "slow", "metric": "latency_p99_ms", "comparison": ">", "threshold": 250}]
    )
    assert [(r.rule.name, r.rule.threshold, r.rule.severity) for r in rules] == [("slow", 250.0, "warning")]
    with pytest.raises(la.InvalidArgument) as caught:
        client.monitor.set_rules("churn-prod", [{"name": "ok"}, {"name": "typo", "treshold": 1}])
    assert caught.value.field == "rules[1].treshold" and "threshold" in caught.value.message
    assert len(fake.calls_to("SetRules")) == 1


def test_logs_follow_the_pages(client: la.Client, fake: FakePlatform) -> None:
    fake.monitor.logs = [
        monitor_pb2.PredictionLog(log_id=f"log-{i}", deployment="churn-prod" if i != 2 else "other") for i in range(6)
    ]
    logs = list(client.monitor.logs("churn-prod", page_size=2, errors_only=True))
    assert [log.log_id for log in logs] == ["log-0", "log-1", "log-3", "log-4", "log-5"]
    pages = fake.calls_to("QueryPredictionLogs")
    assert [c.request.page_token for c in pages] == ["", "2", "4"]
    assert all(c.request.errors_only and c.request.page_size == 2 for c in pages)


def test_logs_refuse_an_unknown_filter_before_any_call(client: la.Client, fake: FakePlatform) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        next(client.monitor.logs("churn-prod", error_only=True))
    assert caught.value.field == "error_only"
    assert fake.calls == []
