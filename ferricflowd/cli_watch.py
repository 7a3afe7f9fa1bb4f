"""`ferricflowd stats`: the backlog per type and state, once or live (`--watch`).

Mounted on the main click group by `cli.py` (`register(main)`). With `--watch` the view is
redrawn in place every `--interval` (on a terminal; otherwise each frame is printed after
the last, or one JSON line per frame with `--json`) until Ctrl-C, which exits 0. A frame is
a few reads per type: the exact counts (stats.lua in each partition), the Flows that ended
in the last minute (ZCOUNT of the terminal indexes) and the longest-running leases.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from .cli_admin import duration_ms
from .cli_ops import _run, _setup, common
from .flow.records import RUNNING, TERMINAL_STATES
from .safetext import CLI_KEEP, escape_controls

if TYPE_CHECKING:
    from .flow.client import FlowClient

MINUTE_MS = 60_000


def collect(c: FlowClient, types: tuple[str, ...], top: int) -> dict[str, Any]:
    """One frame: per type its counts, per state its backlog, the last minute's ends, and
    the `top` longest-running Flows of all the types."""
    now = c.server_ms()
    out: dict[str, Any] = {"at_ms": now, "types": {}, "longest_running": []}
    running = []
    for t in types or c.types():
        s = c.stats(t)
        out["types"][t] = {
            "counts": dict(s.counts), "running": s.running,
            "per_minute": c.finished_since(t, now - MINUTE_MS),
            "states": {k: {"count": v.count, "due_now": v.due_now,
                           "oldest_due_age_ms": v.oldest_due_age_ms}
                       for k, v in s.states.items()}}
        if top > 0:
            running.extend(c.running(t, limit=top))
    running.sort(key=lambda f: f.claimed_at_ms)
    out["longest_running"] = [
        {"id": f.id, "type": f.type, "state": f.state, "worker": f.worker,
         "running_ms": now - f.claimed_at_ms, "lease_left_ms": f.lease_deadline_ms - now}
        for f in running[:top]]
    return out


def _secs(ms: int | None) -> str:
    if ms is None:
        return "-"
    s = ms / 1000
    return f"{s:.1f}s" if abs(s) < 120 else f"{s / 60:.1f}m" if abs(s) < 7200 else \
        f"{s / 3600:.1f}h"


def render(data: dict[str, Any], *, live: bool = False) -> list[str]:
    """The frame as lines: per type and state count, due now, oldest due; per type running
    and ends per minute; with `live`, the longest-running Flows."""
    rows = [f"{'TYPE':16} {'STATE':16} {'COUNT':>8} {'DUE NOW':>8} {'OLDEST DUE':>11}"]
    for t, s in data["types"].items():
        for st, v in s["states"].items():
            rows.append(f"{t:16} {st:16} {v['count']:>8} {v['due_now']:>8} "
                        f"{_secs(v['oldest_due_age_ms']):>11}")
        for st in (RUNNING, *TERMINAL_STATES):
            n = s["running"] if st == RUNNING else s["counts"].get(st, 0)
            rows.append(f"{t:16} {st:16} {n:>8}")
    if not live:
        return [escape_controls(row, CLI_KEEP) for row in rows]  # types come from the store
    rows += ["", f"{'TYPE':16} {'BACKLOG':>8} {'RUNNING':>8} {'DONE/MIN':>9} {'FAILED/MIN':>11} "
                 f"{'CANCELLED/MIN':>14}"]
    for t, s in data["types"].items():
        backlog = sum(v["count"] for v in s["states"].values())
        pm = s["per_minute"]
        rows.append(f"{t:16} {backlog:>8} {s['running']:>8} {pm.get('completed', 0):>9} "
                    f"{pm.get('failed', 0):>11} {pm.get('cancelled', 0):>14}")
    if data["longest_running"]:
        rows += ["", "LONGEST RUNNING",
                 f"{'ID':24} {'TYPE':16} {'STATE':16} {'FOR':>8} {'LEASE LEFT':>10}  WORKER"]
        for f in data["longest_running"]:
            rows.append(f"{f['id']:24} {f['type']:16} {f['state']:16} "
                        f"{_secs(f['running_ms']):>8} {_secs(f['lease_left_ms']):>10}  "
                        f"{f['worker']}")
    return [escape_controls(row, CLI_KEEP) for row in rows]  # and Flow and worker ids


def watch(ctx: click.Context, types: tuple[str, ...], interval_s: float, top: int) -> None:
    """Redraw the frame every `interval_s` until Ctrl-C (exit 0)."""
    tty = sys.stdout.isatty() and not ctx.obj["json"]

    def loop(c: FlowClient) -> None:
        while True:
            started = time.monotonic()
            data = collect(c, types, top)
            if ctx.obj["json"]:
                click.echo(json.dumps(data, sort_keys=True))
            else:
                stamp = datetime.fromtimestamp(data["at_ms"] / 1000).strftime("%H:%M:%S")
                head = f"ferricflowd stats  {stamp}  every {interval_s:g}s  (Ctrl-C to quit)"
                frame = "\n".join([head, "", *render(data, live=True)])
                # Home, draw, clear what the last frame left below: no flicker.
                click.echo(f"\x1b[H{frame}\x1b[J" if tty else frame + "\n")
            time.sleep(max(0.0, interval_s - (time.monotonic() - started)))

    def handle_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM ends the view as Ctrl-C does: cursor back, exit 0

    previous = signal.signal(signal.SIGTERM, handle_term)
    try:
        if tty:
            click.echo("\x1b[?25l\x1b[2J", nl=False)  # hide the cursor, clear once
        _run(ctx, loop)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if tty:
            click.echo("\x1b[?25h", nl=False)


@click.command(short_help="Backlog per type and state, once or live (--watch).",
               epilog="Exit codes: 0 ok (also Ctrl-C ending --watch), 2 usage or config "
                      "error, 5 store unreachable.")
@click.argument("types", nargs=-1)
@click.option("--watch", "-w", "live", is_flag=True,
              help="Redraw live until Ctrl-C, with ends per minute and the longest-running "
                   "Flows.")
@click.option("--interval", default="2s", show_default=True,
              help="How often --watch redraws (e.g. 500ms, 2s).")
@click.option("--top", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="Longest-running Flows shown by --watch.")
@common
@click.pass_context
def stats(ctx: click.Context, types: tuple[str, ...], live: bool, interval: str, top: int,
          config: Any, url: Any, namespace: Any, as_json: bool) -> None:
    """Backlog per type and state: count, due now, oldest due age (all types if none given);
    --watch keeps it on screen, updating in place, like `watch` or `rq info --interval`."""
    _setup(ctx, config, url, namespace, as_json)
    if live:
        interval_ms = duration_ms(interval)
        if interval_ms < 100:
            raise click.BadParameter("must be at least 100ms", param_hint="--interval")
        watch(ctx, types, interval_ms / 1000, top)
        return
    data = _run(ctx, lambda c: collect(c, types, 0))
    if as_json:
        click.echo(json.dumps(data["types"], indent=2, sort_keys=True, default=str))
    else:
        for line in render(data):
            click.echo(line)


def register(main: click.Group) -> None:
    """Add `stats` to the main group."""
    main.add_command(stats)
