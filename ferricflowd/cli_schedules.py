"""`ferricflowd schedules list|show|pause|resume|trigger|backfill|delete`.

The store is found as for the other operator commands (cli_ops.py: --config, or --url); the
output is text, or JSON with --json. Times are shown in the local time zone of this machine
and in UTC (JSON: ms since the epoch, and both ISO 8601 forms).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from .cli_ops import _emit, _run, _setup, common

if TYPE_CHECKING:
    from .flow.client import FlowClient
    from .flow.schedules import FireResult, ScheduleInfo

__all__ = ["schedules"]


def _when(ms: int | None) -> dict[str, Any] | None:
    if ms is None:
        return None
    t = ms / 1000
    return {"ms": ms, "local": datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds"),
            "utc": datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")}


def _shown(ms: int | None) -> str:
    w = _when(ms)
    return "-" if w is None else f"{w['local']} ({w['utc']})"


def _timing(info: ScheduleInfo) -> str:
    s = info.spec
    if s.cron is not None:
        return f"cron {s.cron!r} {s.timezone}"
    if s.every_ms is not None:
        return f"every {s.every_ms / 1000:g}s"
    return f"at {_when(s.at_ms)['utc']}"  # type: ignore[index]  # at_ms is set


def _info(info: ScheduleInfo, upcoming: int = 0) -> dict[str, Any]:
    s = info.spec
    out = {"name": s.name, "type": s.type, "state": s.state, "kind": s.kind, "cron": s.cron,
           "every_ms": s.every_ms, "at": _when(s.at_ms), "timezone": s.timezone,
           "start_at": _when(s.start_at_ms), "end_at": _when(s.end_at_ms),
           "jitter_ms": s.jitter_ms, "overlap": s.overlap,
           "catchup_window_ms": s.catchup_window_ms, "id_prefix": s.prefix,
           "origin": info.origin, "paused": info.paused, "next_due": _when(info.next_due_ms),
           "last_due": _when(info.last_due_ms), "last_flow_id": info.last_flow_id,
           "buffered_due": _when(info.buffered_due_ms), "fired": info.fired,
           "skipped": info.skipped, "partition": info.partition}
    if upcoming:
        out["upcoming"] = [_when(t) for t in info.upcoming(upcoming)]
        out["recent"] = [{"at": _when(e.at_ms), "due": _when(e.due_ms), "outcome": e.outcome,
                          "detail": e.detail} for e in info.recent]
    return out


def _status(info: ScheduleInfo) -> str:
    return "paused" if info.paused else "done" if info.next_due_ms is None else "active"


def _fires(results: list[FireResult]) -> list[dict[str, Any]]:
    return [{"outcome": r.outcome, "due": _when(r.due_ms), "detail": r.detail} for r in results]


def _fire_lines(results: list[FireResult]) -> list[str]:
    return [f"{r.outcome:10} {_shown(r.due_ms)} {r.detail}" for r in results] or ["nothing"]


@click.group("schedules")
def schedules() -> None:
    """List, inspect, pause, resume, trigger, backfill and delete schedules."""


@schedules.command("list")
@common
@click.pass_context
def list_(ctx: click.Context, **common_opts: Any) -> None:
    """Every schedule with its next due time (local and UTC)."""
    _setup(ctx, **common_opts)
    infos = _run(ctx, lambda c: c.schedules.list())
    _emit(ctx, [_info(i) for i in infos], lambda: [
        f"{'NAME':20} {'TYPE':12} {'STATUS':7} {'FIRED':>6} {'SKIPPED':>7}  NEXT DUE (LOCAL (UTC))",
        *[f"{i.name:20} {i.spec.type:12} {_status(i):7} {i.fired:>6} {i.skipped:>7}  "
          f"{_shown(i.next_due_ms)}" for i in infos]])


@schedules.command()
@click.argument("name")
@click.option("--next", "upcoming", default=5, show_default=True, help="Next due times to show.")
@common
@click.pass_context
def show(ctx: click.Context, name: str, upcoming: int, **common_opts: Any) -> None:
    """One schedule: its spec, next due times and recent fires (exit 1 if none)."""
    _setup(ctx, **common_opts)
    info = _run(ctx, lambda c: c.schedules.get(name))
    if info is None:
        click.echo(f"ferricflowd: schedule {name!r} not found", err=True)
        ctx.exit(1)
    data = _info(info, upcoming=max(upcoming, 1))

    def lines() -> list[str]:
        out = [f"{'name':16} {info.name}", f"{'flow':16} {info.spec.type} in {info.spec.state}"
               f" as {info.spec.prefix}:<due_ms>", f"{'when':16} {_timing(info)}",
               f"{'status':16} {_status(info)} (origin {info.origin}, overlap "
               f"{info.spec.overlap}, catch-up window {info.spec.catchup_window_ms / 1000:g}s)",
               f"{'fired':16} {info.fired} (skipped {info.skipped}); last flow "
               f"{info.last_flow_id or '-'}"]
        out += [f"{'next' if k == 0 else '':16} {_shown(t)}"
                for k, t in enumerate(info.upcoming(max(upcoming, 1)))]
        out += [f"{'recent' if k == 0 else '':16} {e.outcome:10} due {_shown(e.due_ms)} "
                f"{e.detail}" for k, e in enumerate(info.recent)]
        return out

    _emit(ctx, data, lines)


def _simple(verb: str, call: Any, doc: str) -> click.Command:
    @click.command(verb, help=doc)
    @click.argument("name")
    @common
    @click.pass_context
    def command(ctx: click.Context, name: str, **common_opts: Any) -> None:
        _setup(ctx, **common_opts)
        done = _run(ctx, lambda c: call(c, name))
        _emit(ctx, {"name": name, verb: done},
              lambda: [f"{name}: {verb}{'d' if verb.endswith('e') else 'ed'}" if done
                       else f"{name}: nothing to {verb}"])

    return command


def _pause(c: FlowClient, name: str) -> bool:
    return c.schedules.pause(name)


def _resume(c: FlowClient, name: str) -> bool:
    return c.schedules.resume(name)


def _delete(c: FlowClient, name: str) -> bool:
    return c.schedules.delete(name)


for _cmd in (_simple("pause", _pause, "Stop firing NAME (trigger and backfill still work)."),
             _simple("resume", _resume, "Fire NAME again from its next occurrence."),
             _simple("delete", _delete, "Delete NAME (the Flows it created stay).")):
    schedules.add_command(_cmd)


@schedules.command()
@click.argument("name")
@common
@click.pass_context
def trigger(ctx: click.Context, name: str, **common_opts: Any) -> None:
    """Fire NAME now (with its overlap policy)."""
    _setup(ctx, **common_opts)
    results = _run(ctx, lambda c: c.schedules.trigger(name))
    _emit(ctx, _fires(results), lambda: _fire_lines(results))


@schedules.command()
@click.argument("name")
@click.option("--start", required=True, help="ISO 8601 date-time (no offset: UTC).")
@click.option("--end", required=True, help="ISO 8601 date-time (no offset: UTC).")
@click.option("--limit", default=1000, show_default=True, help="At most this many Flows.")
@common
@click.pass_context
def backfill(ctx: click.Context, name: str, start: str, end: str, limit: int,
             **common_opts: Any) -> None:
    """Create the Flows of NAME's occurrences between --start and --end (inclusive) that
    have none yet."""
    from .flow.schedule_spec import iso_ms

    _setup(ctx, **common_opts)
    results = _run(ctx, lambda c: c.schedules.backfill(name, iso_ms(start), iso_ms(end),
                                                       limit=limit))
    _emit(ctx, _fires(results), lambda: _fire_lines(results))
