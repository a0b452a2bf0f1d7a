"""A pipeline run's trace as a timeline across the services: ``GET /traces/{trace_id}``.

The console sees the platform only through its public APIs, so the timeline is drawn from the
trace's events (each carries the W3C trace id of the chain that published it): one row a service,
each event at its time since the first. The spans themselves are in the tracing backend the platform
exports to (docs/architecture.md); the page names the trace id to look them up there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from aiohttp import web
from markupsafe import Markup, escape

import lepton_ai as la
from lepton_console import i18n
from lepton_console.charts import SVG_NS
from lepton_console.replay import replayed

if TYPE_CHECKING:
    from lepton_console.web import Console

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
#: The replay covers this long either side of the time the link gives (the event it was followed from) ...
BEFORE = timedelta(minutes=10)
#: ... and ends when no event came for this long, or after this long in all.
QUIET_S = 0.3
TOTAL_S = 4.0
MAX_EVENTS = 400

WIDTH = 960
ROW = 34
LEFT = 110
TOP = 24
#: About how wide a character of a mark's name is drawn (11px), to keep names from running into each other.
CHAR_W = 6.2


@dataclass(frozen=True)
class Mark:
    """One event on the timeline."""

    name: str
    service: str
    subject: str
    time: datetime
    offset_s: float


def service_of(source: str) -> str:
    """``/lepton/registry`` -> ``registry``."""
    return source.rstrip("/").rsplit("/", 1)[-1] or source


async def trace_events(client: la.Client, trace_id: str, around: datetime) -> list[Mark]:
    """The tenant's events of ``trace_id``, replayed from :data:`BEFORE` ``around``, in time order."""
    found: list[la.PlatformEvent] = []
    async with aclosing(replayed(client, "", around - BEFORE, TOTAL_S, QUIET_S)) as events:
        async for event in events:
            if event.time > around + BEFORE or len(found) == MAX_EVENTS:
                break
            if event.trace_id == trace_id:
                found.append(event)
    found.sort(key=lambda e: e.time)
    start = found[0].time if found else around
    return [Mark(e.name, service_of(e.source), e.subject, e.time, (e.time - start).total_seconds()) for e in found]


def timeline_svg(marks: Sequence[Mark], t: Callable[..., str]) -> Markup:
    """One row a service (in the order they first appear), each event a dot at its offset, named beside it."""
    services = list(dict.fromkeys(m.service for m in marks))
    span = max((m.offset_s for m in marks), default=0.0) or 1.0
    height = TOP + ROW * len(services) + 22
    scale = (WIDTH - LEFT - 150) / span
    total = f"{span:.2f}"
    desc = t("trace.desc", events=len(marks), services=len(services), seconds=total)
    parts = [
        f'<svg class="timeline" id="trace-timeline" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" aria-label="{escape(t("trace.timeline"))}" aria-describedby="trace-timeline-desc" '
        f'xmlns="{SVG_NS}">',
        f"<title>{escape(t('trace.timeline'))}</title>",
        f'<desc id="trace-timeline-desc">{escape(desc)}</desc>',
    ]
    for row, service in enumerate(services):
        y = TOP + ROW * row + ROW / 2
        parts.append(f'<line class="lane" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="lane-name" x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(service)}</text>'
        )
    # A name goes above or below its lane, where the last name on that side has ended; where neither has
    # room (events a few milliseconds apart) the dot keeps its name in its tooltip and the table below.
    ends: dict[tuple[int, int], float] = {}
    for m in marks:
        x = LEFT + m.offset_s * scale
        lane = services.index(m.service)
        y = TOP + ROW * lane + ROW / 2
        parts.append(
            f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="5"><title>{escape(m.name)} +{m.offset_s:.3f} s'
            f"</title></circle>"
        )
        side = next((side for side in (0, 1) if ends.get((lane, side), 0.0) < x), None)
        if side is not None:
            ends[(lane, side)] = x + 7 + CHAR_W * len(m.name)
            lift = -7 if side == 0 else 15
            parts.append(f'<text class="mark-name" x="{x + 7:.1f}" y="{y + lift:.1f}">{escape(m.name)}</text>')
    axis = height - 8
    parts.append(f'<text class="tick" x="{LEFT}" y="{axis}">0 s</text>')
    parts.append(f'<text class="tick" x="{WIDTH - 150}" y="{axis}" text-anchor="middle">{total} s</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def add_routes(console: Console) -> None:
    """``GET /traces/{trace_id}`` (``?at=`` an ISO time near the trace, from the event that links it)."""

    async def trace(request: web.Request) -> web.Response:
        session = console._signed_in(request)
        trace_id = request.match_info["trace_id"]
        if not TRACE_ID.match(trace_id):
            return console._error(request, 404, "error.not_found")
        try:
            around = datetime.fromisoformat(request.query.get("at", "").replace("Z", "+00:00"))
        except ValueError:
            around = datetime.now(UTC)
        if around.tzinfo is None:
            around = around.replace(tzinfo=UTC)
        around = min(around, datetime.now(UTC))
        marks = await trace_events(session.client, trace_id, around)
        if not marks:  # another tenant's trace, or none: the same answer
            return console._error(request, 404, "error.not_found")
        t = i18n.translator(console._lang(request))
        return console.render(
            request,
            "trace.html",
            session,
            section="events",
            trace_id=trace_id,
            marks=marks,
            timeline=timeline_svg(marks, t),
        )

    console.app.router.add_get("/traces/{trace_id}", trace)
