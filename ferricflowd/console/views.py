"""The pages (GET): overview, Flows of a type in a state, one Flow, failed and stuck, login.

Each handler reads what its page needs in the thread pool and renders a template; an
`HX-Request` (htmx refreshing a part of the page) gets only that part.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ferricflowd.flow.checks import NAME_RE
from ferricflowd.flow.errors import FerricflowdError, InvalidArgument
from ferricflowd.flow.records import RUNNING, TERMINAL_STATES, FlowRecord, HistoryEvent

from .auth import COOKIE
from .fmt import flow_url, utc
from .ops import Filters

if TYPE_CHECKING:
    from .app import Console

__all__ = ["failed", "flow", "flow_by_query", "flows", "job", "login_page", "overview",
           "overview_json"]

PAGE_SIZES = (20, 50, 100, 500)
TIME_DETAILS = frozenset({"due", "deadline", "parked"})  # history details that are ms times
HISTORY_SHOWN = 500
BYTES_SHOWN = 4096  # payload or value bytes shown on request, at most
MESSAGES = {"requeued": "Requeued.", "cancelled": "Cancelled.", "signalled": "Signal sent.",
            "login": "Logged in.", "logout": "Logged out."}


async def overview(console: Console, request: Request) -> Response:
    snap = await run_in_threadpool(console.overview.snapshot)
    template = "_live.html" if request.headers.get("hx-request") else "overview.html"
    return console.render(request, template, snap=snap, title="Overview",
                          refresh_s=console.overview.refresh_s)


async def overview_json(console: Console, request: Request) -> Response:
    snap = await run_in_threadpool(console.overview.snapshot)
    types = {row.type: {"counts": dict(row.stats.counts), "running": row.stats.running,
                        "completed_per_min": row.completed_per_min,
                        "failed_per_min": row.failed_per_min,
                        "states": {s: asdict(st) for s, st in row.stats.states.items()}}
             for row in snap.rows}
    doc = {"at_ms": snap.at_ms, "took_ms": snap.took_ms, "error": snap.error, "types": types,
           "throughput": snap.series, "daemon": snap.daemon, "daemon_error": snap.daemon_error}
    return JSONResponse(doc, 503 if snap.error else 200)


def _name(value: str) -> str | None:
    return value if NAME_RE.match(value) else None


async def flows(console: Console, request: Request) -> Response:
    type_, state = request.path_params["type"], request.path_params["state"]
    if not _name(type_) or not _name(state):
        return _error(console, request, 404, "Not found", "no such type or state")
    params = request.query_params
    search = params.get("id", "").strip()
    if search:
        return RedirectResponse(flow_url(search), 303)
    limit = int(params.get("limit", "50")) if params.get("limit", "").isdigit() else 50
    limit = min(max(limit, 1), PAGE_SIZES[-1])
    terminal = state in TERMINAL_STATES
    order = params.get("order") or ("newest" if terminal else "oldest")
    order = order if order in ("oldest", "newest") else "oldest"
    filters = Filters.of(params)
    cursor = params.get("cursor") or None
    error = None
    try:
        page, total = await run_in_threadpool(console.ops.browse, type_, state, filters,
                                              cursor=cursor, limit=limit, order=order)
        targets = await run_in_threadpool(_targets, console, type_)
    except InvalidArgument as exc:
        page, total, targets, error = None, None, [], str(exc)
    except FerricflowdError as exc:
        return _error(console, request, 503, "Store unavailable", str(exc))
    query = {"limit": limit, "order": order, **filters.as_query()}
    return console.render(
        request, "flows.html", 400 if error else 200, title=f"{type_} · {state}", type=type_,
        state=state, page=page, total=total, query=query, limit=limit, order=order,
        filters=filters, page_sizes=PAGE_SIZES, terminal=terminal, error=error,
        running=state == RUNNING, targets=targets, first=cursor is None)


def _targets(console: Console, type: str) -> list[str]:
    """States a Flow of `type` may be requeued to: its groups' states, then any other
    state its Flows have rested in."""
    known = console.known_states(type)
    return known + [s for s in console.ops.states(type) if s not in known]


async def flow(console: Console, request: Request) -> Response:
    return await _flow_page(console, request, request.path_params["flow_id"])


async def flow_by_query(console: Console, request: Request) -> Response:
    flow_id = request.query_params.get("id", "")
    if not flow_id:
        return _error(console, request, 404, "Not found", "give a Flow id")
    return await _flow_page(console, request, flow_id)


async def _flow_page(console: Console, request: Request, flow_id: str, *, status: int = 200,
                     error: str | None = None) -> Response:
    try:
        data = await run_in_threadpool(_read_flow, console, flow_id)
    except FerricflowdError as exc:
        return _error(console, request, 503, "Store unavailable", str(exc))
    if data is None:
        return _error(console, request, 404, "No such Flow",
                      f"There is no Flow with the id {flow_id!r} (it may have been removed "
                      "after its retention).")
    show = request.query_params.get("show", "")
    reveal = await run_in_threadpool(_reveal, console, request, data["record"], show)
    message = MESSAGES.get(request.query_params.get("done", ""))
    record: FlowRecord = data["record"]
    targets = await run_in_threadpool(_targets, console, record.type)
    return console.render(request, "flow.html", status, title=f"Flow {flow_id}", **data,
                          reveal=reveal, show=show, message=message, error=error,
                          targets=targets, default_target=_last_state(data["history"]))


def _read_flow(console: Console, flow_id: str) -> dict[str, Any] | None:
    client = console.client
    record = client.get(flow_id)
    if record is None:
        return None
    events = client.history(flow_id, count=HISTORY_SHOWN, reverse=True)[::-1]
    return {"record": record, "payload_size": len(record.payload),
            "history": _timeline(events), "history_cut": len(events) >= HISTORY_SHOWN,
            "children": client.children(flow_id), "values": console.ops.value_sizes(flow_id)}


def _timeline(events: list[HistoryEvent]) -> list[dict[str, Any]]:
    """Events with the time since the previous one, and their error text set apart."""
    out, previous = [], None
    for ev in events:
        details = {k: utc(v) if k in TIME_DETAILS and isinstance(v, int) else v
                   for k, v in ev.details.items()}
        error = details.pop("error", None)
        out.append({"event": ev.event, "version": ev.version, "at_ms": ev.at_ms,
                    "since_ms": None if previous is None else ev.at_ms - previous,
                    "error": error, "details": details})
        previous = ev.at_ms
    return out


def _last_state(timeline: list[dict[str, Any]]) -> str | None:
    """The state a Flow last rested in before it ended: where a requeue usually goes."""
    for ev in reversed(timeline):
        details = ev["details"]
        for key in ("to", "state", "wait_state"):
            value = details.get(key)
            if isinstance(value, str) and value not in TERMINAL_STATES and value != RUNNING:
                return value
    return None


def _reveal(console: Console, request: Request, record: FlowRecord,
            show: str) -> dict[str, Any] | None:
    """Payload or value bytes asked for with ?show=payload or ?show=value:<name>: only for
    a request that may act (they may hold personal data), capped and shown as text."""
    if not show:
        return None
    grant = console.auth.grant(request.headers.get("authorization"), request.cookies.get(COOKIE))
    if grant is None:
        return {"denied": "Log in with the console token to see payload and value bytes."}
    if show == "payload":
        data = record.payload
    elif show.startswith("value:"):
        data = console.client.get_values(record.id, [show[6:]]).get(show[6:], b"")
    else:
        return None
    return {"what": show, "size": len(data), "bytes": data[:BYTES_SHOWN],
            "cut": len(data) > BYTES_SHOWN}


async def failed(console: Console, request: Request) -> Response:
    data = await run_in_threadpool(_read_failed, console)
    if isinstance(data, str):
        return _error(console, request, 503, "Store unavailable", data)
    return console.render(request, "failed.html", title="Failed and stuck", **data)


STUCK_DUE_MS = 5 * 60_000  # due longer than this: workers are missing or too few


def _read_failed(console: Console) -> dict[str, Any] | str:
    """Per type: the newest failed Flows, the stuck ones (an expired lease, or due longer
    than STUCK_DUE_MS) and the longest running."""
    snap = console.overview.snapshot()
    if snap.error:
        return snap.error
    sections = []
    try:
        for row in snap.rows:
            failed_n = row.stats.counts.get("failed", 0)
            stuck = console.ops.stuck(row.type, STUCK_DUE_MS).records
            running = console.ops.running(row.type) if row.stats.running else []
            if not failed_n and not stuck and not running:
                continue
            recent = console.client.terminals(row.type, "failed", 10) if failed_n else []
            sections.append({"type": row.type, "failed": failed_n, "recent": recent,
                             "stuck": stuck, "running": running})
    except FerricflowdError as exc:
        return str(exc)
    return {"sections": sections, "snap": snap, "stuck_due_ms": STUCK_DUE_MS}


async def job(console: Console, request: Request) -> Response:
    found = console.jobs.get(request.path_params["job_id"])
    if found is None:
        return _error(console, request, 404, "No such job", "Bulk jobs are kept in the "
                      "console process only; this one is gone (or the console restarted).")
    return console.render(request, "job.html", title=f"Bulk {found.action}", job=found)


async def login_page(console: Console, request: Request) -> Response:
    nxt = request.query_params.get("next", "/")
    return console.render(request, "login.html", title="Log in", next=_local(nxt), error=None)


def _local(path: str) -> str:
    """Only a path on this console may be a redirect target (no open redirect)."""
    return path if re.match(r"^/(?![/\\])", path) else "/"


def _error(console: Console, request: Request, status: int, title: str,
           message: str) -> Response:
    return console.render(request, "error.html", status, title=title, message=message)


def login_redirect(path: str) -> str:
    return f"/login?{urlencode({'next': path})}"
