"""The training pages: the jobs list and its form that starts a training (or a search), and a job's page
with its progress, curve, trials and log, followed live (``/jobs/<id>/stream``) until the job ends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

import lepton_ai as la
from lepton_console import i18n, training
from lepton_console.responses import redirect, sign_in_first

if TYPE_CHECKING:
    from lepton_console.web import Console, Relayed

#: How long a finished job's page waits for its replayed events (its curve) before it renders without.
REPLAY_S = 3.0


def add_routes(console: Console) -> None:
    """The jobs pages' routes on ``console.app``."""
    pages = JobPages(console)
    r = console.app.router
    r.add_get("/jobs", pages.jobs)
    r.add_post("/jobs", pages.submit_job)
    r.add_get("/jobs/stream", pages.list_stream)
    r.add_get("/jobs/{job_id}", pages.job)
    r.add_get("/jobs/{job_id}/stream", pages.job_stream)
    r.add_post("/jobs/{job_id}/cancel", pages.cancel_job)


class JobPages:
    """The handlers, over the console's plumbing (sessions, rendering, forms, event relays)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    async def jobs(
        self, request: web.Request, status: int = 200, form: dict[str, str] | None = None, error: str = ""
    ) -> web.Response:
        session = self.console._signed_in(request)
        client = session.client
        found, datasets, algorithms = await asyncio.gather(
            asyncio.to_thread(client.jobs.list),
            asyncio.to_thread(client.datasets.list),
            asyncio.to_thread(client.jobs.algorithms),
        )
        rows = sorted((training.JobView.of(j) for j in found), key=lambda j: j.created_at, reverse=True)
        return self.console.render(
            request,
            "jobs.html",
            session,
            status,
            section="jobs",
            rows=rows,
            datasets=sorted(d.name for d in datasets),
            algorithms=sorted((a.name, a.task) for a in algorithms),
            form=form or {},
            submit_error=error,
        )

    async def submit_job(self, request: web.Request) -> web.Response:
        """Starts a training from the jobs page's form; its page then follows it live."""
        form = await self.console._checked_form(request)
        session = self.console._signed_in(request)
        t = i18n.translator(self.console._lang(request))
        kept = {k: form.get(k, "").strip()[:512] for k in ("dataset", "target", "algorithm", "model_name", "params")}
        missing = [k for k in ("dataset", "target", "algorithm") if not kept[k]]
        if missing:
            return await self.jobs(request, 400, kept, t("train.missing", fields=", ".join(missing)))
        try:
            params, space = training.parse_params(kept["params"])
        except ValueError as exc:
            return await self.jobs(request, 400, kept, t("train.bad_params", reason=str(exc)))
        client = session.client
        try:
            dataset = await asyncio.to_thread(client.datasets.get, kept["dataset"])
            job = await asyncio.to_thread(
                client.jobs.submit,
                dataset.version_id,
                kept["algorithm"],
                kept["target"],
                params=params,
                model_name=kept["model_name"],
                search={"kind": "grid", "space": space} if space else None,
            )
        except (la.InvalidArgument, la.NotFound, la.FailedPrecondition) as exc:
            return await self.jobs(request, 400, kept, t("train.refused", reason=exc.message))
        except la.PermissionDenied as exc:
            return await self.jobs(request, 403, kept, t("train.refused", reason=exc.message))
        return redirect(f"/jobs/{quote(job.job_id, safe='')}")

    async def job(self, request: web.Request) -> web.Response:
        session = self.console._signed_in(request)
        t = i18n.translator(self.console._lang(request))
        job = training.JobView.of(await asyncio.to_thread(session.client.jobs.get, request.match_info["job_id"]))
        curve = training.JobCurve(job.job_id)
        if not job.live:  # a running job's curve comes down its stream, replayed from its start
            await training.replay(session.client, job, curve, REPLAY_S, t)
        return self.console.render(
            request,
            "job.html",
            session,
            section="jobs",
            job=job,
            curve=curve.svg(t),
            cancellable=job.state in training.CANCELLABLE,
            log=curve.log,
            scores=training.scores_svg(job, t),
        )

    async def job_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events for a job page: its state, progress and curve, from its training events
        (replayed from the job's start), until the job ends."""
        session = self.console._session(request)
        if session is None:
            return sign_in_first()
        t = i18n.translator(self.console._lang(request))
        client = session.client
        job = training.JobView.of(await asyncio.to_thread(client.jobs.get, request.match_info["job_id"]))
        curve = training.JobCurve(job.job_id)

        async def relayed(event: la.PlatformEvent) -> Relayed:
            if not training.concerns(event, job.job_id):
                return None, False
            line = curve.add(event, t)
            if event.name == "training.progress":
                return training.update(None, curve, event, t, line), False
            now = training.JobView.of(await asyncio.to_thread(client.jobs.get, job.job_id))
            return training.update(now, curve, None, t, line), event.name in training.FINAL

        if not job.live:  # nothing will change: say so once, and end
            await training.replay(client, job, curve, REPLAY_S, t)
            return web.Response(body=training.update(job, curve, None, t), content_type="text/event-stream")
        stream = client.events.subscribe(training.PATTERN, since=job.created_at - timedelta(seconds=1))
        return await self.console._relay(request, session, stream, relayed)

    async def list_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events for the jobs list: a row for each job as it is queued (from the CLI, the SDK,
        a retraining or this console), and its state and progress as it runs."""
        session = self.console._session(request)
        if session is None:
            return sign_in_first()
        t = i18n.translator(self.console._lang(request))
        client = session.client
        known: set[str] = set()  # jobs whose whole row this stream has sent

        async def relayed(event: la.PlatformEvent) -> Relayed:
            job_id = training.job_of(event)
            if not job_id:
                return None, False
            if event.name == "training.progress" and job_id in known:
                return training.list_update(job_id, float(event.data.progress), None, t), False  # type: ignore[attr-defined]
            job = training.JobView.of(await asyncio.to_thread(client.jobs.get, job_id))
            known.add(job_id)
            return training.list_update(job_id, job.progress, job, t), False

        return await self.console._relay(request, session, client.events.subscribe(training.PATTERN), relayed)

    async def cancel_job(self, request: web.Request) -> web.Response:
        await self.console._checked_form(request)
        session = self.console._signed_in(request)
        job_id = request.match_info["job_id"]
        try:
            await asyncio.to_thread(session.client.jobs.cancel, job_id)
        except la.FailedPrecondition:
            pass  # it ended meanwhile: its page says how
        return redirect(f"/jobs/{quote(job_id, safe='')}")
