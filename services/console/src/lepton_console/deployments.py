"""The deployments pages: the tenant's deployments and a form that deploys a model version; a deployment's
state, routes and canary weights, hosts, rollout history and Triton statistics, followed live (its
``deployment.*`` events); rolling it back; and a "try it" form that sends pasted rows for predictions.

Everything goes through the SDK with the signed-in key (``client.deployments``), on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import numpy as np
import polars as pl
from aiohttp import web
from google.protobuf.empty_pb2 import Empty
from markupsafe import Markup, escape

import lepton_ai as la
from lepton_console.charts import SVG_NS
from lepton_console.responses import redirect, sign_in_first

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp
    from lepton.deployer.v1.deployer_pb2 import Deployment, DeploymentStatus

    from lepton_console.sessions import Session
    from lepton_console.web import Console, Relayed

Translate = Callable[..., str]

#: What a cell shows for nothing (an en dash, as the other pages).
NONE = "\u2013"

#: The events that follow a deployment (``*`` is one name part; ``rollout.started`` has two).
PATTERN = "deployment.>"
#: After this event, the deployment is gone: its stream ends.
GONE = "deployment.deleted"
#: The platform's grammar for names (docs/architecture.md, "Names and ids").
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
STATES = ("unspecified", "loading", "ready", "failed", "rolling_out")
#: States in which a rollout is under way.
MOVING = frozenset({"loading", "rolling_out"})
STRATEGIES = ("all_at_once", "canary")
OUTCOMES = ("completed", "rolled_back", "failed")
#: The most the try-it form takes.
MAX_TRY_BYTES = 64 * 1024
MAX_TRY_ROWS = 1000
#: How far before a deployment's last change its page's stream replays events (so none is missed
#: between the page and its stream).
REPLAY = timedelta(seconds=5)
#: While a rollout moves, its page's stream re-reads the deployment this often: a canary's steps
#: change its weights without an event.
TICK_S = 1.0
#: The name of the stream's own reminder to re-read (never a platform event's name).
TICK = "console.tick"


class FormError(Exception):
    """Input a form cannot take: a message key of the catalogue and its fields."""

    def __init__(self, key: str, **fields: object) -> None:
        super().__init__(key)
        self.key = key
        self.fields = fields

    def text(self, t: Translate) -> str:
        return t(self.key, **{k: (v(t) if callable(v) else v) for k, v in self.fields.items()})


def state_name(state: int) -> str:
    """A ``DeploymentState`` as the pages spell it (``"rolling_out"``)."""
    return STATES[state] if 0 <= state < len(STATES) else "unspecified"


def _when(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return NONE
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _label(t: Translate, prefix: str, value: str, known: Sequence[str]) -> str:
    return t(prefix + value) if value in known else value or NONE


def _percent(weight: float) -> str:
    return f"{weight:.0%}" if weight * 100 == round(weight * 100) else f"{weight:.1%}"


# -- what the pages show -------------------------------------------------------


@dataclass(frozen=True)
class DeploymentRow:
    """One line of the deployments table."""

    name: str
    model_name: str
    versions: str
    state: str
    hosts: str
    updated: str


def served_versions(d: Deployment) -> list[int]:
    """The model versions the deployment's routes send traffic to (its stable one when it has no routes)."""
    versions = sorted({r.model_version for r in d.routes if r.model_version})
    return versions or ([d.lineage.model_version] if d.lineage.model_version else [])


def deployment_row(d: Deployment) -> DeploymentRow:
    versions = ", ".join(str(v) for v in served_versions(d))
    if d.target_version and d.target_version not in served_versions(d):
        versions = f"{versions} → {d.target_version}" if versions else f"→ {d.target_version}"
    return DeploymentRow(
        name=d.name,
        model_name=d.lineage.model_name,
        versions=versions or NONE,
        state=state_name(d.state),
        hosts=", ".join(d.hosts) or NONE,
        updated=_when(d.updated_at),
    )


@dataclass(frozen=True)
class DeploymentPage:
    """What a deployment's page shows, its cells already in words (the live updates send the same)."""

    name: str
    state: str
    state_label: str
    model_name: str
    model_version: int
    target_version: int
    strategy: str
    backend: str
    error: str
    updated: str
    feature_columns: list[str]
    text_columns: list[str]
    routes: list[list[str]]
    hosts: list[list[str]]
    history: list[list[str]]
    stats: list[list[str]]
    warnings: list[str]
    weights: Markup | None

    @property
    def live(self) -> bool:
        return self.state in MOVING

    @property
    def columns(self) -> list[str]:
        return [*self.feature_columns, *self.text_columns]

    def update(self) -> bytes:
        """One server-sent event for the page: its state, routes, weights, hosts, history and statistics."""
        body = {
            "state": self.state,
            "state_label": self.state_label,
            "live": self.live,
            "error": self.error,
            "updated": self.updated,
            "version": str(self.model_version or NONE),
            "target": str(self.target_version) if self.target_version else NONE,
            "weights": str(self.weights) if self.weights is not None else "",
            "tables": {"routes": self.routes, "hosts": self.hosts, "history": self.history, "stats": self.stats},
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    @classmethod
    def of(cls, status: DeploymentStatus, t: Translate) -> DeploymentPage:
        d = status.deployment
        state = state_name(d.state)
        routes = [
            [str(r.model_version), r.triton_model, r.triton_version, _percent(r.weight)]
            for r in sorted(d.routes, key=lambda r: -r.weight)
        ]
        ready, not_ready = t("deployment.ready"), t("deployment.not_ready")
        hosts = [
            [h.url, ", ".join(str(v) for v in h.versions) or NONE, ready if h.ready else not_ready, h.error or NONE,
             _when(h.checked_at)]
            for h in d.host_states
        ]  # fmt: skip
        history = [
            [
                _when(r.started_at),
                str(r.from_version or NONE),
                str(r.to_version),
                _label(t, "deployment.strategy.", r.strategy, STRATEGIES),
                _label(t, "deployment.outcome.", r.outcome, OUTCOMES),
                r.reason or NONE,
                f"{r.seconds:.1f}",
            ]
            for r in reversed(d.history)
        ]
        stats = [
            [
                s.host,
                s.triton_version,
                ready if s.ready else not_ready,
                str(s.inference_count),
                str(s.execution_count),
                str(s.success_count),
                str(s.failure_count),
                f"{s.avg_queue_us:.0f}",
                f"{s.avg_compute_us:.0f}",
                f"{s.avg_request_us:.0f}",
            ]
            for s in status.statistics
        ]
        return cls(
            name=d.name,
            state=state,
            state_label=t(f"deployment.state.{state}"),
            model_name=d.lineage.model_name,
            model_version=d.lineage.model_version,
            target_version=d.target_version,
            strategy=_label(t, "deployment.strategy.", d.strategy, STRATEGIES),
            backend=d.backend,
            error=d.error,
            updated=_when(d.updated_at),
            feature_columns=list(d.feature_columns),
            text_columns=list(d.text_columns),
            routes=routes,
            hosts=hosts,
            history=history,
            stats=stats,
            warnings=list(status.warnings),
            weights=weights_svg("deployment-weights", [(r.model_version, r.weight) for r in d.routes], t),
        )


BAR_WIDTH = 640
BAR_HEIGHT = 56
SERIES = 4


def weights_svg(chart_id: str, routes: Sequence[tuple[int, float]], t: Translate) -> Markup | None:
    """The routes' shares of traffic as one stacked bar, a version's name and share under each part;
    None when nothing is routed."""
    total = sum(w for _, w in routes)
    if not routes or total <= 0:
        return None
    ranked = sorted(routes, key=lambda r: -r[1])
    shares = ", ".join(t("deployment.share", version=v, percent=_percent(w / total)) for v, w in ranked)
    title, desc = t("deployment.weights"), t("deployment.weights_desc", shares=shares)
    parts = [
        f'<svg class="chart weights" id="{escape(chart_id)}" role="img" viewBox="0 0 {BAR_WIDTH} {BAR_HEIGHT}" '
        f'width="{BAR_WIDTH}" height="{BAR_HEIGHT}" aria-label="{escape(title)}" '
        f'aria-describedby="{escape(chart_id)}-desc" xmlns="{SVG_NS}">',
        f"<title>{escape(title)}</title>",
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]
    x = 0.0
    for i, (version, weight) in enumerate(ranked):
        width = BAR_WIDTH * weight / total
        label = t("deployment.share", version=version, percent=_percent(weight / total))
        parts.append(
            f'<rect class="share series-{i % SERIES}" x="{x:.1f}" y="2" width="{max(width - 1, 1):.1f}" height="28">'
            f"<title>{escape(label)}</title></rect>"
        )
        anchor, at = ("end", BAR_WIDTH - 2) if x + width >= BAR_WIDTH - 1 and i else ("start", x + 2)
        parts.append(
            f'<text class="tick share-label" x="{at:.1f}" y="{BAR_HEIGHT - 8}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
        x += width
    parts.append("</svg>")
    return Markup("".join(parts))


# -- the deploy form -------------------------------------------------------------


@dataclass(frozen=True)
class DeployAsk:
    """A deploy form, checked: what to call ``client.deployments.deploy`` with."""

    name: str
    model_name: str
    version: int
    alias: str
    strategy: str


def deploy_ask(form: dict[str, str]) -> DeployAsk:
    """The deploy form's values, or :class:`FormError` saying which one is wrong and why."""
    name = form.get("name", "").strip()
    model = form.get("model", "").strip()
    version = form.get("version", "").strip()
    strategy = form.get("strategy", "").strip()
    if not name:
        raise FormError("deploy.error.no_name")
    if not NAME.fullmatch(name) or "--" in name:
        raise FormError("deploy.error.bad_name", name=name)
    if not model:
        raise FormError("deploy.error.no_model")
    if not NAME.fullmatch(model) or "--" in model:
        raise FormError("deploy.error.bad_model", name=model)
    number_, alias = 0, ""
    if version.isdigit() and version.isascii():
        number_ = int(version)
        if not 1 <= number_ < 2**63:
            raise FormError("deploy.error.bad_version", version=version)
    elif version:
        if not NAME.fullmatch(version) or "--" in version:
            raise FormError("deploy.error.bad_version", version=version)
        alias = version
    if strategy not in ("", *STRATEGIES):
        raise FormError("deploy.error.bad_strategy")
    return DeployAsk(name, model, number_, alias, "" if strategy == "all_at_once" else strategy)


# -- the try-it form -------------------------------------------------------------


@dataclass(frozen=True)
class Tried:
    """Rows sent through the try-it form and what the deployment predicted for each."""

    columns: list[str]
    rows: list[list[str]]
    predictions: list[list[float]]

    @property
    def lines(self) -> list[tuple[list[str], list[float]]]:
        return list(zip(self.rows, self.predictions, strict=True))


def _line(n: int) -> Callable[[Translate], str]:
    return lambda t: t("try.where_line", line=n)


def _row(n: int) -> Callable[[Translate], str]:
    return lambda t: t("try.where_row", row=n)


def parse_rows(text: str, feature_columns: Sequence[str], text_columns: Sequence[str]) -> pl.DataFrame:
    """Pasted rows (CSV with a header row, or a JSON array of objects) as a frame of the deployment's
    columns in order: numbers for ``feature_columns``, strings for ``text_columns``; other columns are
    dropped. Raises :class:`FormError` naming the line (CSV) or row (JSON) and column at fault."""
    if len(text.encode()) > MAX_TRY_BYTES:
        raise FormError("try.error.too_big", kib=MAX_TRY_BYTES // 1024)
    text = text.strip()
    if not text:
        raise FormError("try.error.empty")
    columns = [*feature_columns, *text_columns]
    records = _json_records(text) if text.startswith(("[", "{")) else _csv_records(text, columns)
    if not records:
        raise FormError("try.error.no_rows")
    if len(records) > MAX_TRY_ROWS:
        raise FormError("try.error.too_many", rows=len(records), most=MAX_TRY_ROWS)
    numbers: dict[str, list[float]] = {c: [] for c in feature_columns}
    texts: dict[str, list[str]] = {c: [] for c in text_columns}
    for where, record in records:
        missing = [c for c in (*feature_columns, *text_columns) if c not in record]
        if missing:
            raise FormError("try.error.missing", where=where, columns=", ".join(missing))
        for column in feature_columns:
            numbers[column].append(_number(record[column], where, column))
        for column in text_columns:
            value = record[column]
            if isinstance(value, dict | list):
                raise FormError("try.error.not_text", where=where, column=column)
            texts[column].append("" if value is None else str(value))
    return pl.DataFrame(
        {**{c: pl.Series(c, v, dtype=pl.Float64) for c, v in numbers.items()},
         **{c: pl.Series(c, v, dtype=pl.String) for c, v in texts.items()}}
    )  # fmt: skip


def _number(value: object, where: Callable[[Translate], str], column: str) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise FormError("try.error.not_number", where=where, column=column, value=_shown(value))
    if isinstance(value, int | float):
        number_ = float(value)
    elif isinstance(value, str):
        try:
            number_ = float(value.strip())
        except ValueError:
            raise FormError("try.error.not_number", where=where, column=column, value=_shown(value)) from None
    else:
        raise FormError("try.error.not_number", where=where, column=column, value=_shown(value))
    if not math.isfinite(number_):
        raise FormError("try.error.not_number", where=where, column=column, value=_shown(value))
    return number_


def _shown(value: object) -> str:
    shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return shown if len(shown) <= 40 else shown[:39] + "…"


def _csv_records(text: str, columns: Sequence[str]) -> list[tuple[Callable[[Translate], str], dict[str, object]]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error):
        raise FormError("try.error.empty") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise FormError("try.error.header", columns=", ".join(missing), expected=", ".join(columns))
    records: list[tuple[Callable[[Translate], str], dict[str, object]]] = []
    try:
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue  # a blank line
            if len(records) >= MAX_TRY_ROWS:
                raise FormError("try.error.too_many_csv", most=MAX_TRY_ROWS)
            if len(values) != len(header):
                where = _line(reader.line_num)
                raise FormError("try.error.width", where=where, count=len(values), expected=len(header))
            records.append((_line(reader.line_num), dict(zip(header, values, strict=True))))
    except csv.Error as exc:
        raise FormError("try.error.csv", where=_line(reader.line_num), error=str(exc)) from None
    return records


def _json_records(text: str) -> list[tuple[Callable[[Translate], str], dict[str, object]]]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormError("try.error.json", line=exc.lineno, column=exc.colno, error=exc.msg) from None
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list):
        raise FormError("try.error.json_shape")
    records: list[tuple[Callable[[Translate], str], dict[str, object]]] = []
    for i, item in enumerate(parsed, start=1):
        if not isinstance(item, dict):
            raise FormError("try.error.json_row", where=_row(i))
        records.append((_row(i), item))
    return records


def _cell(value: object) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def tried(frame: pl.DataFrame, predictions: Any) -> Tried:
    """The rows as the page shows them, each beside its prediction(s)."""
    values = np.asarray(predictions, dtype=np.float64)
    rows = frame.height
    per_row = values.reshape(rows, -1) if rows and values.size % rows == 0 else values.reshape(1, -1)
    shown = [[_cell(v) for v in r] for r in frame.rows()]
    return Tried(list(frame.columns), shown, [[float(p) for p in line] for line in per_row])


# -- routes ------------------------------------------------------------------------


def _page_of(name: str) -> str:
    return f"/deployments/{quote(name, safe='')}"


@dataclass
class TryForm:
    """The try-it form as the page shows it: what was typed, what was wrong, what came back."""

    text: str = ""
    error: str = ""
    result: Tried | None = None


def add_routes(console: Console) -> None:
    """Adds the deployments pages' routes to ``console.app``."""

    def translator(request: web.Request) -> Translate:
        from lepton_console import i18n

        return i18n.translator(console._lang(request))

    async def render_list(
        request: web.Request, session: Session, status: int = 200, form: dict[str, str] | None = None, error: str = ""
    ) -> web.Response:
        client = session.client
        found, models = await asyncio.gather(
            asyncio.to_thread(client.deployments.list), asyncio.to_thread(client.models.list)
        )
        rows = [deployment_row(d) for d in sorted(found, key=lambda d: d.name)]
        return console.render(
            request,
            "deployments.html",
            session,
            status,
            section="deployments",
            rows=rows,
            models=sorted(m.name for m in models),
            form=form or {},
            error=error,
            strategies=STRATEGIES,
        )

    async def listing(request: web.Request) -> web.Response:
        return await render_list(request, console._signed_in(request))

    async def deploy(request: web.Request) -> web.Response:
        form = await console._checked_form(request)
        session = console._signed_in(request)
        t = translator(request)
        kept = {k: form.get(k, "")[:200] for k in ("name", "model", "version", "strategy")}
        try:
            ask = deploy_ask(form)
        except FormError as exc:
            return await render_list(request, session, 400, kept, exc.text(t))
        try:
            await asyncio.to_thread(
                session.client.deployments.deploy,
                ask.name,
                ask.model_name,
                ask.version,
                alias=ask.alias,
                strategy=ask.strategy,
                wait=False,
            )
        except (la.InvalidArgument, la.FailedPrecondition, la.NotFound, la.ResourceExhausted) as exc:
            return await render_list(request, session, 400, kept, t("deploy.refused", reason=exc.message))
        except la.PermissionDenied as exc:
            return await render_list(request, session, 403, kept, t("deploy.refused", reason=exc.message))
        return redirect(_page_of(ask.name))

    async def render_detail(
        request: web.Request, status: int = 200, refusal: str = "", trying: TryForm | None = None
    ) -> web.Response:
        session = console._signed_in(request)
        t = translator(request)
        found = await asyncio.to_thread(session.client.deployments.status, request.match_info["name"])
        page = DeploymentPage.of(found, t)
        trying = trying or TryForm()
        return console.render(
            request,
            "deployment.html",
            session,
            status,
            section="deployments",
            d=page,
            refusal=refusal,
            trying=trying,
            example=",".join(page.columns),
            most_rows=MAX_TRY_ROWS,
            most_kib=MAX_TRY_BYTES // 1024,
        )

    async def detail(request: web.Request) -> web.Response:
        return await render_detail(request)

    async def rollback(request: web.Request) -> web.Response:
        await console._checked_form(request)
        session = console._signed_in(request)
        name = request.match_info["name"]
        t = translator(request)
        try:
            await asyncio.to_thread(session.client.deployments.rollback, name, False)
        except la.PermissionDenied as exc:
            return await render_detail(request, 403, t("deployment.refused", reason=exc.message))
        except la.FailedPrecondition as exc:
            return await render_detail(request, 409, t("deployment.refused", reason=exc.message))
        return redirect(_page_of(name))

    async def predict(request: web.Request) -> web.Response:
        form = await console._checked_form(request)
        session = console._signed_in(request)
        name = request.match_info["name"]
        t = translator(request)
        text = form.get("rows", "")
        client = session.client
        d = await asyncio.to_thread(client.deployments.get, name)
        try:
            frame = parse_rows(text, list(d.feature_columns), list(d.text_columns))
        except FormError as exc:
            kept = text if len(text) <= MAX_TRY_BYTES else ""
            return await render_detail(request, 400, trying=TryForm(kept, exc.text(t)))
        try:
            predictions = await asyncio.to_thread(client.deployments.predict, name, frame)
        except (la.InvalidArgument, la.FailedPrecondition) as exc:
            return await render_detail(request, 400, trying=TryForm(text, t("try.error.refused", reason=exc.message)))
        return await render_detail(request, trying=TryForm(text, "", tried(frame, predictions)))

    async def stream(request: web.Request) -> web.StreamResponse:
        """Server-sent events for a deployment's page: on each of its ``deployment.*`` events (replayed
        from just before its last change), the deployment as it is now."""
        session = console._session(request)
        if session is None:
            return sign_in_first()
        t = translator(request)
        client = session.client
        name = request.match_info["name"]
        first = await asyncio.to_thread(client.deployments.get, name)  # NotFound: 404 before any stream
        moving = state_name(first.state) in MOVING
        sent = b""

        async def relayed(event: la.PlatformEvent) -> Relayed:
            nonlocal moving, sent
            if event.name != TICK and not concerns(event, name):
                return None, False
            if event.name == GONE:
                return b'data: {"gone": true}\n\n', True
            try:
                now = DeploymentPage.of(await asyncio.to_thread(client.deployments.status, name), t)
            except la.NotFound:  # deleted: its event follows
                return None, False
            moving = now.live
            message = now.update()
            if message == sent:
                return None, False  # nothing changed since the last update
            sent = message
            return message, False

        since = first.updated_at.ToDatetime(tzinfo=UTC) - REPLAY
        events = Ticking(client.events.subscribe(PATTERN, since=since), name, lambda: moving)
        return await console._relay(request, session, cast("la.EventStream", events), relayed)

    r = console.app.router
    r.add_get("/deployments", listing)
    r.add_post("/deployments", deploy)
    r.add_get("/deployments/{name}", detail)
    r.add_get("/deployments/{name}/stream", stream)
    r.add_post("/deployments/{name}/rollback", rollback)
    r.add_post("/deployments/{name}/predict", predict)


def concerns(event: la.PlatformEvent, name: str) -> bool:
    """Whether ``event`` is about the deployment ``name`` (its subject, or its lineage's deployment)."""
    if not event.name.startswith("deployment."):
        return False
    lineage = getattr(event.data, "lineage", None)
    return event.subject == name or (lineage is not None and lineage.deployment == name)


class Ticking:
    """An event stream that, while ``moving()`` says a rollout moves, adds a :data:`TICK` event each
    :data:`TICK_S` without one from the platform (closing it closes the stream it wraps)."""

    def __init__(self, stream: la.EventStream, subject: str, moving: Callable[[], bool]) -> None:
        self._stream = stream
        self._subject = subject
        self._moving = moving

    async def __aenter__(self) -> Ticking:
        await self._stream.__aenter__()
        return self

    def __aiter__(self) -> AsyncIterator[la.PlatformEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[la.PlatformEvent]:
        events = self._stream.__aiter__()
        pending: asyncio.Future[la.PlatformEvent] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=TICK_S if self._moving() else None)
                if not done:
                    yield self._tick()
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return
                finally:
                    pending = None
                yield event
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending

    def _tick(self) -> la.PlatformEvent:
        return la.PlatformEvent(
            id="", type="", name=TICK, source="", time=datetime.now(UTC), subject=self._subject, trace_id="",
            tenant="", data=Empty(),
        )  # fmt: skip

    def close(self) -> None:
        self._stream.close()

    async def aclose(self) -> None:
        await self._stream.aclose()
