"""What the pages show, fetched through the SDK with the signed-in key (on worker threads)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

import lepton_ai as la
from lepton_console.charts import column_chart

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class DatasetRow:
    """One line of the datasets table: the summary, and its latest version's shape when it could be read."""

    summary: la.DatasetSummary
    rows: int | None
    columns: int | None


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    dtype: str
    stats: dict[str, Any]
    chart: Markup | None


@dataclass(frozen=True)
class DatasetDetail:
    name: str
    versions: list[la.Dataset]
    latest: la.Dataset
    profile: list[ColumnProfile]


async def dataset_rows(client: la.Client, search: str, concurrency: int) -> list[DatasetRow]:
    """The tenant's datasets whose names contain ``search``, each with its latest version's rows and columns."""
    summaries = await asyncio.to_thread(client.datasets.list, search)
    gate = asyncio.Semaphore(concurrency)

    async def row(summary: la.DatasetSummary) -> DatasetRow:
        if not summary.latest_version_id:
            return DatasetRow(summary, None, None)
        async with gate:
            try:
                latest = await asyncio.to_thread(client.datasets.get, summary.latest_version_id)
            except la.NotFound:  # deleted since it was listed
                return DatasetRow(summary, None, None)
        return DatasetRow(summary, latest.row_count, len(latest.columns))

    return list(await asyncio.gather(*(row(s) for s in summaries)))


STATS = ("count", "nulls", "distinct", "min", "max", "mean", "std")


async def dataset_detail(client: la.Client, name: str, t: Callable[..., str]) -> DatasetDetail:
    """A dataset's versions, and its latest version's schema and profile with a chart a column.

    Raises:
        lepton_ai.NotFound: no such dataset in the key's tenant (another tenant's included).
    """
    versions, latest = await asyncio.gather(
        asyncio.to_thread(client.datasets.versions, name), asyncio.to_thread(client.datasets.get, name)
    )
    profile = await asyncio.to_thread(latest.profile)
    columns = [
        ColumnProfile(
            name=column,
            dtype=str(stats.get("dtype", latest.columns.get(column, ""))),
            stats={k: stats[k] for k in STATS if k in stats},
            chart=column_chart(f"chart-{i}", column, stats, t),
        )
        for i, (column, stats) in enumerate(profile.items())
    ]
    return DatasetDetail(name=latest.name, versions=versions, latest=latest, profile=columns)
