"""What the pages show, fetched through the SDK with the signed-in key (on worker threads)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from markupsafe import Markup

import lepton_ai as la
from lepton_console.charts import column_chart, number
from lepton_console.graphs import Node, graph_svg
from lepton_console.replay import replayed

if TYPE_CHECKING:
    from lepton.registry.v1.registry_pb2 import LineageGraph

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
class Validation:
    """The dataset's rules and the latest version's report against them (None: not run, and why)."""

    rules: list[dict[str, Any]]
    report: la.ValidationReport | None
    refused: str = ""


@dataclass(frozen=True)
class Lineage:
    """A lineage graph and the same steps as a list (links for the keyboard and screen readers)."""

    svg: Markup
    steps: list[Node]


@dataclass(frozen=True)
class DatasetDetail:
    name: str
    versions: list[la.Dataset]
    latest: la.Dataset
    profile: list[ColumnProfile]
    validation: Validation
    lineage: Lineage | None


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
    versions, latest, summaries = await asyncio.gather(
        asyncio.to_thread(client.datasets.versions, name),
        asyncio.to_thread(client.datasets.get, name),
        asyncio.to_thread(client.datasets.list, name),
    )
    rules = next((list(d.rules) for d in summaries if d.name == latest.name), [])
    profile, validation = await asyncio.gather(asyncio.to_thread(latest.profile), _validation(latest, rules))
    columns = [
        ColumnProfile(
            name=column,
            dtype=str(stats.get("dtype", latest.columns.get(column, ""))),
            stats={k: stats[k] for k in STATS if k in stats},
            chart=column_chart(f"chart-{i}", column, stats, t),
        )
        for i, (column, stats) in enumerate(profile.items())
    ]
    return DatasetDetail(
        name=latest.name,
        versions=versions,
        latest=latest,
        profile=columns,
        validation=validation,
        lineage=dataset_lineage(latest.name, versions, t),
    )


async def _validation(latest: la.Dataset, rules: list[dict[str, Any]]) -> Validation:
    """The latest version checked against the dataset's rules, when it has any and the key's role may."""
    if not rules:
        return Validation(rules, None)
    try:
        report = await asyncio.to_thread(latest.validate)
    except la.PermissionDenied as exc:
        return Validation(rules, None, exc.message)
    return Validation(rules, report)


def _recipe_steps(recipe: dict[str, Any] | None) -> str:
    steps = (recipe or {}).get("steps", [])
    return ", ".join(str(step.get("op", step.get("type", "?"))) for step in steps if isinstance(step, dict))


def dataset_lineage(name: str, versions: list[la.Dataset], t: Callable[..., str]) -> Lineage | None:
    """How the dataset's versions came from each other (uploads, recipes, schema edits); None for one upload."""
    if len(versions) < 2 and not any(v.parent_version_id for v in versions):
        return None
    ids = {v.version_id for v in versions}
    nodes: list[Node] = []
    edges: list[tuple[str, str]] = []
    for v in versions:
        if v.parent_version_id and v.parent_version_id not in ids:  # made from another dataset's version
            ids.add(v.parent_version_id)
            nodes.append(Node(v.parent_version_id, "dataset", v.parent_version_id, t("lineage.elsewhere")))
        steps = _recipe_steps(v.recipe)
        detail = t(f"lineage.origin.{v.origin}") if v.origin in ORIGINS else v.origin
        detail = f"{detail}: {steps}" if steps else f"{detail} · {t('lineage.rows', rows=v.row_count)}"
        nodes.append(Node(v.version_id, "dataset", v.version_id, detail))
        if v.parent_version_id:
            edges.append((v.parent_version_id, v.version_id))
    desc = t("lineage.dataset_desc", name=name, versions=len(versions), derived=len(edges))
    return Lineage(graph_svg("dataset-lineage", nodes, edges, t("lineage.title"), desc), nodes)


ORIGINS = frozenset({"upload", "recipe", "schema"})


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
    #: The evaluation's headline metric and its 95% interval, when it has one.
    interval: tuple[str, float, float] | None = None

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
    decisions: list[Decision] = field(default_factory=list)
    lineage: Lineage | None = None
    lineage_version: int = 0


@dataclass(frozen=True)
class Decision:
    """One champion/challenger comparison: the new version against the champion, the decision and why."""

    version: int
    champion_version: int
    metric: str
    challenger_value: float
    champion_value: float
    difference: float
    ci_low: float
    ci_high: float
    decision: str
    reasons: list[str]
    time: str

    @property
    def interval(self) -> str:
        return f"{number(self.difference)} [{number(self.ci_low)}, {number(self.ci_high)}]"


#: The events that carry the comparisons, and how long a model page waits for their replay.
COMPARISONS = "evaluation.comparison.completed"
REPLAY_TOTAL_S = 2.0
#: The replay has caught up once no event came for this long.
REPLAY_QUIET_S = 0.25


async def decisions(client: la.Client, model: str, since: datetime) -> list[Decision]:
    """The model's comparisons since ``since``, newest first, replayed from the event stream (bounded in time:
    a slow replay gives a page with fewer decisions rather than a slow page)."""
    found: dict[int, Decision] = {}
    replay = replayed(client, COMPARISONS, since - timedelta(seconds=1), REPLAY_TOTAL_S, REPLAY_QUIET_S)
    async with aclosing(replay) as events:
        async for event in events:
            data: Any = event.data
            if data.lineage.model_name != model:
                continue
            found[data.lineage.model_version] = Decision(
                version=data.lineage.model_version,
                champion_version=data.champion_version,
                metric=data.metric,
                challenger_value=data.challenger_value,
                champion_value=data.champion_value,
                difference=data.difference,
                ci_low=data.ci_low,
                ci_high=data.ci_high,
                decision=data.decision,
                reasons=list(data.reasons),
                time=event.time.strftime("%Y-%m-%d %H:%M"),
            )
    return [found[v] for v in sorted(found, reverse=True)]


def model_lineage(graph: LineageGraph, t: Callable[..., str]) -> Lineage:
    """A version's way from the raw upload (recipes included) through its training job to its evaluations and
    deployments, from the registry's lineage."""
    v = graph.version
    version_id = f"{v.model_name}:v{v.version}"
    nodes: list[Node] = []
    edges: list[tuple[str, str]] = []
    for d in graph.datasets:
        steps = _recipe_steps(json.loads(d.recipe_json) if d.recipe_json else None)
        origin = t(f"lineage.origin.{d.origin}") if d.origin in ORIGINS else d.origin
        detail = f"{origin}: {steps}" if steps else f"{origin} · {t('lineage.rows', rows=d.row_count)}"
        nodes.append(
            Node(d.version_id, "dataset", d.dataset_name, detail, f"/datasets/{quote(d.dataset_name, safe='')}")
        )
        if d.parent_version_id:
            edges.append((d.parent_version_id, d.version_id))
    source = v.lineage.dataset_version_id
    if graph.HasField("job") and graph.job.job_id:
        job = graph.job
        nodes.append(
            Node(job.job_id, "job", job.job_id, f"{job.algorithm} · {job.state}", f"/jobs/{quote(job.job_id, safe='')}")
        )
        edges.append((source, job.job_id))
        source = job.job_id
    nodes.append(
        Node(
            version_id,
            "model",
            t("model.version_of", name=v.model_name, version=v.version),
            v.algorithm,
            f"/models/{quote(v.model_name, safe='')}",
        )
    )
    edges.append((source, version_id))
    for e in graph.evaluations:
        headline = ", ".join(f"{k} {number(val)}" for k, val in sorted(e.metrics.items())[:2])
        nodes.append(Node(e.evaluation_id, "evaluation", e.evaluation_id, headline))
        edges.append((version_id, e.evaluation_id))
    for served in graph.deployments:
        nodes.append(
            Node(
                f"deployment:{served.name}",
                "deployment",
                served.name,
                served.state,
                f"/deployments/{quote(served.name, safe='')}",
            )
        )
        edges.append((version_id, f"deployment:{served.name}"))
    desc = t(
        "lineage.model_desc",
        model=v.model_name,
        version=v.version,
        datasets=len(graph.datasets),
        evaluations=len(graph.evaluations),
        deployments=len(graph.deployments),
    )
    return Lineage(graph_svg("model-lineage", nodes, edges, t("lineage.title"), desc), nodes)


async def model_rows(client: la.Client) -> list[ModelRow]:
    """The tenant's registered models, by name."""
    models = await asyncio.to_thread(client.models.list)
    return [
        ModelRow(m.name, m.task, m.latest_version, m.aliases.get(CHAMPION), dict(m.aliases))
        for m in sorted(models, key=lambda m: m.name)
    ]


async def model_detail(client: la.Client, name: str, t: Callable[..., str], lineage_of: int = 0) -> ModelDetail:
    """A model and its newest :data:`SIDE_BY_SIDE` versions with their evaluations' intervals, its
    champion/challenger decisions, and the lineage of version ``lineage_of`` (0: the champion, else the latest).

    Raises:
        lepton_ai.NotFound: no such model or version in the key's tenant (another tenant's included).
    """
    model, versions, evaluations = await asyncio.gather(
        asyncio.to_thread(client.models.get, name),
        asyncio.to_thread(client.models.versions, name),
        asyncio.to_thread(client.models.evaluations, name),
    )
    newest = sorted(versions, key=lambda v: v.version, reverse=True)[:SIDE_BY_SIDE]
    by_version: dict[int, list[str]] = {}
    for alias, aliased in sorted(model.aliases.items()):
        by_version.setdefault(aliased, []).append(alias)
    by_id = {e.evaluation_id: e for e in evaluations}
    columns = []
    for v in newest:
        e = by_id.get(v.lineage.evaluation_id)
        interval = (e.headline_metric, e.ci_low, e.ci_high) if e is not None and e.headline_metric else None
        columns.append(
            VersionColumn(
                version=v.version,
                algorithm=v.algorithm,
                created=v.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M"),
                status=v.status,
                metrics=dict(v.metrics),
                aliases=by_version.get(v.version, []),
                plots=list(v.plots) if v.lineage.evaluation_id else [],
                interval=interval if interval is not None and interval[1] != interval[2] else None,
            )
        )
    metric_names = sorted({m for c in columns for m in c.metrics})
    shown = lineage_of or model.aliases.get(CHAMPION) or model.latest_version
    oldest = min((v.created_at.ToDatetime(tzinfo=UTC) for v in newest), default=datetime.now(UTC))
    found, graph = await asyncio.gather(
        decisions(client, model.name, oldest),
        asyncio.to_thread(client.models.lineage, name, shown) if shown else asyncio.sleep(0, None),
    )
    return ModelDetail(
        name=model.name,
        task=model.task,
        description=model.description,
        versions=columns,
        total=len(versions),
        metric_names=metric_names,
        champion=model.aliases.get(CHAMPION),
        decisions=found,
        lineage=model_lineage(graph, t) if graph is not None else None,
        lineage_version=shown,
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
