"""Checked by mypy in test_async_client.py, never run: the async surface keeps exact types.

``assert_type`` fails the check when a type is not exactly the one written (``Any``
included), and each ``type: ignore`` must be needed (``warn_unused_ignores``): a
misspelt keyword and a forgotten ``await`` stay errors. The ``reveal_type`` lines show
the twins' full signatures; the test reads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, assert_type, reveal_type

import numpy as np
import numpy.typing as npt
import polars as pl
from lepton.deployer.v1 import deployer_pb2
from lepton.registry.v1 import registry_pb2
from lepton.trainer.v1 import trainer_pb2

import lepton_ai as la


async def usage(client: la.AsyncClient, rows: Any) -> None:
    async with la.AsyncClient("key", "127.0.0.1:50051", max_workers=8) as other:
        assert_type(other, la.AsyncClient)
    assert_type(client.sync, la.Client)
    assert_type(client.endpoints, dict[str, str])

    reveal_type(client.datasets.upload)
    dataset = await client.datasets.upload("sales.csv", name="sales", progress=False)
    assert_type(dataset, la.AsyncDataset)
    assert_type(dataset.version_id, str)
    assert_type(dataset.columns, dict[str, str])
    assert_type(dataset.sync, la.Dataset)
    assert_type(await dataset.to_polars(columns=["price"], split="test"), pl.DataFrame)
    assert_type(await dataset.profile(), dict[str, dict[str, Any]])
    assert_type(await dataset.apply([{"op": "drop_nulls"}]), la.AsyncDataset)
    assert_type(await dataset.split(la.SplitSpec(seed=1)), la.SplitCounts)
    assert_type(await client.datasets.get("sales"), la.AsyncDataset)
    assert_type(await client.datasets.list(search="sa"), list[la.DatasetSummary])
    assert_type(await client.datasets.versions("sales"), list[la.AsyncDataset])
    assert_type(await client.datasets.delete("sales"), int)

    reveal_type(client.jobs.watch)
    assert_type(client.jobs.watch("job"), AsyncIterator[trainer_pb2.TrainingJob])
    async for job in client.jobs.watch("job"):
        assert_type(job, trainer_pb2.TrainingJob)
    assert_type(await client.jobs.list(state="running", limit=5), list[trainer_pb2.TrainingJob])
    assert_type(await client.models.get("m"), registry_pb2.RegisteredModel)
    assert_type(await client.models.version("m", alias="champion"), registry_pb2.ModelVersion)
    assert_type(await client.models.download("m", 1), bytes)
    async for version in client.models.search(algorithm="ridge", min_value=0.5):
        assert_type(version, registry_pb2.ModelVersion)
    assert_type(await client.deployments.get_or_none("d"), deployer_pb2.Deployment | None)
    assert_type(await client.deployments.predict("d", rows), npt.NDArray[np.float64])
    created = await client.keys.create("editor", name="ci", expires="30d", grants={"model/churn": "deployer"})
    assert_type(created, la.CreatedKey)
    assert_type(await client.keys.list(include_inactive=True), list[la.KeyInfo])
    assert_type(await client.keys.rotate(created.key, grace=timedelta(hours=1)), la.CreatedKey)
    assert_type(await client.whoami(), la.Principal)
    assert_type(await client.audit(timedelta(hours=1), resource="model/"), la.AuditTrail)
    async with client.events.subscribe("registry.>", limit=1) as events:
        async for event in events:
            assert_type(event, la.PlatformEvent)

    model = la.AsyncModel(la.models.Ridge(alpha=0.5))
    assert_type(await model.fit(dataset, model_name="sales-ridge", progress=False), la.AsyncModel)
    assert_type(await model.fit(dataset.sync), la.AsyncModel)
    assert_type(await model.predict(rows), npt.NDArray[Any])
    assert_type(await model.predict_proba(rows), npt.NDArray[np.float64])
    assert_type(await model.score(dataset), float)
    assert_type(await model.wait_deployed(60), bool)
    assert_type(model.metrics, dict[str, float])
    assert_type(model.sync, la.models.Model)

    await client.datasets.upload("sales.csv", fromat="csv")  # type: ignore[call-arg]
    await client.models.get(name=3)  # type: ignore[arg-type]
    await client.keys.create("viewer", "ci")  # type: ignore[call-arg]  # name is keyword-only
    _ = client.models.get("m").name  # type: ignore[attr-defined]
    for _ in client.jobs.watch("job"):  # type: ignore[attr-defined]
        pass
    dataset.row_count = 3  # type: ignore[misc]  # read-only: it reads through to the sync dataset
