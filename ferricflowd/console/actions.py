"""The actions (POST): requeue, cancel and signal one Flow; bulk actions; login and logout.

Every action is authorized first (auth.Auth.authorize: the Bearer token, or a login session
with the form's CSRF token) and refused with 401/403 before anything is read or changed.
A script (Bearer) gets JSON back; a browser gets a redirect to the page it came from, or the
page again with the error. A browser POST whose Origin names another site is refused too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ferricflowd.flow.errors import FerricflowdError, FlowNotFound, InvalidArgument
from ferricflowd.flow.records import TERMINAL_STATES

from . import views
from .auth import COOKIE, SESSION_TTL_S, Denied, Grant
from .fmt import flow_url, url_with
from .jobs import BulkJob
from .ops import BULK_ACTIONS, Filters

if TYPE_CHECKING:
    from .app import Console

__all__ = ["authorize", "bulk", "denied", "flow_action", "flow_action_by_query", "form",
           "login", "logout", "stop_job"]

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 4 << 20  # a bulk form lists up to 500 ids of up to 8 KiB
FLOW_ACTIONS = ("requeue", "cancel", "signal")
LOGIN_FAILURE_DELAY_S = 0.5


async def form(request: Request) -> dict[str, list[str]]:
    """The urlencoded body (the console's forms send nothing else), field -> values."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Denied(413, "form too large")
    out: dict[str, list[str]] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        out.setdefault(key, []).append(value)
    return out


def _one(fields: dict[str, list[str]], name: str, default: str = "") -> str:
    return (fields.get(name) or [default])[0].strip()


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (Sec-Fetch-Site, or
    an Origin that is not this console)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")


async def authorize(console: Console, request: Request, fields: dict[str, list[str]]) -> Grant:
    authorization = request.headers.get("authorization")
    if not authorization and not _same_origin(request):
        raise Denied(403, "cross-site request refused")
    return console.auth.authorize(authorization, request.cookies.get(COOKIE),
                                  _one(fields, "csrf"))


async def permitted(console: Console, request: Request, action: str | None = None,
                    known: Collection[str] = ()) -> tuple[dict[str, list[str]], Grant]:
    """The form of a request that may act (with `action`: one of `known`); Denied otherwise
    (404 for an unknown action, authorize()'s 401 and 403)."""
    if action is not None and action not in known:
        raise Denied(404, f"no action {action!r}")
    fields = await form(request)
    return fields, await authorize(console, request, fields)


def denied(console: Console, request: Request, exc: Denied, scripted: bool) -> Response:
    if scripted:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"ok": False, "error": exc.reason}, exc.status, headers)
    return console.render(request, "error.html", exc.status, title="Not allowed",
                          message=exc.reason, login=exc.status == 401)


async def flow_action(console: Console, request: Request) -> Response:
    return await _flow_action(console, request, request.path_params["flow_id"],
                              request.path_params["action"])


async def flow_action_by_query(console: Console, request: Request) -> Response:
    return await _flow_action(console, request, request.query_params.get("id", ""),
                              request.path_params["action"])


async def _flow_action(console: Console, request: Request, flow_id: str,
                       action: str) -> Response:
    scripted = "authorization" in request.headers
    try:
        fields, grant = await permitted(console, request, action, FLOW_ACTIONS)
    except Denied as exc:
        return denied(console, request, exc, scripted)
    try:
        done = await run_in_threadpool(_apply, console, flow_id, action, fields, grant)
    except (FerricflowdError, ValueError) as exc:
        status = 404 if isinstance(exc, FlowNotFound) else 400 if isinstance(
            exc, InvalidArgument) else 409
        if scripted:
            return JSONResponse({"ok": False, "error": str(exc)}, status)
        return await views._flow_page(console, request, flow_id, status=status, error=str(exc))
    if scripted:
        return JSONResponse({"ok": True, "id": flow_id, "action": action, **done})
    return RedirectResponse(f"{flow_url(flow_id)}?done={done['done']}", 303)


def _apply(console: Console, flow_id: str, action: str, fields: dict[str, list[str]],
           grant: Grant) -> dict[str, Any]:
    client = console.client
    record = client.get(flow_id, payload=False)
    if record is None:
        raise FlowNotFound(f"no Flow {flow_id!r}", flow_id)
    reason = _one(fields, "reason") or f"{action} from the console ({grant.via})"
    if action == "requeue":
        console.ops.requeue(flow_id, _one(fields, "state") or None, reason)
        done = "requeued"
    elif action == "cancel":
        console.ops.cancel(flow_id, reason)
        done = "cancelled"
    else:
        to = _one(fields, "transition_to") or None
        client.signal(flow_id, _one(fields, "name"), if_state=record.state if to else None,
                      transition_to=to)
        done = "signalled"
    after = client.get(flow_id, payload=False)
    return {"done": done, "state": after.state if after is not None else None}


async def bulk(console: Console, request: Request) -> Response:
    """Requeue, cancel or purge Flows of a page: the selected ones, or every one the page's
    filters match. A browser first gets a confirmation page with the count; confirm=yes
    (or a Bearer request) does it. A filter run goes on in the background (jobs.py)."""
    type_, state = request.path_params["type"], request.path_params["state"]
    scripted = "authorization" in request.headers
    try:
        fields, _ = await permitted(console, request)
    except Denied as exc:
        return denied(console, request, exc, scripted)
    plan = {"action": _one(fields, "action"), "scope": _one(fields, "scope", "selected"),
            "ids": [i for i in fields.get("ids", []) if i][:views.PAGE_SIZES[-1]],
            "to_state": _one(fields, "to_state") or None, "filters": Filters.of(fields)}
    back = url_with(f"/types/{type_}/{state}", plan["filters"].as_query())
    try:
        problem = _check_plan(plan, state)
        if problem:
            raise InvalidArgument("action", problem)
        if plan["scope"] == "all":
            count = await run_in_threadpool(console.ops.count, type_, state, plan["filters"])
        else:
            count = len(plan["ids"])
    except (FerricflowdError, ValueError) as exc:
        return _bulk_error(console, request, scripted, 400, str(exc), back)
    if _one(fields, "confirm") != "yes" and not scripted:
        return console.render(request, "confirm.html", title="Confirm", type=type_,
                              state=state, count=count, back=back, **plan)
    reason = f"bulk {plan['action']} from the console"
    if plan["scope"] == "selected":
        try:
            result = await run_in_threadpool(console.ops.act_on_selection, plan["action"],
                                             plan["ids"], plan["to_state"], reason)
        except (FerricflowdError, ValueError) as exc:
            return _bulk_error(console, request, scripted, 409, str(exc), back)
        if scripted:
            return JSONResponse({"ok": True, "done": result.done, "skipped": result.skipped,
                                 "errors": result.errors})
        return console.render(request, "bulk_done.html", title="Done", result=result,
                              back=back, type=type_, state=state, action=plan["action"])
    job = _start_job(console, type_, state, plan, count, reason)
    if scripted:
        return JSONResponse({"ok": True, "job": job.id, "matched": count}, 202)
    return RedirectResponse(f"/jobs/{job.id}", 303)


def _check_plan(plan: dict[str, Any], state: str) -> str | None:
    if plan["action"] not in BULK_ACTIONS:
        return f"choose an action: {', '.join(BULK_ACTIONS)}"
    if plan["scope"] not in ("selected", "all"):
        return "scope must be 'selected' or 'all'"
    if plan["scope"] == "selected" and not plan["ids"]:
        return "select at least one Flow (or choose every Flow matching the filters)"
    if plan["action"] == "purge" and state not in TERMINAL_STATES:
        return "only finished Flows (completed, failed, cancelled) can be purged"
    if plan["scope"] == "selected" and plan["action"] == "purge":
        return "purge works on every Flow matching the filters, not on a selection"
    return None


def _bulk_error(console: Console, request: Request, scripted: bool, status: int,
                message: str, back: str) -> Response:
    if scripted:
        return JSONResponse({"ok": False, "error": message}, status)
    return console.render(request, "error.html", status, title="Not done", message=message,
                          back=back)


def _start_job(console: Console, type_: str, state: str, plan: dict[str, Any], count: int,
               reason: str) -> BulkJob:
    def run(job: BulkJob) -> Any:
        def progress(handled: int, done: int) -> None:
            job.handled, job.done = handled, done

        return console.ops.act_on_filter(plan["action"], type_, state, plan["filters"],
                                         plan["to_state"], reason, progress=progress,
                                         should_stop=job.stop.is_set)

    job = BulkJob(console.jobs.new_id(), plan["action"], type_, state, count)
    log.info("console: bulk %s of %s/%s (%d matching) started as job %s", job.action, type_,
             state, count, job.id)
    return console.jobs.start(job, run)


async def stop_job(console: Console, request: Request) -> Response:
    scripted = "authorization" in request.headers
    try:
        fields, _ = await permitted(console, request)
    except Denied as exc:
        return denied(console, request, exc, scripted)
    job = console.jobs.get(request.path_params["job_id"])
    if job is not None:
        job.stop.set()
    return RedirectResponse(f"/jobs/{request.path_params['job_id']}", 303)


async def login(console: Console, request: Request) -> Response:
    fields = await form(request)
    nxt = views._local(_one(fields, "next", "/"))
    if not _same_origin(request):
        return console.render(request, "error.html", 403, title="Not allowed",
                              message="cross-site request refused")
    if console.auth.read_only:
        return console.render(request, "login.html", 403, title="Log in", next=nxt,
                              error="This console has no token: it is read-only.")
    if not console.auth.token_ok(_one(fields, "token")):
        await asyncio.sleep(LOGIN_FAILURE_DELAY_S)  # slows guessing down
        return console.render(request, "login.html", 403, title="Log in", next=nxt,
                              error="Wrong token.")
    response = RedirectResponse(nxt, 303)
    response.set_cookie(COOKIE, console.auth.new_session(), max_age=SESSION_TTL_S,
                        httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


async def logout(console: Console, request: Request) -> Response:
    await form(request)
    response = RedirectResponse("/?done=logout", 303)
    if _same_origin(request):
        response.delete_cookie(COOKIE, path="/")
    return response
