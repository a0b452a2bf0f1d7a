"""The SDK calls no other e2e test makes, each against the running platform.

One Ridge model on the diabetes data is trained once for the module and served by its
automatic deployment; the tests read it, log predictions through it, label them, roll it
forward and back, and finally delete it. tools/check_surface_coverage.py (run by
tests/test_surface_coverage.py) fails when a public SDK call is named in no test.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
from lepton.trainer.v1 import trainer_pb2
from sklearn.datasets import load_diabetes, load_iris

import lepton_ai as la
from lepton_core.bus import ObjectRefRecord, ObjectStore
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NAME = "surface-ridge"
#: Every estimator class of ``la.models``; each must match an algorithm of the platform's catalogue.
ESTIMATORS: list[type[la.models.Model]] = [
    la.models.LinearRegression, la.models.Ridge, la.models.Lasso, la.models.ElasticNet,
    la.models.LogisticRegression, la.models.DecisionTreeClassifier, la.models.DecisionTreeRegressor,
    la.models.RandomForestClassifier, la.models.RandomForestRegressor, la.models.GradientBoostingClassifier,
    la.models.GradientBoostingRegressor, la.models.SVC, la.models.SVR, la.models.KNeighborsClassifier,
    la.models.KNeighborsRegressor, la.models.GaussianNB, la.models.KMeans,
]  # fmt: skip


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def key(values: Sequence[float]) -> tuple[float, ...]:
    """A row's feature values, rounded: how a logged row finds its true target."""
    return tuple(round(float(v), 9) for v in values)


@dataclass
class Served:
    frame: pl.DataFrame  # the diabetes data, target included
    dataset: la.Dataset
    model: la.models.Model


@pytest.fixture(scope="module")
def client(platform: EmbeddedPlatform) -> Iterator[la.Client]:
    with la.Client(platform.api_key, platform.url) as c:
        yield c


@pytest.fixture(scope="module")
def served(client: la.Client) -> Served:
    """Ridge v1 of NAME, trained once and served by its automatic deployment (named NAME)."""
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    dataset = client.datasets.upload(frame, name=unique("surface-diabetes"), progress=False)
    model = la.models.Ridge(alpha=0.5).fit(dataset, model_name=NAME, progress=False)
    assert model.version == 1 and model.wait_deployed(300)
    return Served(frame, dataset, model)


def test_dataset_rules_reports_and_schema_changes(client: la.Client) -> None:
    name = unique("surface-schema")
    v1 = client.datasets.upload(pl.DataFrame({"age": [31, 45, 27, 60], "label": ["a", "b", "a", "b"]}), name=name)
    summary = client.datasets.set_rules(name, [{"kind": "range", "column": "age", "min": 18, "max": 50}])
    assert (summary.name, summary.version_count, summary.rules[0]["kind"]) == (name, 1, "range")
    report = v1.validate()
    assert isinstance(report, la.ValidationReport) and not report.valid and report.rules_checked == 1
    (violation,) = report.violations
    assert isinstance(violation, la.Violation)
    assert (violation.kind, violation.column, violation.count) == ("range", "age", 1)
    assert violation.examples == [{"age": 60, "label": "b", "_row": 3}]  # the offending row and its index
    v2 = v1.update_schema({"age": "float", "label": "category"})
    assert (v2.parent_version_id, v2.origin, v2.row_count) == (v1.version_id, "schema", 4)
    assert v2.columns["age"] == "Float64" and v2.columns["label"] != v1.columns["label"]
    assert v2.to_pandas(columns=["age"])["age"].tolist() == [31.0, 45.0, 27.0, 60.0]
    with pytest.raises(la.InvalidArgument) as bad:
        v1.update_schema({"age": "complex"})
    assert bad.value.field == "changes[0].dtype"
    with pytest.raises(la.InvalidArgument) as missing:
        v1.update_schema({"height": "float"})
    assert missing.value.field == "changes[0].name" and "'age'" in missing.value.message
    with pytest.raises(la.InvalidArgument) as unknown:
        client.datasets.set_rules(name, [{"kind": "sometimes", "column": "age"}])
    assert unknown.value.field == "rules[0].kind"
    with pytest.raises(la.NotFound):
        client.datasets.set_rules(unique("no-such-dataset"), [])
    assert client.datasets.delete(name) == 2


def test_every_estimator_is_an_algorithm_of_the_platform(client: la.Client, served: Served) -> None:
    """Hyper-parameters are checked against the catalogue before anything is submitted."""
    catalogue = {a.name: sorted(p.name for p in a.params) for a in client.jobs.algorithms()}
    estimators: list[la.models.Model] = [cls(wrong=1) for cls in ESTIMATORS]
    estimators += [la.models.MLP(task="classification", wrong=1), la.models.MLP(task="regression", wrong=1)]
    estimators += [la.models.Custom("clipped_ridge", wrong=1)]
    assert {e.algorithm for e in estimators} == set(catalogue)  # one class per algorithm, none missing
    for estimator in estimators:
        assert estimator.get_params() == {"wrong": 1}
        assert repr(estimator) == f"{type(estimator).__name__}(wrong=1)"
        with pytest.raises(la.InvalidArgument) as bad:
            estimator.fit(served.dataset, progress=False)
        assert bad.value.field == "params.wrong", bad.value.message
        assert bad.value.message.endswith(", ".join(catalogue[estimator.algorithm])), bad.value.message
        assert not estimator.job_id  # refused before submitting
    with pytest.raises(la.InvalidArgument) as unknown:
        la.models.Custom("no_such_entry_point").fit(served.dataset, progress=False)
    assert unknown.value.field == "algorithm" and "custom:clipped_ridge" in unknown.value.message
    with pytest.raises(la.InvalidArgument, match="task: expected regression or classification"):
        la.models.MLP(task="ranking")
    untargeted = client.datasets.upload(pl.DataFrame({"x": [1.0, 2.0], "y2": [2.0, 4.0]}), name=unique("surface"))
    with pytest.raises(la.InvalidArgument, match="target: the dataset has no column named target"):
        la.models.Ridge().fit(untargeted)
    client.datasets.delete(untargeted.name)
    with pytest.raises(la.FailedPrecondition, match="ridge gives no probabilities"):
        served.model.predict_proba(served.frame.drop("target").head(2))
    with pytest.raises(la.InvalidArgument, match="x: expected rows of 10 values"):
        served.model.predict([[1.0, 2.0]])
    with pytest.raises(la.FailedPrecondition, match="not trained yet"):
        la.models.Ridge().score(served.dataset)


def test_a_classifier_scores_accuracy_and_checks_its_rows(client: la.Client) -> None:
    iris = pl.from_pandas(load_iris(as_frame=True).frame)
    dataset = client.datasets.upload(iris, name=unique("surface-iris"), progress=False)
    nb = la.models.GaussianNB().fit(dataset, model_name=unique("surface-nb"), progress=False)
    features = iris.drop("target")
    proba = nb.predict_proba(features)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1.0)
    accuracy = float(np.mean(np.argmax(proba, axis=1) == iris["target"].to_numpy()))
    assert nb.score(dataset) == pytest.approx(accuracy) and accuracy > 0.9  # accuracy, not R², for a classifier
    with pytest.raises(la.InvalidArgument, match="x: expected rows of 4 values"):
        nb.predict_proba([[1.0, 2.0]])
    assert nb.wait_deployed(300)  # then unload it: this module leaves Triton as it found it
    client.deployments.delete(nb.model_name)


def test_jobs_are_listed_watched_and_a_running_one_cancelled(client: la.Client, served: Served) -> None:
    done = client.jobs.get(served.model.job_id)
    assert (done.state, done.model_name, done.algorithm) == (trainer_pb2.JOB_STATE_SUCCEEDED, NAME, "ridge")
    assert served.model.job_id in [j.job_id for j in client.jobs.list(state="succeeded", limit=1000)]
    assert [j.state for j in client.jobs.watch(served.model.job_id)][-1] == trainer_pb2.JOB_STATE_SUCCEEDED
    # A job that would run for minutes, cancelled while it runs: fit() then raises.
    slow = la.models.MLP(epochs=10000, early_stopping_patience=0)
    raised: list[BaseException] = []

    def fit() -> None:
        try:
            slow.fit(served.dataset, model_name=unique("surface-cancel"), progress=False)
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=fit)
    worker.start()
    deadline = time.monotonic() + 60
    while not (slow.job_id and client.jobs.get(slow.job_id).state == trainer_pb2.JOB_STATE_RUNNING):
        assert worker.is_alive() and time.monotonic() < deadline, raised
        time.sleep(0.1)
    cancelling = client.jobs.cancel(slow.job_id)
    assert cancelling.job_id == slow.job_id
    worker.join(60)
    (exc,) = raised
    assert type(exc) is la.LeptonError and f"training job {slow.job_id} was cancelled" in str(exc)
    assert [j.state for j in client.jobs.watch(slow.job_id)][-1] == trainer_pb2.JOB_STATE_CANCELLED
    assert slow.job_id in [j.job_id for j in client.jobs.list(state="cancelled", limit=1000)]
    with pytest.raises(la.FailedPrecondition):
        client.jobs.cancel(slow.job_id)
    with pytest.raises(la.InvalidArgument) as bad:
        client.jobs.list(state="stuck")
    assert bad.value.field == "state" and "succeeded" in bad.value.message
    with pytest.raises(la.NotFound):
        client.jobs.get("job_doesnotexist")


def test_registry_versions_and_edge_export(client: la.Client, served: Served) -> None:
    assert NAME in [m.name for m in client.models.list()]
    (v1,) = client.models.versions(NAME)
    assert (v1.version, v1.lineage.training_job_id, v1.algorithm) == (1, served.model.job_id, "ridge")
    assert v1.lineage.dataset_version_id == served.dataset.version_id
    assert client.models.evaluations(NAME, 1)[0].metrics["r2"] == pytest.approx(served.model.metrics["r2"])
    bundle = client.models.export_edge(NAME, 1, sample=served.frame.head(50))
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        assert {"model.onnx", "signature.json", "check.json", "runner.py"} <= set(zf.namelist())
    with pytest.raises(la.NotFound):
        client.models.versions(unique("no-such-model"))
    with pytest.raises(la.NotFound):
        client.models.export_edge(NAME, 99)


def test_deployments_list_routes_and_refusals(client: la.Client, served: Served) -> None:
    listed = {d.name: d for d in client.deployments.list()}
    assert listed[NAME].lineage.model_version == 1 and listed[NAME].follow == "latest"
    deployment, route = client.deployments.route(NAME)
    assert deployment.name == NAME and (route.model_version, route.weight) == (1, 1.0)
    assert route.triton_model.endswith(NAME)
    assert client.deployments.get_or_none(unique("no-such-deployment")) is None
    with pytest.raises(la.NotFound):
        client.deployments.route(unique("no-such-deployment"))
    with pytest.raises(la.InvalidArgument) as bad:
        client.deployments.deploy(unique("surface"), NAME, config={"max_batch": 8})
    assert bad.value.field == "config.max_batch" and "max_batch_size" in bad.value.message
    with pytest.raises(la.InvalidArgument, match=r"name: expected a deployment name: .*; got 'Not A Name'"):
        client.deployments.deploy("Not A Name", NAME)


def test_monitor_logs_labels_and_live_performance(client: la.Client, served: Served) -> None:
    features = served.frame.drop("target")
    truth = {key(row[:-1]): row[-1] for row in served.frame.iter_rows()}
    for start in range(0, 20, 5):
        client.deployments.predict(NAME, features.slice(start, 5))
    deadline = time.monotonic() + 60
    while len(logs := list(client.monitor.logs(NAME))) < 4:
        assert time.monotonic() < deadline, f"{len(logs)} prediction logs after 60 s"
        time.sleep(0.25)
    assert all(log.model_version == 1 and log.batch_rows == 5 and len(log.rows) == 5 for log in logs)
    assert {log.log_id for log in client.monitor.logs(NAME, page_size=1)} == {log.log_id for log in logs}
    (one,) = client.monitor.logs(NAME, request_id=logs[0].request_id)
    assert one.log_id == logs[0].log_id
    summary = client.monitor.summary(NAME)
    assert (summary.logs, summary.rows, summary.errors, dict(summary.logs_by_version)) == (4, 20, 0, {1: 4})
    metrics = client.monitor.metrics(NAME, last_seconds=600, history=True)
    assert (metrics.serving_version, metrics.window.requests, metrics.window.rows) == (1, 4, 20)
    # Ground truth for every logged row, then the live RMSE is the RMSE of those rows.
    labels = [(log.request_id, i, truth[key(row.values)]) for log in logs for i, row in enumerate(log.rows)]
    sent = client.monitor.send_labels(NAME, labels)
    assert (sent.accepted, sent.matched) == (20, 20)
    again = client.monitor.send_labels(NAME, {logs[0].request_id: labels[0][2]})  # idempotent: row 0 again
    assert (again.accepted, again.matched) == (1, 1)
    predicted = [out for log in logs for out in log.outputs]
    expected = math.sqrt(np.mean([(p - t) ** 2 for p, (_, _, t) in zip(predicted, labels, strict=True)]))
    live = client.monitor.performance(NAME)
    assert (live.task, live.metric, live.overall.labelled) == ("regression", "rmse", 20)
    assert live.overall.rmse == pytest.approx(expected, rel=1e-6)
    # Alert rules: the platform fills in the defaults; an empty list removes them.
    rule = {"name": "slow", "metric": "latency_p95_ms", "comparison": ">", "threshold": 5000}
    (status,) = client.monitor.set_rules(NAME, [rule])
    assert (status.rule.name, status.rule.window_seconds, status.rule.severity, status.firing) == (
        "slow", 300, "warning", False,
    )  # fmt: skip
    assert [s.rule.name for s in client.monitor.rules(NAME)] == ["slow"]
    assert client.monitor.alerts(NAME, firing_only=True) == []
    assert client.monitor.set_rules(NAME, []) == [] and client.monitor.rules(NAME) == []
    # Wrong requests name the field at fault, whether the SDK or the platform refuses them.
    refusals = [
        (lambda: client.monitor.set_rules(NAME, [{**rule, "metric": "mood"}]), "rules[0].metric"),
        (lambda: client.monitor.set_rules(NAME, [{"nam": "typo"}]), "rules[0].nam"),
        (lambda: client.monitor.performance(NAME, task="ranking"), "task"),
        (lambda: client.monitor.performance(NAME, tsk="regression"), "tsk"),
        (lambda: list(client.monitor.logs(NAME, trace_id="xyz")), "trace_id"),
        (lambda: client.monitor.summary(NAME, top="three"), "top"),
        (lambda: client.monitor.set_retraining_policy(NAME, on_drift="yes please"), "on_drift"),
        (lambda: client.monitor.send_labels(NAME, {"": 1.0}), "labels[0].request_id"),
    ]
    for call, field in refusals:
        with pytest.raises(la.InvalidArgument) as bad:
            call()
        assert bad.value.field == field, bad.value.message
    with pytest.raises(la.NotFound):
        client.monitor.summary(unique("no-such-deployment"))


def test_rollback_serves_the_earlier_version_and_a_tampered_artifact_is_data_loss(
    platform: EmbeddedPlatform, client: la.Client, served: Served
) -> None:
    rows = served.frame.drop("target").head(8)
    second = la.models.Ridge(alpha=5.0).fit(served.dataset, model_name=NAME, progress=False)
    assert second.version == 2 and second.wait_deployed(300)  # the deployment follows "latest"
    np.testing.assert_allclose(client.deployments.predict(NAME, rows), second.bundle().predict(rows), atol=1e-6)
    back = client.deployments.rollback(NAME)
    assert back.lineage.model_version == 1
    assert (back.history[-1].from_version, back.history[-1].to_version, back.history[-1].outcome) == (
        2, 1, "completed",
    )  # fmt: skip
    # At once: predict() must not use the routes it read before the rollback.
    np.testing.assert_allclose(client.deployments.predict(NAME, rows), served.model.bundle().predict(rows), atol=1e-6)
    # v2 serves nothing now: change one byte of its stored artifact, and the registry refuses it.
    version = client.models.version(NAME, 2)
    original = client.models.download(NAME, 2)
    artifact = version.artifact
    ref = ObjectRefRecord(bucket=artifact.bucket, name=artifact.name, digest=artifact.digest, size=artifact.size)

    async def store(data: bytes) -> None:
        nc = await admin_connect(platform.nats_url, "test-surface-tamper")
        try:
            await ObjectStore(nc.jetstream()).put(ref.bucket, ref.name, data)
        finally:
            await nc.close()

    asyncio.run(store(original[:-1] + bytes([original[-1] ^ 1])))
    try:
        with pytest.raises(la.DataLoss, match="modified or corrupted"):
            client.models.download(NAME, 2)
    finally:
        asyncio.run(store(original))
    assert client.models.download(NAME, 2) == original


def test_delete_unloads_the_deployment(client: la.Client, served: Served) -> None:
    row = served.frame.drop("target").head(1)
    assert client.deployments.predict(NAME, row).shape == (1,)  # its routes are now cached for 0.5 s
    gone = client.deployments.delete(NAME)
    assert gone.name == NAME
    with pytest.raises(la.NotFound):  # not a stale route to a model Triton no longer has
        client.deployments.predict(NAME, row)
    assert client.deployments.get_or_none(NAME) is None
    assert NAME not in [d.name for d in client.deployments.list()]
    with pytest.raises(la.NotFound):
        client.deployments.delete(NAME)
