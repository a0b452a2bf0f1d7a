"""``la.AsyncClient`` and ``la.AsyncModel`` against the in-process fake: real calls, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from lepton.trainer.v1 import trainer_pb2
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from polars.testing import assert_frame_equal

import lepton_ai as la

from .fake_services import SIGNER
from .fakes import API_KEY, FakePlatform, sales_frame

pytestmark = pytest.mark.timeout(30)


@pytest_asyncio.fixture
async def aclient(fake: FakePlatform) -> AsyncIterator[la.AsyncClient]:
    async with la.AsyncClient(API_KEY, fake.url) as client:
        yield client


async def test_upload_and_get_give_async_datasets_whose_methods_are_awaited(
    aclient: la.AsyncClient, fake: FakePlatform
) -> None:
    frame = sales_frame(7)
    uploaded = await aclient.datasets.upload(frame, "sales", progress=False)
    assert isinstance(uploaded, la.AsyncDataset)
    assert (uploaded.name, uploaded.row_count) == ("sales", 7)
    got = await aclient.datasets.get("sales")
    assert got.version_id == uploaded.version_id
    assert_frame_equal(await got.to_polars(), frame)
    derived = await got.apply([{"op": "drop", "columns": ["store"]}])
    assert isinstance(derived, la.AsyncDataset) and derived.parent_version_id == got.version_id
    assert fake.methods() == [
        "UploadDataset",
        "GetDataset",
        "GetDatasetVersion",
        "ReadDataset",
        "ApplyRecipe",
    ]
    assert {c.header("authorization") for c in fake.calls} == {f"Bearer {API_KEY}"}


async def test_errors_are_the_same_classes_as_the_sync_clients(aclient: la.AsyncClient) -> None:
    with pytest.raises(la.NotFound) as caught:
        await aclient.models.get("nope")
    assert (caught.value.field, caught.value.code) == ("name", "NOT_FOUND")


async def test_calls_run_concurrently_without_blocking_the_loop(aclient: la.AsyncClient, fake: FakePlatform) -> None:
    for name in ("a", "b", "c"):
        fake.registry.add_version(name, artifact=name.encode() * 100_000)
    fake.registry.add_version("m")
    fake.evaluator.hold = True  # Evaluate answers only once released
    held = asyncio.ensure_future(aclient.models.evaluate("m"))
    assert await asyncio.to_thread(fake.wait_for, lambda: bool(fake.calls_to("Evaluate")))
    downloads = await asyncio.gather(*(aclient.models.download(n) for n in ("a", "b", "c")))
    assert downloads == [SIGNER.sign(n.encode() * 100_000) for n in ("a", "b", "c")]
    assert not held.done()  # the three downloads finished while the evaluate still waited
    with fake.lock:
        fake.evaluator.hold = False
        fake.changed.notify_all()
    assert (await held).evaluation_id == "ev_0001"


async def test_watch_is_an_async_iterator_of_the_jobs_changes(aclient: la.AsyncClient, fake: FakePlatform) -> None:
    job = fake.trainer.add_job(trainer_pb2.JOB_STATE_QUEUED, scripted=True)
    states = [update.state async for update in aclient.jobs.watch(job.job_id)]
    assert states == [trainer_pb2.JOB_STATE_QUEUED, trainer_pb2.JOB_STATE_RUNNING, trainer_pb2.JOB_STATE_SUCCEEDED]


async def test_search_pages_through_as_an_async_iterator(aclient: la.AsyncClient, fake: FakePlatform) -> None:
    for _ in range(5):
        fake.registry.add_version("churn")
    versions = [v.version async for v in aclient.models.search(page_size=2)]
    assert versions == [1, 2, 3, 4, 5]
    assert len(fake.calls_to("SearchModelVersions")) == 3


async def test_the_callers_trace_reaches_the_worker_threads_calls(aclient: la.AsyncClient, fake: FakePlatform) -> None:
    span = NonRecordingSpan(
        SpanContext(0x1AF7651916CD43DD8448EB211C80319C, 0x17AD6B7169203331, False, TraceFlags(TraceFlags.SAMPLED))
    )
    with trace.use_span(span):
        await aclient.datasets.list()
    assert fake.calls[0].header("traceparent") == "00-1af7651916cd43dd8448eb211c80319c-17ad6b7169203331-01"


async def test_async_model_fit_trains_through_the_platform(aclient: la.AsyncClient, fake: FakePlatform) -> None:
    dataset = await aclient.datasets.upload(sales_frame(), "sales", progress=False)
    model = await la.AsyncModel(la.models.Ridge(alpha=2)).fit(dataset, progress=False)
    assert (model.model_name, model.version, model.metrics) == ("sales-ridge", 1, {"r2": 0.75, "rmse": 1.25})
    assert dict(fake.calls_to("SubmitTraining")[0].request.params) == {"alpha": "2"}


async def test_cancelling_fit_cancels_the_submitted_job(aclient: la.AsyncClient, fake: FakePlatform) -> None:
    fake.trainer.outcome = "hold"  # the job runs until cancelled
    dataset = await aclient.datasets.upload(sales_frame(), "sales", progress=False)
    model = la.AsyncModel(la.models.Ridge())
    fitting = asyncio.ensure_future(model.fit(dataset, progress=False))
    assert await asyncio.to_thread(
        fake.wait_for, lambda: any(j.state == trainer_pb2.JOB_STATE_RUNNING for j in fake.trainer.jobs.values())
    )
    fitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fitting
    assert await asyncio.to_thread(fake.wait_for, lambda: bool(fake.calls_to("CancelTrainingJob")))
    (cancel,) = fake.calls_to("CancelTrainingJob")
    assert cancel.request.job_id == model.job_id != ""
    assert fake.trainer.jobs[model.job_id].state == trainer_pb2.JOB_STATE_CANCELLED


async def test_a_closed_async_client_opens_again_on_the_next_call(fake: FakePlatform) -> None:
    client = la.AsyncClient(API_KEY, fake.url)
    assert await client.models.list() == []
    await client.close()
    assert await client.models.list() == []
    await client.close()
    assert fake.methods() == ["ListModels", "ListModels"]
