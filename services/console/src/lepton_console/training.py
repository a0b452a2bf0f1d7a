"""Training jobs as the console shows them: a job's state, and its loss curve rebuilt from the job's
``training.progress`` events (the job itself carries only its latest metrics)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

import lepton_ai as la
from lepton_ai.jobs import state_name
from lepton_console.charts import bars_svg, curve_svg, number
from lepton_console.replay import replayed

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
class TrialView:
    """One candidate of a hyper-parameter search."""

    job_id: str
    params: dict[str, str]
    state: str
    score: float | None
    error: str


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
    target: str = ""
    params: dict[str, str] = field(default_factory=dict)
    trials: list[TrialView] = field(default_factory=list)
    best_trial_id: str = ""
    search_metric: str = ""

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
            target=job.target,
            params=dict(job.params),
            trials=[
                TrialView(
                    job_id=trial.job_id,
                    params=dict(trial.params),
                    state=state_name(trial.state),
                    score=trial.score if trial.HasField("score") else None,
                    error=trial.error,
                )
                for trial in job.trials
            ],
            best_trial_id=job.best_trial_id,
            search_metric=job.search_metric,
        )

    @property
    def trial_params(self) -> list[str]:
        """The parameters the trials differ in (their columns, side by side)."""
        return sorted({name for trial in self.trials for name in trial.params})

    @property
    def percent(self) -> str:
        return f"{self.progress:.0%}"

    @property
    def live(self) -> bool:
        return self.state not in TERMINAL


PARAM = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def parse_params(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``"alpha=0.1|1|10, fit_intercept=false"`` -> the fixed parameters (``{"fit_intercept": "false"}``) and
    a grid search's space (``{"alpha": ["0.1", "1", "10"]}``); the platform checks each value.

    Raises:
        ValueError: a piece that is not ``name=value`` (or ``name=a|b``), naming it.
    """
    params: dict[str, str] = {}
    space: dict[str, list[str]] = {}
    for piece in filter(None, (p.strip() for p in re.split(r"[,\n]", text))):
        name, sep, value = piece.partition("=")
        name, values = name.strip(), [v.strip() for v in value.split("|")]
        if not sep or not PARAM.match(name) or not all(values):
            raise ValueError(f"expected name=value (or name=a|b|c to search) pairs separated by commas, got {piece!r}")
        if len(values) > 1:
            space[name] = values
        else:
            params[name] = values[0]
    return params, space


def job_of(event: la.PlatformEvent) -> str:
    """The job a ``training.*`` event is about ("" for none)."""
    lineage = getattr(event.data, "lineage", None)
    job_id = lineage.training_job_id if lineage is not None else ""
    return job_id or (event.subject if event.subject.startswith("job_") else "")


def list_update(job_id: str, progress: float, view: JobView | None, t: Callable[..., str]) -> bytes:
    """One server-sent event for the jobs list: a job's progress, and (with ``view``) its whole row."""
    body: dict[str, object] = {"job_id": job_id, "progress": progress, "percent": f"{progress:.0%}"}
    if view is not None:
        body |= {
            "model": view.model_name or "\u2013",  # the dash the page shows for nothing
            "algorithm": view.algorithm,
            "state": view.state,
            "state_label": t(f"job.state.{view.state}"),
            "created": view.created,
            "created_iso": view.created_at.isoformat(),
        }
    return f"data: {json.dumps(body)}\n\n".encode()


def concerns(event: la.PlatformEvent, job_id: str) -> bool:
    """Whether ``event`` is about the job ``job_id``."""
    lineage = getattr(event.data, "lineage", None)
    return event.subject == job_id or (lineage is not None and lineage.training_job_id == job_id)


#: Lines a job's log keeps (the newest).
LOG_LINES = 200


@dataclass(frozen=True)
class LogLine:
    time: str
    text: str


def log_line(event: la.PlatformEvent, t: Callable[..., str]) -> LogLine | None:
    """What one of a job's events says, as a line of its log (None for events that say nothing new)."""
    data: Any = event.data
    if event.name == "training.queued":
        text = t("job.log.queued")
    elif event.name == "training.started":
        text = t("job.log.started", worker=data.worker_id, attempt=data.attempt)
    elif event.name == "training.progress":
        metrics = ", ".join(f"{k} {number(v)}" for k, v in sorted(data.metrics.items()) if k not in COUNTERS)
        text = f"{data.stage} · {metrics}" if metrics else data.stage
    elif event.name == "training.completed":
        text = t("job.log.completed")
    elif event.name == "training.failed":
        text = t("job.log.failed", reason=data.reason)
    elif event.name == "training.cancelled":
        text = t("job.log.cancelled")
    else:
        return None
    return LogLine(event.time.strftime("%H:%M:%S"), text)


@dataclass
class JobCurve:
    """A job's metrics per epoch and its log, from its events (a replay repeats none: each event counts once)."""

    job_id: str
    series: dict[str, dict[float, float]] = field(default_factory=dict)
    log: list[LogLine] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def add(self, event: la.PlatformEvent, t: Callable[..., str]) -> LogLine | None:
        """Takes one event; returns the line it adds to the log, if any."""
        if event.id in self._seen or not concerns(event, self.job_id):
            return None
        self._seen.add(event.id)
        line = log_line(event, t)
        if line is not None:
            self.log = [*self.log[-(LOG_LINES - 1) :], line]
        if event.name == "training.progress":
            self._epoch(event)
        return line

    def _epoch(self, event: la.PlatformEvent) -> None:
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


def update(
    view: JobView | None,
    curve: JobCurve,
    event: la.PlatformEvent | None,
    t: Callable[..., str],
    line: LogLine | None = None,
) -> bytes:
    """One server-sent event for the job page: its state (when ``view`` is given), the latest progress
    (from ``event``, a progress event), the curve's SVG and the line the event adds to the log."""
    body: dict[str, object] = {}
    if line is not None:
        body["log"] = {"time": line.time, "text": line.text}
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


async def replay(client: la.Client, job: JobView, curve: JobCurve, timeout: float, t: Callable[..., str]) -> None:
    """Fills ``curve`` from the events of a job that has ended (its last event ends the replay), within ``timeout``."""
    async with aclosing(replayed(client, PATTERN, job.created_at - timedelta(seconds=1), timeout)) as events:
        async for event in events:
            curve.add(event, t)
            if event.name in FINAL and concerns(event, job.job_id):
                break


def scores_svg(job: JobView, t: Callable[..., str]) -> Markup | None:
    """A search's trial scores as bars (``svg#trial-scores``, in the trials' order), or None for other jobs."""
    scored = [trial for trial in job.trials if trial.score is not None]
    if job.kind != "search" or not scored:
        return None
    best = max(scored, key=lambda trial: trial.score or 0.0)
    desc = t(
        "job.scores_desc",
        trials=len(scored),
        metric=job.search_metric,
        best=number(best.score or 0.0),
        params=", ".join(f"{k}={v}" for k, v in sorted(best.params.items())),
    )
    # Scores can be negative (r2): the bars start at the lowest, so the differences show.
    low = min(trial.score or 0.0 for trial in scored)
    heights = [round(((trial.score or 0.0) - low) * 1000) + 1 for trial in scored]
    labels = (t("job.trial", n=1), t("job.trial", n=len(scored)))
    return bars_svg("trial-scores", heights, t("job.scores", metric=job.search_metric), desc, labels)
