"""The `ferricflowd` command line (click).

    ferricflowd [run] --config flows.toml      the daemon (run is the default command)
    ferricflowd --version | --help             (a bare `ferricflowd` prints the help)
    ferricflowd check --config flows.toml      import every handler in a fresh process
    ferricflowd console --config flows.toml    the web console alone (the daemon runs its own)
    ferricflowd enqueue|get|history|...        operator commands (cli_ops.py)
    ferricflowd browse|requeue|purge|...       many Flows at once (cli_admin.py)
    ferricflowd stats [--watch]                the backlog, live (cli_watch.py)

FERRICFLOWD_CONFIG stands in for --config everywhere. Config problems exit 2 with a message
naming the file and the dotted key; see EXIT_CODES_HELP for the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from ferricflowd import exitcodes
from ferricflowd.cli_admin import register as register_admin_commands
from ferricflowd.cli_ops import register as register_operator_commands
from ferricflowd.cli_schedules import schedules as schedule_commands
from ferricflowd.cli_watch import register as register_watch_commands
from ferricflowd.config import Config, ConfigError, load_config
from ferricflowd.procenv import worker_env

__all__ = ["cli", "main"]

EXIT_CODES_HELP = """\b
Exit codes:
  0  stopped cleanly (drained) / check passed
  1  failure (check: a handler does not load or does not cover its states)
  2  usage or config error; redis-server missing for the embedded store
  3  every group failed at boot: a handler module does not import
  4  every group failed at boot: invalid worker config (state without handler, ...)
  5  store unreachable (operator commands)
"""


class _DefaultRun(click.Group):
    """A group whose default command is `run` when the first argument is an option:
    `ferricflowd --config F` runs the daemon. A bare `ferricflowd` prints the help, and an
    unknown word is an unknown command (click names it), not an argument of `run`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        own_flags = set(ctx.help_option_names) | {"--version"}
        if args and args[0].startswith("-") and args[0] not in own_flags:
            args = ["run", *args]
        return super().parse_args(ctx, args)


config_option = click.option(
    "--config",
    "-c",
    "config_path",
    envvar="FERRICFLOWD_CONFIG",
    show_envvar=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The TOML config (flows.toml).",
)


def _load(path: Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load the config or exit 2 with the loader's message (file: dotted.key: problem)."""
    try:
        return load_config(path, os.environ, overrides or {})
    except ConfigError as exc:
        click.echo(f"ferricflowd: config error: {exc}", err=True)
        sys.exit(exitcodes.CONFIG)


@click.group(
    cls=_DefaultRun,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES_HELP,
    invoke_without_command=True,
)
@click.version_option(package_name="ferricflowd", prog_name="ferricflowd")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """ferricflowd: durable FerricFlow workflows on Redis, and the daemon that runs them."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command()
@config_option
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), help="Overrides daemon.log_format."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Overrides daemon.log_level.",
)
@click.option(
    "--listen", metavar="HOST:PORT", help="Overrides daemon.listen (/metrics /healthz /readyz)."
)
def run(
    config_path: Path, log_format: str | None, log_level: str | None, listen: str | None
) -> None:
    """Run the supervisor and its worker processes until SIGTERM/SIGINT (drain) or SIGQUIT.

    \b
    Signals: TERM/INT drain (a second one: fast stop), QUIT fast stop, HUP reload the
    config (only changed groups are replaced), TTIN/TTOU one process more/less per group,
    USR1 log the process table.
    """
    overrides = {
        key: value
        for key, value in (
            ("daemon.log_format", log_format),
            ("daemon.log_level", log_level),
            ("daemon.listen", listen),
        )
        if value is not None
    }
    config = _load(config_path, overrides)
    from ferricflowd.logs import setup_logging
    from ferricflowd.supervisor import Supervisor

    setup_logging(config.daemon.log_format, config.daemon.log_level)
    sys.exit(Supervisor(config, overrides).run())


@cli.command()
@config_option
def check(config_path: Path) -> None:
    """Import every group's handler in a fresh process and check that it covers the group's
    states; exits 0 when all load, 1 otherwise, 2 for a config error."""
    config = _load(config_path)
    env = worker_env()  # what the supervisor gives its workers: both import the same modules
    # One fresh interpreter per group, all at once: an import with side effects (or one that
    # calls os._exit) cannot disturb this process or the other groups' checks.
    procs = {
        group.name: subprocess.Popen(
            [sys.executable, "-m", "ferricflowd.worker", "--check", "--config", str(config.path),
             "--group", group.name, "--log-level", "error"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=env,
        )  # fmt: skip
        for group in config.groups
    }
    failed = 0
    for name, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode == 0:
            click.echo(out.strip() or f"ok: group {name!r}")
            continue
        failed += 1
        group = config.group(name)
        why = err.strip() or exitcodes.describe_returncode(proc.returncode)
        click.echo(f"FAILED: group {name!r} ({group.handler}): {why}", err=True)
    _report_unserved(config)
    if failed:
        click.echo(f"{failed} of {len(procs)} group(s) failed the check", err=True)
        sys.exit(exitcodes.FAILURE)
    click.echo(f"all {len(procs)} group(s) ok")


def _report_unserved(config: Config) -> None:
    """Warn about Flows due in a (type, state) that no group of the config claims: they wait
    forever (a typo'd type, a state missing from `states`). Needs the store; a warning only."""
    from ferricflowd.flow.errors import FerricflowdError

    if config.store.embedded and not config.daemon.embedded_socket.exists():
        return  # the daemon's own store, not started: nothing can be due in it yet
    served = {(g.type, s) for g in config.groups for s in g.states}
    client = config.store.client(config.store_url)
    try:
        due = [(t, s.state, s.due_now) for t in client.types()
               for s in client.stats(t).states.values() if s.due_now]
    except FerricflowdError as exc:
        click.echo(f"note: due backlog not checked (store: {exc})", err=True)
        return
    finally:
        client.close()
    for flow_type, state, n in due:
        if (flow_type, state) not in served:
            click.echo(f"warning: {n} Flow(s) of type {flow_type!r} due in state {state!r}, "
                       "which no group of this config handles", err=True)


@cli.command()
@config_option
@click.option("--listen", metavar="HOST:PORT", help="Overrides console.listen.")
@click.option("--daemon-url", metavar="URL",
              help="The daemon's /status to show its processes (default: from daemon.listen).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Overrides daemon.log_level.")
def console(config_path: Path, listen: str | None, daemon_url: str | None,
            log_level: str | None) -> None:
    """Serve the web console on its own (no workers), like Flower: for a host without the
    daemon, or a second console. The daemon starts one itself on console.listen."""
    overrides = {"console.listen": listen} if listen is not None else {}
    if log_level is not None:
        overrides["daemon.log_level"] = log_level
    config = _load(config_path, overrides)
    from ferricflowd.console.server import serve
    from ferricflowd.logs import setup_logging

    setup_logging(config.daemon.log_format, config.daemon.log_level)
    sys.exit(serve(config, daemon_url=daemon_url))


# ======================================================================================
# Operator commands (enqueue/start, get, history, children, terminals, stats, signal,
# cancel) talk to the store through FlowClient; they live in ferricflowd/cli_ops.py so the
# daemon commands above stay small.
# ======================================================================================

register_operator_commands(cli)
register_admin_commands(cli)  # browse, stuck, requeue, purge, cancel, rewind
register_watch_commands(cli)  # stats [--watch]
cli.add_command(schedule_commands)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ferricflowd")
