"""The actions (POST): requeue, cancel and signal one Flow; bulk actions; login and logout.

Every action is authorized first (auth.Auth.authorize: the Bearer token, or a login session
with the form's CSRF token) and refused with 401/403 before anything is read or changed.
A script (Bearer) gets JSON back; a browser gets a redirect to the page it came from, or the
page again with the error. A browser POST whose Origin names another site is refused too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ferricflowd.flow.errors import FerricflowdError, FlowNotFound, InvalidArgument

from . import views
from .auth import COOKIE, SESSION_TTL_S, Denied, Grant
from .fmt import flow_url, url_with
from .ops import BULK_ACTIONS, Unsupported

if TYPE_CHECKING:
    from .app import Console

__all__ = ["bulk", "flow_action", "flow_action_by_query", "login", "logout"]

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


async def _authorize(console: Console, request: Request, fields: dict[str, list[str]]) -> Grant:
    authorization = request.headers.get("authorization")
    if not authorization and not _same_origin(request):
        raise Denied(403, "cross-site request refused")
    return console.auth.authorize(authorization, request.cookies.get(COOKIE),
                                  _one(fields, "csrf"))


def _denied(console: Console, request: Request, exc: Denied, scripted: bool) -> Response:
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
        if action not in FLOW_ACTIONS:
            raise Denied(404, f"no action {action!r}")
        fields = await form(request)
        grant = await _authorize(console, request, fields)
    except Denied as exc:
        return _denied(console, request, exc, scripted)
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
    client, who = console.client, f"console ({grant.via})"
    record = client.get(flow_id, payload=False)
    if record is None:
        raise FlowNotFound(f"no Flow {flow_id!r}", flow_id)
    reason = _one(fields, "reason") or f"{action} from the {who}"
    if action == "requeue":
        to = _one(fields, "state") or _default_target(console, flow_id)
        if not to:
            raise InvalidArgument("state", "name the state to requeue to")
        console.ops.requeue(record, to, reason)
        done = "requeued"
    elif action == "cancel":
        console.ops.cancel(flow_id, reason)
        done = "cancelled"
    else:
        name = _one(fields, "name")
        to = _one(fields, "transition_to") or None
        client.signal(flow_id, name, if_state=record.state if to else None, transition_to=to)
        done = "signalled"
    after = client.get(flow_id, payload=False)
    return {"done": done, "state": after.state if after is not None else None}


def _default_target(console: Console, flow_id: str) -> str | None:
    timeline = views._timeline(console.client.history(flow_id, count=views.HISTORY_SHOWN,
                                                      reverse=True)[::-1])
    return views._last_state(timeline)


async def bulk(console: Console, request: Request) -> Response:
    """Requeue, cancel or purge the Flows selected on a page: first a confirmation page that
    shows how many, then (with confirm=yes) the action itself."""
    type_, state = request.path_params["type"], request.path_params["state"]
    scripted = "authorization" in request.headers
    try:
        fields = await form(request)
        await _authorize(console, request, fields)
    except Denied as exc:
        return _denied(console, request, exc, scripted)
    action = _one(fields, "action")
    ids = [i for i in fields.get("ids", []) if i][:views.PAGE_SIZES[-1]]
    to_state = _one(fields, "to_state")
    back = url_with(f"/types/{type_}/{state}", {})
    if action not in BULK_ACTIONS or not ids:
        message = "Choose an action and select at least one Flow."
        return console.render(request, "error.html", 400, title="Nothing to do",
                              message=message, back=back)
    if _one(fields, "confirm") != "yes" and not scripted:
        return console.render(request, "confirm.html", title="Confirm", type=type_, state=state,
                              action=action, ids=ids, to_state=to_state, back=back)
    try:
        result = await run_in_threadpool(console.ops.bulk, action, ids, to_state,
                                         f"bulk {action} from the console")
    except (FerricflowdError, Unsupported) as exc:
        if scripted:
            return JSONResponse({"ok": False, "error": str(exc)}, 409)
        return console.render(request, "error.html", 409, title="Not done", message=str(exc),
                              back=back)
    if scripted:
        return JSONResponse({"ok": True, "done": result.done, "skipped": result.skipped,
                             "errors": result.errors})
    return console.render(request, "bulk_done.html", title="Done", action=action,
                          result=result, back=back, type=type_, state=state)


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
