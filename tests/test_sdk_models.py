"""The SDK's models: the product description's example runs as written (README.md)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_diabetes, load_iris

import lepton_ai as la
from lepton_ai.jobs import STATES
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_example_runs_as_written(platform: EmbeddedPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_URL", platform.url)
    frame = load_diabetes(as_frame=True).frame
    dataset = la.Client(platform.api_key).datasets.upload(frame, name="sdk-diabetes")
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "la.models" in b)
    code = block.replace('"your_api_key"', repr(platform.api_key)).replace('"your_dataset_id"', repr(dataset.id))
    new_data = frame.drop(columns=["target"]).head(7)
    scope: dict[str, object] = {"new_data": new_data}
    exec(compile(code, str(README), "exec"), scope)
    model = scope["model"]
    prediction = scope["prediction"]
    assert isinstance(model, la.models.LinearRegression) and model.version >= 1
    assert set(model.metrics) >= {"r2", "rmse"} and model.target == "target"
    local = model.bundle().predict(pl.from_pandas(new_data))
    np.testing.assert_allclose(np.asarray(prediction, dtype=np.float64), local, atol=1e-6)
    # Once Triton serves the version, predict goes there; the numbers do not change.
    assert model.wait_deployed(300)
    np.testing.assert_allclose(model.predict(new_data), local, atol=1e-6)
    assert model.predict(new_data.to_numpy()).shape == (7,)
    assert 0.3 < model.score(dataset) < 0.7


def test_classifiers_mlp_and_errors(platform: EmbeddedPlatform) -> None:
    client = la.Client(platform.api_key, platform.url)
    iris = client.datasets.upload(load_iris(as_frame=True).frame, name="sdk-iris")
    forest = la.models.RandomForestClassifier(n_estimators=25, max_depth=None).fit(iris, model_name="sdk-forest")
    assert forest.metrics["accuracy"] > 0.8
    proba = forest.predict_proba(load_iris().data[:3])
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1.0)
    with pytest.raises(la.InvalidArgument, match=r"params\.n_trees"):
        la.models.RandomForestClassifier(n_trees=3).fit(iris)
    with pytest.raises(la.InvalidArgument) as bad:
        la.models.Ridge(alpha=-1).fit(iris)
    assert bad.value.field == "params.alpha"
    with pytest.raises(la.FailedPrecondition, match="not trained yet"):
        la.models.Ridge().predict([[1, 2, 3, 4]])
    mlp = la.models.MLP(task="classification", epochs=30, hidden_layers=[16]).fit(iris, model_name="sdk-mlp")
    assert mlp.algorithm == "mlp_classifier" and mlp.metrics["accuracy"] > 0.8


def test_every_catalogue_algorithm_has_an_sdk_class(platform: EmbeddedPlatform) -> None:
    from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

    client = la.Client(platform.api_key, platform.url)
    t = client._transport
    names = {
        a.name
        for a in t.call(
            "trainer",
            trainer_pb2_grpc.TrainingServiceStub(t.channel("trainer")).ListAlgorithms,
            trainer_pb2.ListAlgorithmsRequest(),
        ).algorithms
    }
    covered = set(la.models.BY_ALGORITHM) | {"mlp_classifier", "mlp_regressor"}
    assert names - covered == {n for n in names if n.startswith("custom:")}


def test_jobs_submit_queues_a_search_and_returns_at_once(platform: EmbeddedPlatform) -> None:
    """``client.jobs.submit``: a job queued without waiting; with ``search``, a grid search whose trials
    the job then compares; a malformed request is refused naming its field."""
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    with la.Client(platform.api_key, platform.url) as client:
        dataset = client.datasets.upload(frame, name="sdk-submit-diabetes", progress=False)
        job = client.jobs.submit(
            dataset.version_id,
            "ridge",
            "target",
            model_name="sdk-submit",
            search={"kind": "grid", "space": {"alpha": ["0.01", "10"]}},
        )
        assert job.job_id.startswith("job_") and job.kind == "search"
        final = list(client.jobs.watch(job.job_id))[-1]
        assert final.state == STATES["succeeded"], final.error
        assert sorted(t.params["alpha"] for t in final.trials) == ["0.01", "10"]
        assert final.best_trial_id in {t.job_id for t in final.trials} and final.search_metric == "r2"
        single = client.jobs.submit(
            dataset.version_id, "ridge", "target", params={"alpha": "2"}, model_name="sdk-submit"
        )
        assert single.kind == "single" and dict(single.params) == {"alpha": "2"}
        with pytest.raises(la.InvalidArgument) as refused:
            client.jobs.submit(dataset.version_id, "ridge", "no_such_column")
        assert "target" in str(refused.value)
