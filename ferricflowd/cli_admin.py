"""Operator commands for many Flows at once: browse, stuck, requeue, cancel, purge, rewind.

Mounted on the main click group by `cli.py` (`register(main)`), with the same store options
as the commands of cli_ops.py (`--config`/`--url`/`--namespace`/`--json`). The bulk commands
(requeue, cancel TYPE, purge) count what their filter matches, show a sample with
`--dry-run`, ask before acting unless `--yes`, then work in batches (one script call per
batch, each Flow guarded by the state and version the batch saw) at a rate limit, with a
progress bar. Ctrl-C stops after the batch in flight: every Flow is done or
untouched, and the same command run again carries on.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from . import exitcodes
from .cli_ops import _record, _run, _setup, common
from .flow.records import RUNNING, TERMINAL_STATES, FlowRecord
from .safetext import CLI_KEEP, escape_controls

if TYPE_CHECKING:
    from .flow.admin import BulkResult
    from .flow.browse import FlowFilter
    from .flow.client import FlowClient

WHEN_HELP = """\b
WHEN: now, an age (30m, 2h, 7d: that long ago), epoch milliseconds,
or ISO 8601 (2026-12-01T08:00, local time unless it names a zone).
"""
EXIT_HELP = WHEN_HELP + """\b
Exit codes:
  0    done (with --dry-run: counted); nothing matched
  1    some Flows were refused (a live lease, a family conflict; see the summary),
       or the answer at the prompt was no
  2    usage or config error; no terminal to ask on and no --yes
  5    store unreachable
  130  interrupted (Ctrl-C): each Flow is done or untouched; run it again to go on
"""
DEFAULT_RATE = 2_000  # as flow.admin.DEFAULT_RATE (not imported: the client loads lazily)
_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000}


def duration_ms(text: str) -> int:
    """"250ms", "30s", "5m", "2h", "7d", "1w" -> milliseconds."""
    match = _AGE_RE.match(text.strip())
    if not match:
        raise click.BadParameter(f"expected a duration such as 30s, 5m, 2h, 7d, got {text!r}")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


def when_ms(text: str, now_ms: int | None = None) -> int:
    """A point in time: "now", an age ("30m": 30 minutes ago), epoch milliseconds, or ISO
    8601 ("2026-12-01", "2026-12-01T08:00", local time unless it names a zone)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    text = text.strip()
    if text == "now":
        return now
    if _AGE_RE.match(text):
        return now - duration_ms(text)
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise click.BadParameter(f"expected now, an age (30m, 2h, 7d), epoch ms or an ISO "
                                 f"8601 time, got {text!r}") from None


def filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The Flow filter options (FlowFilter's fields)."""
    for name, help_text in reversed((
        ("--error-contains", "Last error contains this text (case-insensitive)."),
        ("--min-attempts", "Attempt number in the current state is at least this."),
        ("--updated-after", "Last changed at or after WHEN (terminal: ended)."),
        ("--updated-before", "Last changed before WHEN (terminal: ended)."),
        ("--due-after", "Due at or after WHEN (Flows at rest only)."),
        ("--due-before", "Due before WHEN (Flows at rest only)."),
    )):
        metavar = {"--min-attempts": "N", "--error-contains": "TEXT"}.get(name, "WHEN")
        fn = click.option(name, type=int if metavar == "N" else str, default=None,
                          help=help_text, metavar=metavar)(fn)
    return fn


def _filter(states: tuple[str, ...], opts: dict[str, Any]) -> FlowFilter:
    from .flow.browse import FlowFilter

    times = {f"{k}_ms": when_ms(opts[k]) for k in ("due_before", "due_after", "updated_before",
                                                   "updated_after") if opts.get(k)}
    return FlowFilter(states=states, min_attempts=opts.get("min_attempts"),
                      error_contains=opts.get("error_contains"), **times)


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _age(ms: int | None, now: int) -> str:
    if ms is None:
        return "-"
    s = (now - ms) / 1000
    return f"{s:.1f}s" if abs(s) < 120 else f"{s / 60:.1f}m" if abs(s) < 7200 else \
        f"{s / 3600:.1f}h"


def _row(r: FlowRecord, now: int) -> str:
    state = f"running:{r.run_state}" if r.state == RUNNING else r.state
    when = (r.next_run_at_ms if r.next_run_at_ms is not None and not r.terminal
            else r.updated_at_ms)
    error = escape_controls((r.error or b"").decode("utf-8", "replace").replace("\n", " "),
                            CLI_KEEP)[:60]  # escaped, then cut: the column stays 60 wide
    flow_id = escape_controls(r.id, CLI_KEEP)
    return f"{flow_id:24} {state:20} {r.attempt:>4} {_age(when, now):>8}  {error}"


HEADER = f"{'ID':24} {'STATE':20} {'ATT':>4} {'AGE':>8}  ERROR"


# -- browse and stuck --------------------------------------------------------------------------


@click.command(short_help="List a type's Flows in any state, with filters.",
               epilog=WHEN_HELP + "\nExit codes: 0 listed (maybe none), 2 usage or config "
                      "error, 5 store unreachable.")
@click.argument("type")
@click.option("--state", "-s", "states", multiple=True,
              help="Only this state (repeat for more; running and terminal states too). "
                   "Default: every state.")
@filters
@click.option("--newest", is_flag=True, help="Newest first (default: oldest first).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000),
              help="At most this many Flows.")
@click.option("--cursor", default=None, help="Go on from a cursor a previous page printed.")
@common
@click.pass_context
def browse(ctx: click.Context, type: str, states: tuple[str, ...], newest: bool, limit: int,
           cursor: str | None, config: Any, url: Any, namespace: Any, as_json: bool,
           **criteria: Any) -> None:
    """List the Flows of TYPE in any state, oldest first by their index time (due time;
    running: lease deadline; terminal: end time; parked: since), with filters. Paging costs
    the same at any depth: pass the printed --cursor for the next page (alias: flows)."""
    _setup(ctx, config, url, namespace, as_json)
    flt = _filter(states, criteria)

    def collect(c: FlowClient) -> tuple[list[FlowRecord], str | None]:
        recs: list[FlowRecord] = []
        at = cursor
        while len(recs) < limit:
            page = c.browse(type, flt, order="newest" if newest else "oldest",
                            limit=limit - len(recs), cursor=at)
            recs.extend(page.records)
            at = page.cursor
            if at is None:
                break
        return recs, at

    recs, nxt = _run(ctx, collect)
    now = int(time.time() * 1000)
    if as_json:
        click.echo(json.dumps({"flows": [_record(r) for r in recs],
                                             "cursor": nxt}, indent=2, default=str))
        return
    click.echo(HEADER)
    for r in recs:
        click.echo(_row(r, now))
    if nxt is not None:
        click.echo(f"-- more: --cursor {nxt}", err=True)


flows = click.Command("flows", params=browse.params, callback=browse.callback,
                      help=browse.help, short_help="Alias of browse.", epilog=browse.epilog)


@click.command(short_help="Expired leases and Flows due for too long.",
               epilog="Exit codes: 0 nothing stuck, 1 stuck Flows listed (as grep does), 2 "
                      "usage or config error, 5 store unreachable.")
@click.argument("types", nargs=-1)
@click.option("--due-for", default="5m", show_default=True,
              help="Due for longer than this (e.g. 30s, 10m, 2h).")
@click.option("--parked-for", default=None,
              help="Also parents parked (waiting for children) longer than this.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="At most this many per type.")
@common
@click.pass_context
def stuck(ctx: click.Context, types: tuple[str, ...], due_for: str, parked_for: str | None,
          limit: int, config: Any, url: Any, namespace: Any, as_json: bool) -> None:
    """Running Flows whose lease expired (their worker is gone and nobody reclaimed them
    yet), and Flows due longer than --due-for (no worker takes them), of TYPES (default:
    all types)."""
    _setup(ctx, config, url, namespace, as_json)
    due_ms = duration_ms(due_for)
    parked_ms = duration_ms(parked_for) if parked_for else None

    def collect(c: FlowClient) -> dict[str, list[FlowRecord]]:
        return {t: c.stuck(t, due_for_ms=due_ms, parked_for_ms=parked_ms, limit=limit).records
                for t in types or c.types()}

    found = _run(ctx, collect)
    now = int(time.time() * 1000)
    if as_json:
        click.echo(json.dumps(
            {t: [_record(r) for r in recs] for t, recs in found.items()}, indent=2, default=str))
    else:
        for t, recs in found.items():
            if recs:
                click.echo(f"{t}: {len(recs)} stuck")
                click.echo(HEADER)
                for r in recs:
                    click.echo(_row(r, now))
    if any(found.values()):
        ctx.exit(exitcodes.FAILURE)


# -- bulk commands -----------------------------------------------------------------------------


def bulk_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--dry-run, --yes, --sample, --batch, --rate, --newest for the bulk commands."""
    for decorator in reversed((
        click.option("--dry-run", is_flag=True, help="Count the matching Flows and show a "
                     "sample; change nothing."),
        click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
        click.option("--sample", default=10, show_default=True, type=click.IntRange(0, 1000),
                     help="Flows shown by --dry-run and at the prompt."),
        click.option("--batch", default=200, show_default=True, type=click.IntRange(1, 5000),
                     help="Flows per batch (one script call per batch)."),
        click.option("--rate", default=DEFAULT_RATE, show_default=True, type=float,
                     help="At most this many Flows per second (0: no limit), so live "
                          "workers keep the store."),
        click.option("--newest", is_flag=True, help="Newest first within each partition "
                     "(default: oldest first)."),
    )):
        fn = decorator(fn)
    return fn


def _bulk(ctx: click.Context, verb: str, type: str, flt: FlowFilter, opts: dict[str, Any],
          run: Callable[..., BulkResult]) -> None:
    """Count, show, confirm, run with a progress bar and Ctrl-C handling, summarise, exit."""
    as_json = ctx.obj["json"]
    order = "newest" if opts["newest"] else "oldest"

    def prepare(c: FlowClient) -> tuple[int, int, list[FlowRecord]]:
        snapshot = c.server_ms()
        scoped = flt.bounded(snapshot)
        return snapshot, c.count_matching(type, scoped), (
            c.browse(type, scoped, order=order, limit=opts["sample"]).records
            if opts["sample"] else [])

    snapshot, total, sample = _run(ctx, prepare)
    what = f"{total} Flow(s) of type {type!r} in {', '.join(flt.states)}"
    if opts["dry_run"] or total == 0:
        _summary_preview(ctx, verb, what, total, sample, dry_run=opts["dry_run"])
        return
    if not opts["yes"]:
        if not sys.stdin.isatty():
            click.echo(f"ferricflowd: {verb} {what}: pass --yes (no terminal to ask on)",
                       err=True)
            ctx.exit(exitcodes.USAGE)
        _summary_preview(ctx, verb, what, total, sample, dry_run=True, to_err=True)
        click.confirm(f"{verb.capitalize()} {what}?", abort=True, err=True)
    stop = _StopOnInterrupt()
    with stop, click.progressbar(length=total, label=verb.capitalize(), file=sys.stderr,
                                 show_pos=True) as bar:
        shown = 0

        def progress(handled: int, done: int) -> None:
            nonlocal shown
            bar.update(handled - shown)
            shown = handled

        result = _run(ctx, lambda c: run(c, batch=opts["batch"], order=order,
                                         rate=opts["rate"] or None, snapshot_ms=snapshot,
                                         progress=progress, should_stop=stop.requested))
    _report(ctx, verb, result, as_json)


def _summary_preview(ctx: click.Context, verb: str, what: str, total: int,
                     sample: list[FlowRecord], *, dry_run: bool, to_err: bool = False) -> None:
    if ctx.obj["json"] and not to_err:
        click.echo(json.dumps({"action": verb, "dry_run": dry_run,
                                             "matched": total,
                                             "sample": [_record(r) for r in sample]},
                                            indent=2, default=str))
        return
    now = int(time.time() * 1000)
    click.echo(f"{'would ' + verb if dry_run else 'nothing to ' + verb}: {what}", err=to_err)
    if sample:
        click.echo(HEADER, err=to_err)
        for r in sample:
            click.echo(_row(r, now), err=to_err)
        if total > len(sample):
            click.echo(f"... and {total - len(sample)} more", err=to_err)


def _report(ctx: click.Context, verb: str, result: BulkResult, as_json: bool) -> None:
    data = {"action": result.action, "matched": result.matched, "done": result.done,
            "skipped": result.skipped, "refused": result.refused,
            "interrupted": result.interrupted, "snapshot_ms": result.snapshot_ms,
            "errors": [{"id": i, "error": e} for i, e in result.errors]}
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        refused = ", ".join(f"{n} {k}" for k, n in result.refused.items()) or "none"
        click.echo(f"{verb}: {result.done} done, {result.skipped} skipped (changed "
                   f"meanwhile), refused: {refused}")
        for flow_id, error in result.errors:
            click.echo(escape_controls(f"  {flow_id}: {error}", CLI_KEEP), err=True)
    if result.interrupted:
        click.echo(f"ferricflowd: interrupted; every Flow is done or untouched. Run the same "
                   f"command again to go on (add --updated-before {result.snapshot_ms} to "
                   "leave out Flows that changed since this run started).", err=True)
        ctx.exit(exitcodes.INTERRUPTED)
    if result.refused:
        ctx.exit(exitcodes.FAILURE)


class _StopOnInterrupt:
    """The first Ctrl-C asks the bulk loop to stop after the batch in flight (no Flow is
    ever half-done: each is changed by one atomic script call); a second one interrupts at
    once, which is as safe for the store, only the summary is lost."""

    def __init__(self) -> None:
        self._asked = False
        self._previous: Any = None

    def requested(self) -> bool:
        return self._asked

    def _handle(self, signum: int, frame: Any) -> None:
        if self._asked:
            raise KeyboardInterrupt
        self._asked = True
        click.echo("\nferricflowd: stopping after this batch (Ctrl-C again to stop now)",
                   err=True)

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _states(required: bool = True, choices: tuple[str, ...] | None = None) -> Any:
    return click.option("--state", "-s", "states", multiple=True, required=required,
                        type=click.Choice(choices) if choices else None,
                        help="Flows in this state (repeat for more); running means a "
                             "lease that expired.")


@click.command(short_help="Requeue every Flow of TYPE a filter matches.", epilog=EXIT_HELP)
@click.argument("type")
@_states()
@click.option("--to", "to_state", default=None,
              help="The state to requeue into [default: the state each Flow was in last, "
                   "from its history].")
@click.option("--at", "at", default=None, metavar="WHEN", help="Due at WHEN (default: now).")
@click.option("--delay", default=None, help="Due after this long (e.g. 10m).")
@click.option("--keep-attempts", is_flag=True, help="Keep attempt and crash counts (default: "
              "reset them, so the retry policy starts over).")
@click.option("--reason", default="requeued by operator", show_default=True)
@click.option("--by", default=None, help="Who asks (history) [default: user@host].")
@filters
@bulk_options
@common
@click.pass_context
def requeue(ctx: click.Context, type: str, states: tuple[str, ...], to_state: str | None,
            at: str | None, delay: str | None, keep_attempts: bool, reason: str,
            by: str | None, config: Any, url: Any, namespace: Any, as_json: bool,
            **opts: Any) -> None:
    """Requeue every Flow of TYPE that the filters match (e.g. --state failed): each goes
    back into a state, due now, with fencing + 1 and a `rewound` history event; payload and
    values are kept. Leased Flows and families that cannot be requeued are refused and
    counted. Example: ferricflowd requeue email --state failed --updated-after 12h --yes"""
    _setup(ctx, config, url, namespace, as_json)
    if at and delay:
        raise click.UsageError("give --at or --delay, not both")
    run_at = when_ms(at) if at else (int(time.time() * 1000) + duration_ms(delay)
                                     if delay else None)
    flt = _filter(states, opts)
    _bulk(ctx, "requeue", type, flt, opts, lambda c, **kw: c.requeue(
        type, flt, to_state=to_state, run_at_ms=run_at, reason=reason, by=by or _who(),
        keep_attempts=keep_attempts, **kw))


@click.command(short_help="Delete terminal Flows now, with history and values.",
               epilog=EXIT_HELP)
@click.argument("type")
@_states(choices=TERMINAL_STATES)
@filters
@bulk_options
@common
@click.pass_context
def purge(ctx: click.Context, type: str, states: tuple[str, ...], config: Any, url: Any,
          namespace: Any, as_json: bool, **opts: Any) -> None:
    """Delete every terminal Flow of TYPE that the filters match, with its history and
    values, now (not at the retention). Example: ferricflowd purge email --state completed
    --updated-before 1d --yes"""
    _setup(ctx, config, url, namespace, as_json)
    flt = _filter(states, opts)
    _bulk(ctx, "purge", type, flt, opts, lambda c, **kw: c.purge(type, flt, **kw))


@click.command(short_help="Cancel a Flow, or every Flow a filter matches.", epilog=EXIT_HELP)
@click.argument("target")
@_states(required=False)
@click.option("--reason", default="cancelled by operator", show_default=True)
@filters
@bulk_options
@common
@click.pass_context
def cancel(ctx: click.Context, target: str, states: tuple[str, ...], reason: str,
           config: Any, url: Any, namespace: Any, as_json: bool, **opts: Any) -> None:
    """Cancel one Flow: `cancel FLOW_ID` (not running; its unfinished children too); or
    every Flow of a type that the filters match: `cancel TYPE --state queued [filters]`
    (running Flows only once their lease expired)."""
    _setup(ctx, config, url, namespace, as_json)
    if not states:
        done = _run(ctx, lambda c: c.cancel(target, reason))
        if as_json:
            click.echo(json.dumps({"id": target, "cancelled": done}))
        else:
            click.echo(f"{'cancelled' if done else 'already cancelled'} {target}")
        return
    flt = _filter(states, opts)
    _bulk(ctx, "cancel", target, flt, opts,
          lambda c, **kw: c.cancel_matching(target, flt, reason=reason, **kw))


@click.command(short_help="Requeue one Flow that nobody holds.",
               epilog="Exit codes: 0 rewound, 1 refused (leased, family conflict, stale "
                      "version, state mismatch, not found), 2 usage or config error, 5 store "
                      "unreachable.")
@click.argument("flow_id")
@click.option("--to", "to_state", default=None,
              help="The state [default: the one at --to-version, else the last one].")
@click.option("--to-version", type=click.IntRange(1), default=None,
              help="Go back to the state the Flow was in at this history version.")
@click.option("--at", "at", default=None, metavar="WHEN", help="Due at WHEN (default: now).")
@click.option("--keep-attempts", is_flag=True, help="Keep attempt and crash counts.")
@click.option("--reason", default="rewound by operator", show_default=True)
@click.option("--by", default=None, help="Who asks (history) [default: user@host].")
@click.option("--if-state", multiple=True, help="Only when the Flow is in this state.")
@click.option("--if-version", type=int, default=None,
              help="Only when the Flow is still at this version (as `get` showed it).")
@click.option("--partition-key", default=None, help="The Flow's partition key, if it has one.")
@common
@click.pass_context
def rewind(ctx: click.Context, flow_id: str, to_state: str | None, to_version: int | None,
           at: str | None, keep_attempts: bool, reason: str, by: str | None,
           if_state: tuple[str, ...], if_version: int | None, partition_key: str | None,
           config: Any, url: Any, namespace: Any, as_json: bool) -> None:
    """Requeue one Flow that nobody holds (terminal, at rest, or with an expired lease)."""
    _setup(ctx, config, url, namespace, as_json)
    state = _run(ctx, lambda c: c.rewind(
        flow_id, to_state=to_state, to_version=to_version,
        run_at_ms=when_ms(at) if at else None, reason=reason, by=by or _who(),
        keep_attempts=keep_attempts, if_state=list(if_state) or None, if_version=if_version,
        partition_key=partition_key))
    if as_json:
        click.echo(json.dumps({"id": flow_id, "state": state}))
    else:
        click.echo(f"rewound {flow_id} to {state}")


def register(main: click.Group) -> None:
    """Add the commands of this module to the main group."""
    for cmd in (browse, flows, stuck, requeue, purge, cancel, rewind):
        main.add_command(cmd)
