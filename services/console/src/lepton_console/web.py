"""The console's HTTP application: sign-in, the pages, the event stream, and the headers every answer carries.

Every call to the platform goes through the SDK with the signed-in key (:mod:`lepton_console.sessions`),
so a page shows exactly what that key may see. The blocking SDK runs on worker threads
(``asyncio.to_thread``); the event stream uses the SDK's asyncio stream.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

import lepton_ai as la
from lepton_console import deployments, i18n, jobs, monitoring, pages, traces, uploads
from lepton_console.responses import redirect, sign_in_first
from lepton_console.sessions import COOKIE, ID_BYTES, Session, Sessions
from lepton_console.settings import ConsoleSettings

log = logging.getLogger("lepton_console")

#: Before sign-in, forms carry this cookie's value (a double-submitted token); after, the session's.
SIGNIN_CSRF_COOKIE = "lepton_csrf"
LANG_COOKIE = "lepton_lang"
CSRF_FIELD = "csrf"
#: Longest key the sign-in form takes (real keys are ~32 characters).
MAX_KEY_LENGTH = 512
#: Longest event-name pattern a page's stream may ask for (the platform checks what it matches).
MAX_PATTERN = 128
#: A comment line down an idle event stream this often, so a dead connection is noticed.
KEEPALIVE_S = 15.0
#: Concurrent look-ups of latest versions on the datasets page.
LOOKUPS = 8

#: What a relayed stream sends for an event: the message (None: nothing) and whether the stream ends.
Relayed = tuple[bytes | None, bool]

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

ClientFactory = Callable[[str], la.Client]


def client_factory(settings: ConsoleSettings) -> ClientFactory:
    """Makes the SDK client for a key: the settings' platform, CA and (for mutual TLS) certificate."""
    pair = (settings.tls_cert_file, settings.tls_key_file) if settings.tls_cert_file and settings.tls_key_file else None

    def connect(key: str) -> la.Client:
        return la.Client(
            key,
            settings.platform_url,
            root_certificates=settings.tls_ca_file,
            client_certificate=pair if settings.tls_ca_file else None,
        )

    return connect


def _safe_next(value: str) -> str:
    """A local path to go back to after a form; anything else (another site, ``//host``) is ``/``."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and "\n" not in value:
        return value
    return "/"


class Console:
    """The console's routes over ``sessions``; ``connect`` makes an SDK client for a key."""

    def __init__(self, settings: ConsoleSettings, sessions: Sessions, connect: ClientFactory) -> None:
        self.settings = settings
        self.sessions = sessions
        self.connect = connect
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("lepton_console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.app = web.Application(middlewares=[self._errors])
        self.app.on_response_prepare.append(self._headers)
        self.app.on_shutdown.append(self._on_shutdown)
        r = self.app.router
        r.add_get("/", self.home)
        r.add_get("/healthz", self.health)
        r.add_get("/signin", self.signin_page)
        r.add_post("/signin", self.signin)
        r.add_post("/signout", self.signout)
        r.add_post("/lang", self.switch_language)
        r.add_get("/datasets", self.datasets)
        r.add_get("/datasets/{name}", self.dataset)
        r.add_get("/events", self.events)
        r.add_get("/events/stream", self.event_stream)
        jobs.add_routes(self)
        r.add_get("/models", self.models)
        r.add_get("/models/{name}", self.model)
        r.add_post("/models/{name}/promote", self.promote)
        r.add_get("/models/{name}/versions/{version:[0-9]+}/plots/{plot}", self.plot)
        # Each later area of pages adds its own routes (its handlers take this console).
        uploads.add_routes(self)
        traces.add_routes(self)
        deployments.add_routes(self)
        monitoring.add_routes(self)
        r.add_static("/static", pages.STATIC, append_version=False)

    # -- plumbing ---------------------------------------------------------

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"

    async def _on_shutdown(self, app: web.Application) -> None:
        self.sessions.forget_all()  # ends every event stream, so their handlers return

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except la.Unauthenticated:
            # The key was revoked or expired while its session lived: forget it, sign in again.
            self.sessions.forget(request.cookies.get(COOKIE, ""))
            raise web.HTTPSeeOther("/signin") from None
        except (la.NotFound, la.InvalidArgument):  # a malformed id or name in a URL names nothing
            return self._error(request, 404, "error.not_found")
        except la.PermissionDenied:
            return self._error(request, 403, "error.forbidden")
        except la.LeptonError as exc:
            log.warning("the platform refused or failed a console call: %s", type(exc).__name__)
            return self._error(request, 503, "error.unavailable")

    def _lang(self, request: web.Request) -> str:
        return i18n.negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _signed_in(self, request: web.Request) -> Session:
        session = self._session(request)
        if session is None:
            raise web.HTTPSeeOther("/signin")
        return session

    def _csrf(self, request: web.Request, session: Session | None) -> tuple[str, bool]:
        """The token this page's forms carry, and whether it is new (and must be set as a cookie)."""
        if session is not None:
            return session.csrf, False
        existing = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
        if len(existing) >= 32:
            return existing, False
        return secrets.token_urlsafe(ID_BYTES), True

    async def _checked_form(self, request: web.Request) -> dict[str, str]:
        """The posted form, once its CSRF token matches the session's (before sign-in, the cookie's); else 403."""
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        session = self._session(request)
        expected = session.csrf if session is not None else request.cookies.get(SIGNIN_CSRF_COOKIE, "")
        given = form.get(CSRF_FIELD, "")
        if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
            raise web.HTTPForbidden(text=i18n.translator(self._lang(request))("error.csrf"), content_type="text/plain")
        return form

    def _cookie(self, request: web.Request, response: web.StreamResponse, name: str, value: str, **kw: Any) -> None:
        response.set_cookie(name, value, path="/", httponly=True, samesite="Strict", secure=request.secure, **kw)

    def render(
        self,
        request: web.Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> web.Response:
        lang = self._lang(request)
        csrf, new_csrf = self._csrf(request, session)
        t = i18n.translator(lang)
        html = self.templates.get_template(template).render(
            t=t,
            lang=lang,
            other_lang=i18n.other(lang),
            csrf=csrf,
            here=request.path_qs,
            principal=session.principal if session is not None else None,
            **context,
        )
        response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
        if new_csrf:
            self._cookie(request, response, SIGNIN_CSRF_COOKIE, csrf)
        return response

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.render(request, "error.html", self._session(request), status, message=message, section="")

    # -- sign-in ----------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/datasets" if self._session(request) else "/signin")

    async def signin_page(self, request: web.Request) -> web.Response:
        if self._session(request) is not None:
            raise web.HTTPSeeOther("/datasets")
        return self.render(request, "signin.html", None, error=None, section="signin", hours=self._idle_hours())

    def _idle_hours(self) -> str:
        return f"{self.settings.session_idle_s / 3600:g}"

    async def signin(self, request: web.Request) -> web.Response:
        form = await self._checked_form(request)
        key = form.get("key", "").strip()
        client: la.Client | None = None
        error = "signin.wrong_key"
        status = 401
        if key and len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable():
            client = self.connect(key)
            try:
                principal = await asyncio.to_thread(client.whoami)
            except la.Unauthenticated:
                pass
            except la.LeptonError as exc:
                log.warning("sign-in could not reach the platform: %s", type(exc).__name__)
                error, status = "signin.unavailable", 503
            else:
                session = self.sessions.create(client, principal)
                log.info("signed in", extra={"tenant": principal.tenant, "key_id": principal.key_id})
                response = redirect("/datasets")
                self._cookie(request, response, COOKIE, session.id)
                response.del_cookie(SIGNIN_CSRF_COOKIE, path="/")
                return response
            client.close()
        return self.render(
            request, "signin.html", None, status=status, error=error, section="signin", hours=self._idle_hours()
        )

    async def signout(self, request: web.Request) -> web.Response:
        await self._checked_form(request)
        self.sessions.forget(request.cookies.get(COOKIE, ""))
        response = redirect("/signin")
        response.del_cookie(COOKIE, path="/")
        return response

    async def switch_language(self, request: web.Request) -> web.Response:
        form = await self._checked_form(request)
        lang = form.get("lang", "")
        response = redirect(_safe_next(form.get("next", "/")))
        if lang in i18n.CATALOGUES:
            self._cookie(request, response, LANG_COOKIE, lang, max_age=365 * 24 * 3600)
        return response

    # -- pages ------------------------------------------------------------

    async def datasets(
        self, request: web.Request, status: int = 200, upload_error: str | None = None, upload_name: str = ""
    ) -> web.Response:
        """The datasets list and its upload form (with an upload's refusal, when ``upload_error``)."""
        session = self._signed_in(request)
        search = request.query.get("q", "").strip()[:200]
        rows = await pages.dataset_rows(session.client, search, LOOKUPS)
        return self.render(
            request,
            "datasets.html",
            session,
            status,
            section="datasets",
            search=search,
            rows=rows,
            upload_error=upload_error,
            upload_name=upload_name,
        )

    async def dataset(self, request: web.Request) -> web.Response:
        session = self._signed_in(request)
        t = i18n.translator(self._lang(request))
        detail = await pages.dataset_detail(session.client, request.match_info["name"], t)
        return self.render(request, "dataset.html", session, section="datasets", d=detail)

    async def events(self, request: web.Request) -> web.Response:
        session = self._signed_in(request)
        minutes = f"{self.settings.events_replay_s / 60:g}"
        return self.render(request, "events.html", session, section="events", minutes=minutes)

    async def models(self, request: web.Request) -> web.Response:
        session = self._signed_in(request)
        rows = await pages.model_rows(session.client)
        return self.render(request, "models.html", session, section="models", rows=rows)

    async def model(self, request: web.Request, status: int = 200, refusal: str = "") -> web.Response:
        session = self._signed_in(request)
        t = i18n.translator(self._lang(request))
        lineage_of = request.query.get("lineage", "")
        detail = await pages.model_detail(
            session.client, request.match_info["name"], t, int(lineage_of) if lineage_of.isdigit() else 0
        )
        return self.render(
            request, "model.html", session, status, section="models", m=detail, champion=pages.CHAMPION, refusal=refusal
        )

    async def promote(self, request: web.Request) -> web.Response:
        """Points the alias ``champion`` at the form's version; a role that may not is told the platform's reason."""
        form = await self._checked_form(request)
        session = self._signed_in(request)
        name = request.match_info["name"]
        version = form.get("version", "")
        if not version.isdigit():
            return self._error(request, 400, "error.bad_form")
        try:
            await asyncio.to_thread(session.client.models.set_alias, name, pages.CHAMPION, int(version))
        except la.PermissionDenied as exc:
            return await self.model(request, 403, exc.message)
        return redirect(f"/models/{quote(name, safe='')}")

    async def plot(self, request: web.Request) -> web.Response:
        """An evaluation plot (PNG), fetched with the session's key."""
        session = self._signed_in(request)
        m = request.match_info
        png = await pages.plot_png(session.client, m["name"], int(m["version"]), m["plot"])
        return web.Response(body=png, content_type="image/png")

    async def event_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the tenant's platform events, one JSON object a message (no payload data);
        ``?pattern=`` names the events (``dataset.>``), ``?replay=0`` starts with new ones only."""
        session = self._session(request)
        if session is None:
            return sign_in_first()
        since = timedelta(seconds=self.settings.events_replay_s) if self.settings.events_replay_s else None
        if request.query.get("replay") == "0":  # a list page that redraws on new events: none from before
            since = None
        pattern = request.query.get("pattern", "")
        if len(pattern) > MAX_PATTERN:
            return self._error(request, 404, "error.not_found")

        async def relayed(event: la.PlatformEvent) -> Relayed:
            return sse_message(event), False

        stream = session.client.events.subscribe(pattern, since=since)  # a pattern matching nothing: 404
        return await self._relay(request, session, stream, relayed)

    async def _relay(
        self,
        request: web.Request,
        session: Session,
        stream: la.EventStream,
        relayed: Callable[[la.PlatformEvent], Awaitable[Relayed]],
    ) -> web.StreamResponse:
        """Server-sent events from ``stream``, each turned into a message by ``relayed``, until it says the
        stream ends, the platform ends it, the browser goes away or the session is forgotten."""
        session.streams.add(stream)
        pending: asyncio.Future[la.PlatformEvent] | None = None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        try:
            await stream.__aenter__()
            await response.prepare(request)
            await response.write(b"retry: 3000\n: subscribed\n\n")
            events = stream.__aiter__()
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
                if not done:
                    await response.write(b": keepalive\n\n")
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    break
                finally:
                    pending = None
                message, last = await relayed(event)
                if message is not None:
                    await response.write(message)
                if last:
                    break
        except ConnectionError:
            pass  # the browser went away
        except la.LeptonError as exc:
            if not response.prepared:
                raise  # an error page, from the middleware
            log.warning("an event stream ended with the platform's error: %s", type(exc).__name__)
        finally:
            if pending is not None:
                pending.cancel()
            session.streams.discard(stream)
            await stream.aclose()
        return response


def sse_message(event: la.PlatformEvent) -> bytes:
    """One server-sent event: the event's id, and its attributes as JSON."""
    body = {
        "id": event.id,
        "type": event.type,
        "name": event.name,
        "source": event.source,
        "time": event.time.isoformat().replace("+00:00", "Z"),
        "subject": event.subject,
        "trace_id": event.trace_id,
    }
    return f"id: {event.id}\ndata: {json.dumps(body)}\n\n".encode()


def make_app(
    settings: ConsoleSettings, sessions: Sessions | None = None, connect: ClientFactory | None = None
) -> web.Application:
    """The console's application (tests drive it with aiohttp's test client)."""
    if sessions is None:
        sessions = Sessions(settings.session_idle_s)
    console = Console(settings, sessions, connect or client_factory(settings))
    return console.app
