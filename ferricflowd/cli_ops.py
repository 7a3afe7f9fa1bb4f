"""Operator commands: create, inspect and signal Flows from a shell (cancel, requeue, purge,
browse: cli_admin.py; stats: cli_watch.py).

Mounted on the main click group by `cli.py` (`register(main)`). Every command finds the store
from the same config the daemon uses (`--config`, or FERRICFLOWD_CONFIG), or from `--url`.
Output is human-readable by default and JSON with `--json`. Exit codes: 0 ok, 1 the Flow
command failed (not found, conflict, ...) or was applied but under-replicated, 2 usage or
config error, 5 store unreachable or refused (engine library mismatch: run store-setup).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import exitcodes
from .config import ConfigError, load_config
from .flow.errors import (
    FerricflowdError,
    FlowError,
    InvalidArgument,
    LibraryMismatch,
    PartialBatch,
    StoreError,
    UnderReplicated,
)
from .flow.records import TERMINAL_STATES, FlowRecord, HistoryEvent
from .safetext import CLI_KEEP, escape_controls

if TYPE_CHECKING:  # the client (and redis-py) load on first use: `ferricflowd run` starts sooner
    from .flow.client import FlowClient


def _initial_state(ctx: click.Context, type: str) -> str:
    """A new Flow's state: the first state of the config's group for its type, else queued."""
    if ctx.obj["config"] is not None:
        for group in _config(ctx).groups:
            if group.type == type:
                return group.states[0]
    return "queued"


def _check_served(ctx: click.Context, type: str, state: str, strict: bool) -> None:
    """A Flow that no group handles waits forever: say so (with --strict, refuse)."""
    if ctx.obj["config"] is None:
        return
    config = _config(ctx)
    if any(g.type == type and state in g.states for g in config.groups):
        return
    types = sorted({g.type for g in config.groups})
    close = difflib.get_close_matches(type, types, n=1)
    if type in types:
        states = sorted({s for g in config.groups if g.type == type for s in g.states})
        hint = f" (its groups handle {', '.join(states)})"
    elif close:
        hint = f" (did you mean type {close[0]!r}?)"
    else:
        hint = f" (types handled: {', '.join(types)})"
    problem = f"no group of {config.path} handles type {type!r} in state {state!r}{hint}"
    if strict:
        click.echo(f"ferricflowd: refusing to create {type} {ctx.params['flow_id']}: {problem}",
                   err=True)
        ctx.exit(exitcodes.CONFIG)
    click.echo(f"ferricflowd: warning: {problem}; the Flow waits until one does", err=True)


def _config(ctx: click.Context) -> Any:
    try:
        return load_config(ctx.obj["config"])
    except ConfigError as exc:
        click.echo(f"ferricflowd: {exc}", err=True)
        ctx.exit(exitcodes.CONFIG)


def _client(ctx: click.Context) -> FlowClient:
    """The config's client (its [store], the embedded store's socket when it has no url),
    or a client of --url with durability relaxed (a shell command writes nothing that a
    non-durable store would lose beyond what the operator sees)."""
    opts = ctx.obj
    url, namespace = opts["url"], opts["namespace"]
    if url is None:
        if opts["config"] is None:
            raise click.UsageError("give --config FILE (or FERRICFLOWD_CONFIG) or --url URL")
        cfg = _config(ctx)
        store = dataclasses.replace(cfg.store, namespace=namespace) if namespace else cfg.store
        return store.client(cfg.store_url)
    from .flow.client import FlowClient

    return FlowClient.from_url(url, namespace=namespace or "ff", durability="relaxed")


def _run(ctx: click.Context, fn: Callable[[FlowClient], Any]) -> Any:
    """Run `fn` with a client; map errors to the documented exit codes."""
    try:
        return fn(_client(ctx))
    except StoreError as exc:
        what = "store" if isinstance(exc, LibraryMismatch | PartialBatch) else "store unreachable"
        click.echo(f"ferricflowd: {what}: {_said(ctx, exc)}", err=True)
        ctx.exit(exitcodes.STORE_UNREACHABLE)
    except (UnderReplicated, FlowError) as exc:  # UnderReplicated: applied, not "failed"
        click.echo(f"ferricflowd: {_said(ctx, exc)}", err=True)
        ctx.exit(exitcodes.FAILURE)
    except (FerricflowdError, TypeError, ValueError) as exc:
        click.echo(f"ferricflowd: {_said(ctx, exc)}", err=True)
        ctx.exit(exitcodes.CONFIG)


# The client API's argument names that its CLI commands call otherwise.
_API_TO_CLI = {"id": "flow_id", "signal": "name"}


def _said(ctx: click.Context, exc: Exception) -> str:
    """An error as the person at the terminal should read it: the argument named as they
    typed it (`--if-state`, `TYPE`, not `if_state`), and no wire prefix (`ERR `)."""
    text = str(exc)
    if isinstance(exc, InvalidArgument):
        name = _API_TO_CLI.get(exc.argument, exc.argument)
        param = next((p for p in ctx.command.params if p.name == name), None)
        if param is not None:
            shown = param.opts[0] if isinstance(param, click.Option) else (
                param.human_readable_name)
            text = shown + text[len(exc.argument):]
    # May quote a Flow id or an engine error: escaped as all output is.
    return escape_controls(text.removeprefix("ERR "), CLI_KEEP)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "backslashreplace")


def _record(r: FlowRecord) -> dict[str, Any]:
    out = {k: getattr(r, k) for k in ("id", "type", "state", "run_state", "attempt",
                                      "attempts_total", "fencing_token", "version", "priority",
                                      "next_run_at_ms", "lease_owner", "lease_deadline_ms",
                                      "parent_id", "crash_count", "created_at_ms",
                                      "updated_at_ms")}
    out.update(payload=_text(r.payload), result=_text(r.result), error=_text(r.error),
               values={k: _text(v) for k, v in r.values.items()})
    return out


def _event(e: HistoryEvent) -> dict[str, Any]:
    details = {k: _text(v) if isinstance(v, bytes) else v for k, v in e.details.items()}
    return {"version": e.version, "at_ms": e.at_ms, "event": e.event, "details": details}


def _emit(ctx: click.Context, data: Any, lines: Callable[[], list[str]]) -> None:
    """JSON (which escapes control characters itself), or lines with them escaped: a Flow's
    id, error or result must not drive the operator's terminal."""
    if ctx.obj["json"]:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines():
            click.echo(escape_controls(line, CLI_KEEP))


def _payload(text: str | None, file: str | None) -> bytes:
    if text is not None and file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    if file is not None:
        return sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    return (text or "").encode()


def register(main: click.Group) -> None:
    """Add the operator commands to the main group."""
    for cmd in (enqueue, start, get, history, children, terminals, signal, store_setup,
                store_url):
        main.add_command(cmd)


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--config/--url/--namespace/--json on every operator command."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    fn = click.option("--namespace", default=None, help="Namespace (default: config or ff).")(fn)
    fn = click.option("--url", default=None, envvar="FERRICFLOWD_STORE_URL",
                      help="Store URL; overrides the config's store.url.")(fn)
    fn = click.option("--config", "-c", "config", default=None, envvar="FERRICFLOWD_CONFIG",
                      type=click.Path(dir_okay=False),
                      help="Config file whose [store] to use [env: FERRICFLOWD_CONFIG].")(fn)
    return fn


def _setup(ctx: click.Context, config: str | None, url: str | None, namespace: str | None,
           as_json: bool) -> None:
    ctx.obj = {"config": config, "url": url, "namespace": namespace, "json": as_json}


@click.command()
@click.argument("type")
@click.argument("flow_id")
@click.option("--payload", default=None, help="Payload text.")
@click.option("--payload-file", default=None, help="Read the payload from a file (- = stdin).")
@click.option("--state", default=None,
              help="State to create the Flow in [default: the first state of the config's "
                   "group for TYPE, else queued].")
@click.option("--idempotent", is_flag=True, help="A repeat with the same request is OK.")
@click.option("--delay", "delay_s", type=float, default=None, help="Due in this many seconds.")
@click.option("--priority", type=click.IntRange(0, 2), default=0, help="0..2, higher first.")
@click.option("--strict", is_flag=True,
              help="With --config: refuse (exit 2) when no group of the config handles TYPE "
                   "in that state, instead of warning.")
@common
@click.pass_context
def enqueue(ctx: click.Context, type: str, flow_id: str, payload: str | None,
            payload_file: str | None, state: str | None, idempotent: bool,
            delay_s: float | None, priority: int, strict: bool, **common_opts: Any) -> None:
    """Create a Flow of TYPE with id FLOW_ID (alias: start)."""
    _setup(ctx, **common_opts)
    data = _payload(payload, payload_file)
    run_at = None if delay_s is None else int((time.time() + delay_s) * 1000)
    state = state or _initial_state(ctx, type)
    _check_served(ctx, type, state, strict)
    created = _run(ctx, lambda c: c.create(flow_id, type, state, data,
                                           run_at_ms=run_at, priority=priority,
                                           idempotent=idempotent))
    _emit(ctx, {"id": flow_id, "created": created},
          lambda: [f"{'created' if created else 'exists (idempotent)'} {type} {flow_id}"])


start = click.Command("start", params=enqueue.params, callback=enqueue.callback,
                      help="Create a Flow of TYPE with id FLOW_ID (alias of enqueue).")


@click.command()
@click.argument("flow_id")
@click.option("--values", default="", help="Comma-separated value names to include.")
@click.option("--partition-key", default=None, help="The Flow's partition key, if it has one.")
@common
@click.pass_context
def get(ctx: click.Context, flow_id: str, values: str, partition_key: str | None,
        **common_opts: Any) -> None:
    """Show one Flow's record (exit 1 when there is no such Flow)."""
    _setup(ctx, **common_opts)
    names = [v for v in values.split(",") if v]
    rec = _run(ctx, lambda c: c.get(flow_id, values=names, partition_key=partition_key))
    if rec is None:
        click.echo(f"ferricflowd: flow {flow_id!r} not found", err=True)
        ctx.exit(exitcodes.FAILURE)
    data = _record(rec)
    _emit(ctx, data, lambda: [_field(k, v) for k, v in data.items() if v not in (None, {})])


def _field(key: str, value: Any) -> str:
    """One line of `get`: times in ISO 8601 for people (`--json` keeps the epoch ms)."""
    if key.endswith("_ms") and isinstance(value, int):
        return f"{key.removesuffix('_ms'):16} {_iso(value)}"
    return f"{key:16} {value}"


@click.command()
@click.argument("flow_id")
@click.option("--count", default=1000, show_default=True, help="At most this many events.")
@click.option("--partition-key", default=None, help="The Flow's partition key, if it has one.")
@common
@click.pass_context
def history(ctx: click.Context, flow_id: str, count: int, partition_key: str | None,
            **common_opts: Any) -> None:
    """Show a Flow's history, oldest first."""
    _setup(ctx, **common_opts)
    events = [_event(e) for e in _run(ctx, lambda c: c.history(flow_id, count=count,
                                                               partition_key=partition_key))]
    if not events:  # every Flow has at least its 'created' event
        click.echo(f"ferricflowd: flow {flow_id!r} not found", err=True)
        ctx.exit(exitcodes.FAILURE)
    _emit(ctx, events, lambda: [
        f"{e['version']:>4} {_iso(e['at_ms'])} {e['event']:18} "
        + " ".join(f"{k}={v}" for k, v in sorted(e["details"].items())) for e in events])


def _iso(at_ms: int) -> str:
    """'2026-12-06T00:13:04.123Z': ISO 8601 in UTC for people (--json keeps the ms)."""
    moment = datetime.fromtimestamp(at_ms / 1000.0, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"


@click.command()
@click.argument("flow_id")
@common
@click.pass_context
def children(ctx: click.Context, flow_id: str, **common_opts: Any) -> None:
    """List a parent's children and their states."""
    _setup(ctx, **common_opts)
    recs = [_record(r) for r in _run(ctx, lambda c: c.children(flow_id))]
    _emit(ctx, recs, lambda: [f"{r['id']}  {r['type']}  {r['state']}" for r in recs])


@click.command()
@click.argument("type")
@click.option("--state", type=click.Choice(TERMINAL_STATES), default=None,
              help="Only this terminal state.")
@click.option("--count", default=100, show_default=True, help="At most this many, newest first.")
@common
@click.pass_context
def terminals(ctx: click.Context, type: str, state: str | None, count: int,
              **common_opts: Any) -> None:
    """List the newest terminal Flows of TYPE (e.g. the failed ones)."""
    _setup(ctx, **common_opts)
    recs = [_record(r) for r in _run(ctx, lambda c: c.terminals(type, state, count))]
    _emit(ctx, recs, lambda: [f"{r['id']}  {r['state']}  {r['error'] or r['result'] or ''}"
                              for r in recs])


@click.command()
@click.argument("flow_id")
@click.argument("name")
@click.option("--if-state", multiple=True, help="Only when the Flow is in this state.")
@click.option("--to", "transition_to", default=None, help="Move the Flow to this state.")
@click.option("--idempotency-key", default=None, help="A repeat with this key is a no-op.")
@common
@click.pass_context
def signal(ctx: click.Context, flow_id: str, name: str, if_state: tuple[str, ...],
           transition_to: str | None, idempotency_key: str | None, **common_opts: Any) -> None:
    """Send signal NAME to a Flow (optionally moving it, guarded by --if-state)."""
    _setup(ctx, **common_opts)
    done = _run(ctx, lambda c: c.signal(flow_id, name, if_state=list(if_state) or None,
                                        transition_to=transition_to,
                                        idempotency_key=idempotency_key))
    _emit(ctx, {"id": flow_id, "applied": done},
          lambda: [f"{'signaled' if done else 'already signaled (idempotent)'} {flow_id}"])



@click.command("store-setup")
@common
@click.pass_context
def store_setup(ctx: click.Context, **common_opts: Any) -> None:
    """Load this version's engine library into the store (every primary of a cluster): the
    admin step that lets runtime users run without FUNCTION LOAD (docs/security.md)."""
    _setup(ctx, **common_opts)
    from .flow.store import LIBRARY_NAME, LIBRARY_SHA256

    nodes = _run(ctx, lambda c: c.store.setup_library())
    data = {"library": LIBRARY_NAME, "sha256": LIBRARY_SHA256, "nodes": nodes}
    _emit(ctx, data, lambda: [f"loaded {LIBRARY_NAME} (sha256 {LIBRARY_SHA256[:16]}) on "
                              f"{nodes} node(s); verified"])


@click.command("store-url")
@click.option("--config", "-c", "config", required=True, envvar="FERRICFLOWD_CONFIG",
              type=click.Path(dir_okay=False), help="The daemon's config file.")
@click.option("--with-password", is_flag=True, help="Print a password in the URL as it is.")
def store_url(config: str, with_password: bool) -> None:
    """Print the URL of the config's store: store.url, or the embedded store's unix socket
    when the config has none (what `redis-cli -s` or a client of your own connects to)."""
    ctx = click.get_current_context()
    ctx.obj = {"config": config}
    url = _config(ctx).store_url
    from .flow.urls import redact

    click.echo(url if with_password else redact(url))
