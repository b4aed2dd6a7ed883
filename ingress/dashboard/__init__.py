"""The live dashboard on the admin port: `/dashboard` (the page), `/dashboard/events`
(server-sent events: the history, then a sample every `dashboard.interval_s`),
`/dashboard/login` and `/dashboard/logout`, `/dashboard/static/*` (script and style,
served from package data: it works offline). With `admin.token` set, the page and its
events need the token (bearer header) or the session cookie a login gives."""

from __future__ import annotations

import asyncio
import contextlib
import html
from dataclasses import asdict
from importlib import resources
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from contracts.config import Config
from ingress.app import IngressApp
from ingress.dashboard.collector import DashboardCollector
from ingress.dashboard.nodes import IngressNodes
from ingress.dashboard.session import COOKIE, Sessions
from ingress.upstreams import UpstreamStates

__all__ = ["PREFIX", "close_dashboard", "install_dashboard"]

PREFIX = "/dashboard"
CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Not no-referrer: with it a browser posts the login form with `Origin: null`.
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
_STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_MAX_FORM = 4096


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class _Dashboard:
    def __init__(self, app: IngressApp, config: Config, states: UpstreamStates) -> None:
        settings = config.dashboard
        self.sessions = Sessions(config.admin.token, settings.session_ttl_s)
        self.nodes = IngressNodes(app.bus, stale_s=max(5.0, 3 * settings.interval_s))
        self.collector = DashboardCollector(
            node_id=app.bus.node_id,
            pending=app.bus.pending,
            stats=lambda: asdict(app.stats),
            workers=states.current,
            nodes=self.nodes.current,
            on_point=self.nodes.record,
            interval_s=settings.interval_s,
            history_s=settings.history_s,
        )
        self.page = _asset("index.html")
        self.login_page = _asset("login.html").decode()
        self.static = {name: (_asset(name), media) for name, media in _STATIC.items()}
        self.closing = False
        self._subscribing: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sample and listen to the other nodes; once (needs the running loop)."""
        self.collector.start()
        if self._subscribing is None:
            self._subscribing = asyncio.get_running_loop().create_task(self.nodes.start())

    async def stop(self) -> None:
        await self.collector.stop()
        await self.nodes.stop()

    def allowed(self, request: Request) -> bool:
        sessions = self.sessions
        if sessions.open:
            return True
        header = next((v for k, v in request.headers.raw if k == b"authorization"), None)
        if header is not None and sessions.bearer_matches(header):
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and sessions.valid(cookie)

    def login(self, status: int, message: str = "") -> Response:
        notice = f'<p class="notice" role="alert">{html.escape(message)}</p>' if message else ""
        body = self.login_page.replace("<!--notice-->", notice)
        headers = dict(PAGE_HEADERS)
        if status == 401:
            headers["www-authenticate"] = 'Bearer realm="relaygate-admin"'
        return Response(body, status, headers=headers, media_type="text/html; charset=utf-8")

    async def events(self) -> StreamingResponse:
        stream = self.collector.stream(lambda: self.closing)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )


def install_dashboard(
    admin: FastAPI, app: IngressApp, config: Config, states: UpstreamStates
) -> None:
    """The routes; sampling starts at once when called in the running loop (the ingress
    builds its admin API there), else with the first request."""
    if not config.dashboard.enabled:
        return
    board = _Dashboard(app, config, states)
    admin.state.dashboard = board
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        board.start()

    def unauthorized() -> JSONResponse:
        return JSONResponse(
            {"detail": "log in at /dashboard/login, or send Authorization: Bearer <admin.token>"},
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="relaygate-admin"'},
        )

    @admin.get(PREFIX, include_in_schema=False)
    async def page(request: Request) -> Response:
        board.start()
        if not board.allowed(request):
            return board.login(401)
        return Response(board.page, headers=PAGE_HEADERS, media_type="text/html; charset=utf-8")

    @admin.get(f"{PREFIX}/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if board.allowed(request):
            return RedirectResponse(PREFIX, status_code=303)
        return board.login(200)

    @admin.post(f"{PREFIX}/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        # Only a form on this origin may log in (login CSRF); clients without Origin may.
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}":
            return board.login(403, "The login form must be posted from this page.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM:
                return board.login(413, "That form is too large.")
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if board.sessions.open:
            return RedirectResponse(PREFIX, status_code=303)
        if not board.sessions.token_matches(token):
            return board.login(401, "Wrong token.")
        response = RedirectResponse(PREFIX, status_code=303)
        response.set_cookie(
            COOKIE,
            board.sessions.issue(),
            max_age=board.sessions.ttl_s,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @admin.post(f"{PREFIX}/logout", include_in_schema=False)
    async def logout() -> Response:
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    @admin.get(f"{PREFIX}/events", include_in_schema=False)
    async def events(request: Request) -> Response:
        board.start()
        if not board.allowed(request):
            return unauthorized()
        return await board.events()

    @admin.get(PREFIX + "/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        found = board.static.get(name)
        if found is None:
            return JSONResponse({"detail": f"no asset {name}"}, status_code=404)
        body, media = found
        return Response(
            body,
            media_type=media,
            headers={"x-content-type-options": "nosniff", "cache-control": "no-cache"},
        )


def close_dashboard(admin: FastAPI) -> None:
    """At shutdown: end the event streams, so that open pages do not hold the server."""
    board: _Dashboard | None = getattr(admin.state, "dashboard", None)
    if board is not None:
        board.closing = True
