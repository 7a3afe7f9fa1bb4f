"""The schedules pages: every schedule with its next fires, one schedule with its recent
fires, and pause / resume / trigger (the same token and CSRF rules as every action)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ferricflowd.flow.errors import FerricflowdError, ScheduleNotFound

from .actions import denied, permitted
from .auth import Denied

if TYPE_CHECKING:
    from .app import Console

__all__ = ["schedule", "schedule_action", "schedules"]

UPCOMING = 5
ACTIONS = ("pause", "resume", "trigger")
MESSAGES = {"pause": "Paused.", "resume": "Resumed.", "trigger": "Fired now."}


def timing(info: Any) -> str:
    """How a schedule fires, in one line: "cron 0 3 * * * (Europe/Berlin)", "every 30s"."""
    spec = info.spec
    if spec.kind == "cron":
        return f"cron {spec.cron} ({spec.timezone})"
    if spec.kind == "every":
        from .fmt import duration

        return f"every {duration(spec.every_ms)}"
    from .fmt import utc

    return f"once at {utc(spec.at_ms)}"


async def schedules(console: Console, request: Request) -> Response:
    try:
        infos = await run_in_threadpool(lambda: console.client.schedules.list())
    except FerricflowdError as exc:
        return console.render(request, "error.html", 503, title="Store unavailable",
                              message=str(exc))
    rows = [{"info": i, "timing": timing(i), "upcoming": i.upcoming(UPCOMING)} for i in infos]
    return console.render(request, "schedules.html", title="Schedules", rows=rows,
                          message=MESSAGES.get(request.query_params.get("done", "")))


async def schedule(console: Console, request: Request) -> Response:
    name = request.path_params["name"]
    try:
        info = await run_in_threadpool(lambda: console.client.schedules.get(name))
    except FerricflowdError as exc:
        return console.render(request, "error.html", 503, title="Store unavailable",
                              message=str(exc))
    if info is None:
        return console.render(request, "error.html", 404, title="No such schedule",
                              message=f"There is no schedule named {name!r}.")
    return console.render(request, "schedule.html", title=f"Schedule {name}", info=info,
                          timing=timing(info), upcoming=info.upcoming(UPCOMING),
                          message=MESSAGES.get(request.query_params.get("done", "")))


async def schedule_action(console: Console, request: Request) -> Response:
    name, action = request.path_params["name"], request.path_params["action"]
    scripted = "authorization" in request.headers
    try:
        await permitted(console, request, action, ACTIONS)
    except Denied as exc:
        return denied(console, request, exc, scripted)
    calls = console.client.schedules
    try:
        result = await run_in_threadpool(getattr(calls, action), name)
    except ScheduleNotFound:
        return _fail(console, request, scripted, 404, f"There is no schedule named {name!r}.")
    except FerricflowdError as exc:
        return _fail(console, request, scripted, 409, str(exc))
    if scripted:
        fired = [f.detail for f in result] if action == "trigger" else None
        return JSONResponse({"ok": True, "schedule": name, "action": action,
                             "changed": bool(result), "flows": fired})
    back = "/schedules" if request.query_params.get("from") == "list" else f"/schedules/{name}"
    return RedirectResponse(f"{back}?done={action}", 303)


def _fail(console: Console, request: Request, scripted: bool, status: int,
          message: str) -> Response:
    if scripted:
        return JSONResponse({"ok": False, "error": message}, status)
    return console.render(request, "error.html", status, title="Not done", message=message,
                          back="/schedules")
