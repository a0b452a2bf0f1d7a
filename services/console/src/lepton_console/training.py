"""Training jobs as the console shows them: a job's state, and its loss curve rebuilt from the job's
``training.progress`` events (the job itself carries only its latest metrics)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from markupsafe import Markup

import lepton_ai as la
from lepton_ai.jobs import state_name
from lepton_console.charts import curve_svg, number

if TYPE_CHECKING:
    from lepton.trainer.v1.trainer_pb2 import TrainingJob

#: Events whose names match this follow a job (``training.requested`` is the work queue's, not the stream's).
PATTERN = "training.*"
#: The events after which a job changes no more.
FINAL = frozenset({"training.completed", "training.failed", "training.cancelled"})
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
CANCELLABLE = frozenset({"queued", "running"})
#: Progress metrics that count epochs rather than measure the model.
COUNTERS = frozenset({"epoch", "epochs"})


def _when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class JobView:
    """What a page shows of a ``TrainingJob``."""

    job_id: str
    model_name: str
    algorithm: str
    state: str
    stage: str
    progress: float
    created: str
    created_at: datetime
    error: str
    kind: str

    @classmethod
    def of(cls, job: TrainingJob) -> JobView:
        created = job.created_at.ToDatetime(tzinfo=UTC)
        state = state_name(job.state)
        return cls(
            job_id=job.job_id,
            model_name=job.model_name,
            algorithm=job.algorithm,
            state=state,
            stage=job.stage,
            progress=1.0 if state == "succeeded" else job.progress,
            created=_when(created),
            created_at=created,
            error=job.error,
            kind=job.kind,
        )

    @property
    def percent(self) -> str:
        return f"{self.progress:.0%}"

    @property
    def live(self) -> bool:
        return self.state not in TERMINAL


def concerns(event: la.PlatformEvent, job_id: str) -> bool:
    """Whether ``event`` is about the job ``job_id``."""
    lineage = getattr(event.data, "lineage", None)
    return event.subject == job_id or (lineage is not None and lineage.training_job_id == job_id)


@dataclass
class JobCurve:
    """A job's metrics per epoch, from its progress events (a replay repeats none: each event counts once)."""

    job_id: str
    series: dict[str, dict[float, float]] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def add(self, event: la.PlatformEvent) -> None:
        if event.name != "training.progress" or event.id in self._seen or not concerns(event, self.job_id):
            return
        self._seen.add(event.id)
        epoch = event.data.epoch  # type: ignore[attr-defined]
        if not epoch:
            return  # a stage ("loading data"), not an epoch
        for name, value in sorted(event.data.metrics.items()):  # type: ignore[attr-defined]
            if name not in COUNTERS:
                self.series.setdefault(name, {})[float(epoch)] = float(value)

    def svg(self, t: Callable[..., str]) -> Markup | None:
        """The curve (``svg#job-curve``), or None before the first epoch."""
        if not self.series:
            return None
        losses = {name: points for name, points in self.series.items() if name.endswith("loss")}
        lines = {name: sorted(points.items()) for name, points in (losses or self.series).items()}
        epochs = sorted({x for line in lines.values() for x, _ in line})
        last = ", ".join(f"{name} {number(line[-1][1])}" for name, line in lines.items())
        desc = t("job.curve_desc", epochs=len(epochs), names=", ".join(lines), last=last)
        labels = (t("job.epoch", epoch=f"{epochs[0]:g}"), t("job.epoch", epoch=f"{epochs[-1]:g}"))
        return curve_svg("job-curve", lines, t("job.curve"), desc, labels)


def update(view: JobView | None, curve: JobCurve, event: la.PlatformEvent | None, t: Callable[..., str]) -> bytes:
    """One server-sent event for the job page: its state (when ``view`` is given), the latest progress
    (from ``event``, a progress event) and the curve's SVG."""
    body: dict[str, object] = {}
    progress: float | None = None
    if view is not None:
        body |= {"state": view.state, "state_label": t(f"job.state.{view.state}"), "stage": view.stage}
        body["done"] = not view.live
        progress = view.progress
    if event is not None and event.name == "training.progress":
        data = event.data
        body["stage"] = data.stage  # type: ignore[attr-defined]
        progress = float(data.progress)  # type: ignore[attr-defined]
    if progress is not None:
        body |= {"progress": progress, "percent": f"{progress:.0%}"}
    chart = curve.svg(t)
    if chart is not None:
        body["curve"] = str(chart)
    return f"data: {json.dumps(body)}\n\n".encode()


async def replay(client: la.Client, job: JobView, curve: JobCurve, timeout: float) -> None:
    """Fills ``curve`` from the events of a job that has ended (its last event ends the replay), within ``timeout``."""
    stream = client.events.subscribe(PATTERN, since=job.created_at - timedelta(seconds=1))
    try:
        async with asyncio.timeout(timeout), stream:
            async for event in stream:
                curve.add(event)
                if event.name in FINAL and concerns(event, job.job_id):
                    break
    except TimeoutError:
        pass  # a page without its curve rather than a slow page
