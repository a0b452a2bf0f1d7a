"""``client.jobs``, ``client.models`` and ``la.models`` estimators against the in-process fake."""

from __future__ import annotations

import hashlib
import time

import grpc
import pytest
from lepton.trainer.v1 import trainer_pb2

import lepton_ai as la
from lepton_ml.signing import Signer

from .fake_services import SIGNER
from .fakes import FakePlatform, sales_frame

pytestmark = pytest.mark.timeout(30)
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    trainer_pb2.JOB_STATE_QUEUED,
    trainer_pb2.JOB_STATE_RUNNING,
    trainer_pb2.JOB_STATE_SUCCEEDED,
    trainer_pb2.JOB_STATE_FAILED,
    trainer_pb2.JOB_STATE_CANCELLED,
)


# -- client.jobs --------------------------------------------------------------------------------


def test_jobs_list_is_newest_first_and_filters_by_state_name(client: la.Client, fake: FakePlatform) -> None:
    old = fake.trainer.add_job(RUNNING, algorithm="ridge")
    fake.trainer.add_job(SUCCEEDED, algorithm="ridge")
    new = fake.trainer.add_job(RUNNING, algorithm="svc")
    assert [j.job_id for j in client.jobs.list("running")] == [new.job_id, old.job_id]
    assert [j.job_id for j in client.jobs.list(limit=1)] == [new.job_id]
    filtered, limited = fake.calls_to("ListTrainingJobs")
    assert (filtered.request.state, filtered.request.limit) == (RUNNING, 100)
    assert (limited.request.state, limited.request.limit) == (trainer_pb2.JOB_STATE_UNSPECIFIED, 1)


def test_jobs_list_refuses_an_unknown_state_without_a_call(client: la.Client, fake: FakePlatform) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        client.jobs.list("done")
    assert caught.value.field == "state" and "succeeded" in caught.value.message
    assert fake.calls == []


def test_jobs_get_returns_the_job_and_not_found_names_the_field(client: la.Client, fake: FakePlatform) -> None:
    job = fake.trainer.add_job(RUNNING, algorithm="ridge", model_name="m", params={"alpha": "0.5"})
    got = client.jobs.get(job.job_id)
    assert (got.job_id, got.state, got.algorithm, dict(got.params)) == (job.job_id, RUNNING, "ridge", {"alpha": "0.5"})
    with pytest.raises(la.NotFound) as caught:
        client.jobs.get("job_missing")
    assert caught.value.field == "job_id"


def test_jobs_cancel_stops_a_running_job_and_refuses_a_finished_one(client: la.Client, fake: FakePlatform) -> None:
    running = fake.trainer.add_job(RUNNING)
    done = fake.trainer.add_job(SUCCEEDED)
    assert client.jobs.cancel(running.job_id).state == CANCELLED
    assert fake.trainer.jobs[running.job_id].state == CANCELLED
    with pytest.raises(la.FailedPrecondition) as caught:
        client.jobs.cancel(done.job_id)
    assert caught.value.field == "job_id" and caught.value.message.endswith("already succeeded")
    assert [c.request.job_id for c in fake.calls_to("CancelTrainingJob")] == [running.job_id, done.job_id]


def test_jobs_watch_yields_each_change_until_the_job_ends(client: la.Client, fake: FakePlatform) -> None:
    job = fake.trainer.add_job(QUEUED, scripted=True, stage="queued")
    updates = list(client.jobs.watch(job.job_id))
    assert [(u.state, u.stage) for u in updates] == [(QUEUED, "queued"), (RUNNING, "fitting"), (SUCCEEDED, "done")]
    assert fake.calls_to("WatchTrainingJob")[0].request.job_id == job.job_id


def test_jobs_watch_maps_an_error_in_the_middle_of_the_stream(client: la.Client, fake: FakePlatform) -> None:
    job = fake.trainer.add_job(RUNNING)
    fake.fail("WatchTrainingJob", grpc.StatusCode.UNAVAILABLE, "trainer draining", after=1)
    updates = client.jobs.watch(job.job_id, ride_out=0)  # no riding out: the first outage is the end
    assert next(updates).job_id == job.job_id
    with pytest.raises(la.Unavailable, match="trainer draining"):
        next(updates)


def test_jobs_watch_rides_out_a_trainer_that_restarts_and_says_so(client: la.Client, fake: FakePlatform) -> None:
    job = fake.trainer.add_job(RUNNING)
    fake.fail("WatchTrainingJob", grpc.StatusCode.UNAVAILABLE, "trainer restarting", times=2, after=1)
    updates = client.jobs.watch(job.job_id)
    # Each refused watch sends one update first; between them, the last update again, its stage saying
    # why nothing moves; then the watch is open again.
    stages = [next(updates).stage for _ in range(5)]
    waiting = [s.startswith("trainer unavailable, retrying (") for s in stages]
    assert waiting == [False, True, False, True, False], stages
    assert len(fake.calls_to("WatchTrainingJob")) == 3


def test_jobs_algorithms_lists_the_catalogue(client: la.Client) -> None:
    algorithms = client.jobs.algorithms()
    assert [a.name for a in algorithms] == ["linear_regression", "ridge", "kmeans"]
    assert [p.name for p in algorithms[1].params] == ["alpha"]


# -- client.models ------------------------------------------------------------------------------


def test_models_get_and_list(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn")
    fake.registry.add_version("churn")
    fake.registry.add_version("price")
    fake.registry.models["churn"].aliases["champion"] = 1
    model = client.models.get("churn")
    assert (model.name, model.latest_version, dict(model.aliases)) == ("churn", 2, {"champion": 1})
    assert [m.name for m in client.models.list()] == ["churn", "price"]
    with pytest.raises(la.NotFound) as caught:
        client.models.get("nope")
    assert caught.value.field == "name"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, 3), ({"version": 1}, 1), ({"alias": "champion"}, 2)],
    ids=["latest", "number", "alias"],
)
def test_models_version_by_number_alias_or_latest(
    client: la.Client, fake: FakePlatform, kwargs: dict[str, object], expected: int
) -> None:
    for _ in range(3):
        fake.registry.add_version("churn")
    fake.registry.models["churn"].aliases["champion"] = 2
    assert client.models.version("churn", **kwargs).version == expected  # type: ignore[arg-type]
    request = fake.calls[0].request
    assert (request.model_name, request.version, request.alias) == (
        "churn",
        kwargs.get("version", 0),
        kwargs.get("alias", ""),
    )


def test_models_versions_lists_every_version(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn", metrics={"auc": 0.7})
    fake.registry.add_version("churn", metrics={"auc": 0.9})
    versions = client.models.versions("churn")
    assert [(v.version, dict(v.metrics)) for v in versions] == [(1, {"auc": 0.7}), (2, {"auc": 0.9})]


def test_set_alias_without_expected_version_moves_it_unconditionally(client: la.Client, fake: FakePlatform) -> None:
    for _ in range(2):
        fake.registry.add_version("churn")
    fake.registry.models["churn"].aliases["champion"] = 1
    moved = client.models.set_alias("churn", "champion", 2)
    assert (moved.version, moved.previous_version) == (2, 1)
    assert not fake.calls[0].request.HasField("expected_version")


def test_set_alias_is_a_compare_and_set_on_expected_version(client: la.Client, fake: FakePlatform) -> None:
    for _ in range(3):
        fake.registry.add_version("churn")
    # expected_version=0 means "only if the alias does not exist yet": 0 must be sent, not dropped.
    created = client.models.set_alias("churn", "champion", 1, expected_version=0)
    assert (created.version, created.previous_version) == (1, 0)
    assert fake.calls[-1].request.HasField("expected_version") and fake.calls[-1].request.expected_version == 0
    with pytest.raises(la.Conflict) as lost:
        client.models.set_alias("churn", "champion", 3, expected_version=0)
    assert lost.value.code == "ABORTED" and lost.value.field == "expected_version"
    promoted = client.models.set_alias("churn", "champion", 2, expected_version=1)
    assert (promoted.version, promoted.previous_version) == (2, 1)
    with pytest.raises(la.Conflict):  # a racer that read v1 loses
        client.models.set_alias("churn", "champion", 3, expected_version=1)
    assert fake.registry.models["churn"].aliases["champion"] == 2


def test_set_alias_on_an_archived_version_is_failed_precondition(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn", status="archived")
    with pytest.raises(la.FailedPrecondition) as caught:
        client.models.set_alias("churn", "champion", 1)
    assert caught.value.field == "version" and "archived" in caught.value.message


def test_delete_version_sends_the_named_version_and_refusals_name_the_field(
    client: la.Client, fake: FakePlatform
) -> None:
    for _ in range(3):
        fake.registry.add_version("churn")
    fake.registry.models["churn"].aliases["champion"] = 2
    deleted = client.models.delete_version("churn", 3)
    assert (deleted.model_name, deleted.version, deleted.artifact_erased) == ("churn", 3, True)
    assert (fake.calls[-1].request.model_name, fake.calls[-1].request.version) == ("churn", 3)
    assert [v.version for v in client.models.versions("churn")] == [1, 2]
    with pytest.raises(la.FailedPrecondition) as aliased:
        client.models.delete_version("churn", 2)
    assert aliased.value.field == "version" and "champion" in aliased.value.message
    with pytest.raises(la.NotFound):
        client.models.delete_version("churn", 3)


def test_download_reassembles_the_streamed_chunks_and_checks_the_digest(client: la.Client, fake: FakePlatform) -> None:
    artifact = bytes(range(256)) * 1200  # 300 KiB: five chunks of 64 KiB
    fake.registry.add_version("churn", artifact=b"old")
    fake.registry.add_version("churn", artifact=artifact)
    fake.registry.models["churn"].aliases["champion"] = 2
    assert client.models.download("churn") == SIGNER.sign(artifact)  # the signed artifact, as stored
    assert client.models.download("churn", 1) == SIGNER.sign(b"old")
    assert client.models.download("churn", alias="champion") == SIGNER.sign(artifact)
    requests = [(c.request.version, c.request.alias) for c in fake.calls_to("DownloadArtifact")]
    assert requests == [(0, ""), (1, ""), (0, "champion")]


def test_an_artifact_the_platform_did_not_sign_is_data_loss(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn", artifact=b"PK\x03\x04unsigned", signed=False)
    fake.registry.add_version("churn", artifact=Signer.generate().sign(b"PK\x03\x04other key"), signed=False)
    tampered = bytearray(SIGNER.sign(b"PK\x03\x04tampered"))
    tampered[-1] ^= 1
    fake.registry.add_version("churn", artifact=bytes(tampered), signed=False)
    messages = []
    for version in (1, 2, 3):
        with pytest.raises(la.DataLoss) as caught:
            client.models.download("churn", version)
        messages.append(caught.value.message)
    assert "not signed" in messages[0] and "not a trusted artifact key" in messages[1]
    assert "altered after signing" in messages[2]
    assert len(fake.calls_to("GetArtifactPublicKey")) == 1  # asked once per client


def test_a_damaged_artifact_is_data_loss(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn", artifact=b"bundle", digest="sha256:" + hashlib.sha256(b"other").hexdigest())
    with pytest.raises(la.DataLoss) as caught:
        client.models.download("churn", 1)
    assert caught.value.message == "the artifact of churn v1 arrived damaged"


def test_an_error_in_the_middle_of_a_download_is_mapped(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn", artifact=b"z" * 300_000)
    fake.fail("DownloadArtifact", grpc.StatusCode.DATA_LOSS, "artifact: object store digest mismatch", after=2)
    with pytest.raises(la.DataLoss) as caught:
        client.models.download("churn")
    assert caught.value.field == "artifact"


def test_search_follows_the_pages_and_sends_the_filters(client: la.Client, fake: FakePlatform) -> None:
    for name, auc in [("churn", 0.6), ("churn", 0.8), ("churn-eu", 0.9), ("churn-eu", 0.95), ("price", 0.99)]:
        fake.registry.add_version(name, metrics={"auc": auc})
    found = list(client.models.search(name_contains="churn", metric="auc", min_value=0.7, page_size=2))
    assert [(v.model_name, v.version) for v in found] == [("churn", 2), ("churn-eu", 1), ("churn-eu", 2)]
    pages = fake.calls_to("SearchModelVersions")
    assert [c.request.page_token for c in pages] == ["", "2"]
    first = pages[0].request
    assert (first.name_contains, first.metric, first.min_value, first.page_size) == ("churn", "auc", 0.7, 2)
    assert first.HasField("min_value") and not first.HasField("max_value")


def test_evaluate_sends_what_to_evaluate_on(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("churn")
    evaluation = client.models.evaluate("churn", 1, dataset_version_id="dv_0042", rows="all", cv_folds=5)
    request = fake.calls[0].request
    assert (request.model_name, request.model_version, request.dataset_version_id, request.rows, request.cv_folds) == (
        "churn",
        1,
        "dv_0042",
        "all",
        5,
    )
    assert evaluation.evaluation_id == "ev_0001" and evaluation.rows == "all"


# -- la.models estimators -----------------------------------------------------------------------


def submit_job_id(fake: FakePlatform) -> str:
    """The id of the (one) job the test submitted."""
    return next(iter(fake.trainer.scripted))


@pytest.fixture
def dataset(client: la.Client, fake: FakePlatform) -> la.Dataset:
    return client.datasets.get(fake.data.add("sales", sales_frame()).version_id)


def test_fit_checks_submits_watches_and_finds_the_registered_version(fake: FakePlatform, dataset: la.Dataset) -> None:
    fake.registry.add_version("sales-linear_regression")  # an older version, of another job
    model = la.models.LinearRegression(fit_intercept=False).fit(dataset, progress=False, seed=7)
    assert fake.methods()[1:] == ["ListAlgorithms", "SubmitTraining", "WatchTrainingJob", "ListModelVersions"]
    submit = fake.calls_to("SubmitTraining")[0].request
    assert (submit.dataset_version_id, submit.algorithm, submit.target) == ("dv_0001", "linear_regression", "target")
    assert dict(submit.params) == {"fit_intercept": "false"}  # Python values as the platform's text
    assert submit.HasField("seed") and submit.seed == 7
    assert model.job_id == submit_job_id(fake)
    assert (model.model_name, model.version) == ("sales-linear_regression", 2)
    assert model.metrics == {"r2": 0.75, "rmse": 1.25}
    assert (model.features, model.target) == (["store", "units", "price"], "target")


def test_fit_polls_the_registry_with_backoff_until_the_version_appears(fake: FakePlatform, dataset: la.Dataset) -> None:
    fake.registry.hidden_polls = 3  # the evaluator has not registered it yet: NOT_FOUND three times
    started = time.monotonic()
    model = la.models.Ridge(alpha=0.5).fit(dataset, progress=False)
    assert len(fake.calls_to("ListModelVersions")) == 4
    assert time.monotonic() - started >= 0.02 + 0.04 + 0.08  # waited between polls, longer each time
    assert model.version == 1


def test_fit_refuses_an_unknown_hyper_parameter_before_submitting(fake: FakePlatform, dataset: la.Dataset) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        la.models.Ridge(alpah=0.5).fit(dataset, progress=False)
    assert caught.value.field == "params.alpah" and "alpha" in caught.value.message
    assert fake.calls_to("SubmitTraining") == []


def test_fit_refuses_an_algorithm_the_platform_lacks(fake: FakePlatform, dataset: la.Dataset) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        la.models.SVC().fit(dataset, progress=False)
    assert caught.value.field == "algorithm" and "'svc'" in caught.value.message
    assert fake.calls_to("SubmitTraining") == []


def test_fit_without_a_target_column_asks_for_one(fake: FakePlatform, client: la.Client) -> None:
    dataset = client.datasets.get(fake.data.add("plain", sales_frame().drop("target")).version_id)
    with pytest.raises(la.InvalidArgument) as caught:
        la.models.Ridge().fit(dataset, progress=False)
    assert caught.value.field == "target"
    la.models.Ridge().fit(dataset, "price", progress=False)
    assert fake.calls_to("SubmitTraining")[0].request.target == "price"


def test_a_failed_training_job_is_failed_precondition_with_the_jobs_error(
    fake: FakePlatform, dataset: la.Dataset
) -> None:
    fake.trainer.outcome = "failed"
    with pytest.raises(la.FailedPrecondition) as caught:
        la.models.Ridge().fit(dataset, progress=False)
    assert caught.value.message == f"training job {submit_job_id(fake)} failed: fit: the target column is constant"
    assert fake.calls_to("ListModelVersions") == []


def test_predict_before_fit_is_failed_precondition() -> None:
    with pytest.raises(la.FailedPrecondition, match="call fit"):
        la.models.Ridge().predict({"units": [1]})
