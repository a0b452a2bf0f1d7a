"""``la.AsyncClient`` against the running platform: calls run concurrently, the event loop
keeps running while they wait, and docs/sdk.md's async example runs as written."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
import pytest
from lepton.trainer.v1 import trainer_pb2
from sklearn.datasets import load_diabetes, load_iris

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
DOC = Path(__file__).resolve().parents[1] / "docs" / "sdk.md"
T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def with_ticks(call: Awaitable[T]) -> tuple[T, int]:
    """``call``'s result, and how often another task ran on the loop while it was in flight.

    A call that blocked the loop would finish inside one step of its task, before the
    ticker could run again: it would see no ticks at all.
    """
    task = asyncio.ensure_future(call)
    ticks = 0
    while not task.done():
        await asyncio.sleep(0.01)
        ticks += not task.done()
    return await task, ticks


async def job_id_of(model: la.AsyncModel, deadline_s: float = 120.0) -> str:
    """The job id a fit in flight has submitted (read through to the sync model)."""
    deadline = time.monotonic() + deadline_s
    while not model.job_id:
        assert time.monotonic() < deadline, "fit submitted no job"
        await asyncio.sleep(0.05)
    return model.job_id


async def test_calls_run_concurrently_and_the_loop_keeps_running(platform: EmbeddedPlatform, tmp_path: Path) -> None:
    diabetes = load_diabetes(as_frame=True).frame
    csv = tmp_path / "iris.csv"
    load_iris(as_frame=True).frame.to_csv(csv, index=False)
    prefix = unique("async")
    async with la.AsyncClient(platform.api_key, platform.url) as client:
        # Two uploads at once (a DataFrame and a file), while the loop keeps ticking.
        (sugar, iris), ticks = await with_ticks(
            asyncio.gather(
                client.datasets.upload(diabetes, name=f"{prefix}-diabetes", progress=False),
                client.datasets.upload(csv, name=f"{prefix}-iris", progress=False),
            )
        )
        assert ticks >= 1  # a call that blocked the loop would leave the ticker none
        assert isinstance(sugar, la.AsyncDataset) and sugar.row_count == 442 and iris.row_count == 150
        assert iris.name == f"{prefix}-iris" and "sepal length (cm)" in iris.columns

        listed, got, versions, frame = await asyncio.gather(
            client.datasets.list(search=prefix),
            client.datasets.get(f"{prefix}-diabetes"),
            client.datasets.versions(f"{prefix}-iris"),
            sugar.to_polars(columns=["bmi", "target"]),
        )
        assert sorted(d.name for d in listed) == [f"{prefix}-diabetes", f"{prefix}-iris"]
        assert isinstance(got, la.AsyncDataset) and got.version_id == sugar.version_id
        assert [v.version_id for v in versions] == [iris.version_id] and isinstance(versions[0], la.AsyncDataset)
        assert frame.columns == ["bmi", "target"] and frame.height == 442
        scaled = await sugar.apply([{"op": "standardize", "columns": ["bmi"]}])
        assert isinstance(scaled, la.AsyncDataset) and scaled.parent_version_id == sugar.version_id

        # A training fit in flight, its job watched by an async iterator meanwhile, other calls
        # answered at the same time, and the loop ticking throughout.
        model = la.AsyncModel(la.models.Ridge(alpha=0.1))

        async def watch() -> list[trainer_pb2.TrainingJob]:
            return [job async for job in client.jobs.watch(await job_id_of(model))]

        (fitted, seen, algorithms, jobs), ticks = await with_ticks(
            asyncio.gather(
                model.fit(sugar, model_name=f"{prefix}-ridge", progress=False),
                watch(),
                client.jobs.algorithms(),
                client.jobs.list(limit=5),
            )
        )
        assert ticks >= 3 and fitted is model and model.version >= 1 and "r2" in model.metrics
        assert seen[-1].job_id == model.job_id and seen[-1].state == trainer_pb2.JOB_STATE_SUCCEEDED
        assert "ridge" in {a.name for a in algorithms} and isinstance(jobs, list)

        registered, version, job = await asyncio.gather(
            client.models.get(model.model_name),
            client.models.version(model.model_name, model.version),
            client.jobs.get(model.job_id),
        )
        assert registered.name == model.model_name and version.lineage.training_job_id == model.job_id
        assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED
        found = [v async for v in client.models.search(name_contains=prefix)]
        assert [(v.model_name, v.version) for v in found] == [(model.model_name, model.version)]

        rows = diabetes.drop(columns=["target"]).head(5)
        predicted = await model.predict(rows)
        np.testing.assert_allclose(predicted, model.sync.predict(rows), atol=1e-6)  # the same code, blocking
        assert 0.3 < await model.score(sugar) < 0.7
        assert (await client.datasets.delete(f"{prefix}-iris")) == 1
        with pytest.raises(la.NotFound):
            await client.datasets.get(f"{prefix}-iris")


async def test_cancelling_a_fit_cancels_its_job(platform: EmbeddedPlatform) -> None:
    frame = pl.from_pandas(load_iris(as_frame=True).frame)
    async with la.AsyncClient(platform.api_key, platform.url) as client:
        iris = await client.datasets.upload(frame, name=unique("async-iris"), progress=False)
        # Minutes of epochs: only ever cancelled.
        model = la.AsyncModel(la.models.MLP(task="classification", epochs=5000, batch_size=4))
        fit = asyncio.create_task(model.fit(iris, model_name=unique("async-endless"), progress=False))
        job_id = await job_id_of(model)
        async for job in client.jobs.watch(job_id):
            if job.state == trainer_pb2.JOB_STATE_RUNNING:
                break
        fit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fit
        final = [job async for job in client.jobs.watch(job_id)][-1]
        assert final.state == trainer_pb2.JOB_STATE_CANCELLED, final


def test_the_async_example_in_docs_runs(platform: EmbeddedPlatform) -> None:
    section = DOC.read_text().split("## Async", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(DOC), "exec"), {"URL": platform.url, "API_KEY": platform.api_key})
    printed = out.getvalue()
    assert "rows: 442 178" in printed and re.search(r"bmi mean: -?0\.0", printed), printed
    assert re.search(r"job: .* 100%", printed), printed
    assert re.search(r"registered: async-ridge v\d+ r2 above 0.3: True", printed), printed
    assert "predictions: 3" in printed, printed
