"""The console's ASGI application: its shared state, the page helper and the routes.

Starlette routes requests and serves the static files; uvicorn speaks HTTP. Not the stdlib's
http.server, which the daemon uses for /metrics: its documentation says it implements only
basic security checks and is not for production, and this server takes logins, cookies and
form posts that change Flows, may be put behind a proxy, and stays up for weeks. uvicorn
parses with h11 (size limits, keep-alive timeouts) and stops gracefully on SIGTERM; three
small, widely used dependencies and no build step. Pages are rendered on the server with
Jinja2 (autoescaped: every value a page shows is text, a Flow id
such as `<script>` included), so every page works without JavaScript; htmx refreshes parts of
them and uPlot draws the chart. Store calls are blocking (redis-py), so handlers run them in
Starlette's thread pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import actions, schedules, views
from .auth import COOKIE, Auth
from .data import DaemonStatus, Overview
from .fmt import FILTERS
from .jobs import Jobs
from .ops import Operator

if TYPE_CHECKING:
    from ferricflowd.config import Config
    from ferricflowd.flow.client import FlowClient

__all__ = ["Console", "create_app"]

STATIC = Path(__file__).parent / "static"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class Console:
    """Everything the handlers share (one per console process)."""

    config: Config
    client: FlowClient
    ops: Operator
    overview: Overview
    auth: Auth
    env: Environment
    jobs: Jobs

    def render(self, request: Request, template: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        grant = self.auth.grant(None, request.cookies.get(COOKIE))
        session = grant.session if grant is not None else ""
        html = self.env.get_template(template).render(
            request=request, read_only=self.auth.read_only, logged_in=grant is not None,
            csrf=self.auth.csrf(session) if session else "", path=request.url.path,
            **context)
        return HTMLResponse(html, status)

    def known_states(self, type: str) -> list[str]:
        """States a Flow of `type` may be requeued to: its groups' states in config order."""
        return [s for g in self.config.groups if g.type == type for s in g.states]


class Guard:
    """ASGI middleware: refuse a Host header that is not loopback when the console listens
    on loopback (a DNS-rebinding page could otherwise read it), and add the security headers
    to every response."""

    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.loopback_only and not _loopback_host(scope):
            await Response("Invalid Host header\n", 400, media_type="text/plain")(
                scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"),
                            (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"same-origin"),
                            (b"cross-origin-opener-policy", b"same-origin"),
                            (b"content-security-policy", CSP.encode())]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _loopback_host(scope: Scope) -> bool:
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    return name.lower() in LOOPBACK_NAMES


def _handler(console: Console, fn: Callable[..., Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await fn(console, request)

    return endpoint


def create_app(config: Config, client: FlowClient, *, daemon_url: str | None,
               loopback_only: bool = True) -> ASGIApp:
    """The console app for `config`, reading the store through `client`."""
    env = Environment(loader=PackageLoader("ferricflowd.console", "templates"),
                      autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(FILTERS)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    ops = Operator(client)
    overview = Overview(ops, config.console.refresh_s, DaemonStatus(daemon_url))
    console = Console(config, client, ops, overview, Auth(config.console.token), env, Jobs())

    def route(path: str, fn: Callable[..., Awaitable[Response]], methods: list[str]) -> Route:
        return Route(path, _handler(console, fn), methods=methods)

    routes = [
        route("/", views.overview, ["GET"]),
        route("/api/overview", views.overview_json, ["GET"]),
        route("/failed", views.failed, ["GET"]),
        route("/types/{type}/{state}", views.flows, ["GET"]),
        route("/types/{type}/{state}/bulk", actions.bulk, ["POST"]),
        route("/jobs/{job_id}", views.job, ["GET"]),
        route("/jobs/{job_id}/stop", actions.stop_job, ["POST"]),
        route("/schedules", schedules.schedules, ["GET"]),
        route("/schedules/{name}", schedules.schedule, ["GET"]),
        route("/schedules/{name}/{action}", schedules.schedule_action, ["POST"]),
        route("/flow", views.flow_by_query, ["GET"]),
        route("/flow/{action}", actions.flow_action_by_query, ["POST"]),
        route("/flows/{flow_id:path}/{action}", actions.flow_action, ["POST"]),
        route("/flows/{flow_id:path}", views.flow, ["GET"]),
        route("/login", views.login_page, ["GET"]),
        route("/login", actions.login, ["POST"]),
        route("/logout", actions.logout, ["POST"]),
        Route("/healthz", lambda request: JSONResponse({"status": "ok"})),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found(console)})
    app.state.console = console
    return Guard(app, loopback_only)


def _not_found(console: Console) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith(("/api/", "/static/")):
            return JSONResponse({"error": "not found"}, 404)
        return console.render(request, "error.html", 404, title="Not found",
                              message=f"Nothing at {request.url.path}")

    return handler
