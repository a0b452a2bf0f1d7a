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


CHAMPION = "champion"
#: Versions a model page sets side by side (the newest).
SIDE_BY_SIDE = 6


@dataclass(frozen=True)
class ModelRow:
    name: str
    task: str
    latest_version: int
    champion: int | None
    aliases: dict[str, int]


@dataclass(frozen=True)
class VersionColumn:
    """One version on a model page: its metrics, the aliases pointing at it, its evaluation's plots."""

    version: int
    algorithm: str
    created: str
    status: str
    metrics: dict[str, float]
    aliases: list[str]
    plots: list[str]

    @property
    def champion(self) -> bool:
        return CHAMPION in self.aliases


@dataclass(frozen=True)
class ModelDetail:
    name: str
    task: str
    description: str
    versions: list[VersionColumn]
    total: int
    metric_names: list[str]
    champion: int | None


async def model_rows(client: la.Client) -> list[ModelRow]:
    """The tenant's registered models, by name."""
    models = await asyncio.to_thread(client.models.list)
    return [
        ModelRow(m.name, m.task, m.latest_version, m.aliases.get(CHAMPION), dict(m.aliases))
        for m in sorted(models, key=lambda m: m.name)
    ]


async def model_detail(client: la.Client, name: str) -> ModelDetail:
    """A model and its newest :data:`SIDE_BY_SIDE` versions.

    Raises:
        lepton_ai.NotFound: no such model in the key's tenant (another tenant's included).
    """
    model, versions = await asyncio.gather(
        asyncio.to_thread(client.models.get, name), asyncio.to_thread(client.models.versions, name)
    )
    newest = sorted(versions, key=lambda v: v.version, reverse=True)[:SIDE_BY_SIDE]
    by_version: dict[int, list[str]] = {}
    for alias, number in sorted(model.aliases.items()):
        by_version.setdefault(number, []).append(alias)
    columns = [
        VersionColumn(
            version=v.version,
            algorithm=v.algorithm,
            created=v.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M"),
            status=v.status,
            metrics=dict(v.metrics),
            aliases=by_version.get(v.version, []),
            plots=list(v.plots) if v.lineage.evaluation_id else [],
        )
        for v in newest
    ]
    metric_names = sorted({m for c in columns for m in c.metrics})
    return ModelDetail(
        name=model.name,
        task=model.task,
        description=model.description,
        versions=columns,
        total=len(versions),
        metric_names=metric_names,
        champion=model.aliases.get(CHAMPION),
    )


async def plot_png(client: la.Client, name: str, version: int, plot: str) -> bytes:
    """One evaluation plot of a version, as PNG.

    Raises:
        lepton_ai.NotFound: no such model, version or plot in the key's tenant.
    """
    found = await asyncio.to_thread(client.models.version, name, version)
    if plot not in found.plots or not found.lineage.evaluation_id:
        raise la.NotFound(f"{name} version {version} has no plot {plot!r}")
    return await asyncio.to_thread(client.models.plot, found.lineage.evaluation_id, plot)
