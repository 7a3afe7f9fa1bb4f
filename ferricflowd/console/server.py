"""Run the console: `python -m ferricflowd.console` (the daemon's supervised child) and
`ferricflowd console` (standalone, like Flower: no workers) both end up in `serve`.

The listening socket is bound here, before uvicorn starts, so a taken port or a bad address
exits with exitcodes.CONFIG and a one-line reason (the supervisor then waits for a HUP
instead of restarting it in a loop). SIGTERM and SIGINT stop uvicorn gracefully and the
process exits 0. Started by the supervisor (FERRICFLOWD_SUPERVISOR_PID set), the console
exits when the supervisor is gone.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

from ferricflowd import exitcodes

if TYPE_CHECKING:
    from ferricflowd.config import Config

__all__ = ["main", "serve"]

log = logging.getLogger(__name__)

# The supervisor names its pid here (supervisor/children.py SUPERVISOR_PID_ENV); the console
# may not import the supervisor, so the name is repeated.
SUPERVISOR_PID_ENV = "FERRICFLOWD_SUPERVISOR_PID"


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(listen: str) -> socket.socket:
    """A listening socket on `listen`; OSError if the address is taken or not ours."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def daemon_url_of(config: Config) -> str:
    """Where this host reaches the daemon's /status: daemon.listen, a wildcard on loopback."""
    host, port = parse_listen(config.daemon.listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(config: Config, *, listen: str | None = None, store_url: str | None = None,
          daemon_url: str | None = None) -> int:
    """Serve the console until SIGTERM/SIGINT; returns the process exit code."""
    import uvicorn

    from .app import create_app

    listen = listen if listen is not None else config.console.listen
    if not listen:
        log.error("the console is disabled ([console] listen is empty); give --listen")
        return exitcodes.CONFIG
    try:
        sock = bind(listen)
    except (OSError, ValueError) as exc:
        log.error("console: cannot listen on %s: %s", listen, exc)
        return exitcodes.CONFIG
    host, _ = parse_listen(listen)
    if not is_loopback(host) and not config.console.token:
        log.warning("console on %s without a token: anyone who reaches it can read it", listen)
    if config.console.token and len(config.console.token) < 16:
        log.warning("console: the token is short (%d characters); use 16 or more",
                    len(config.console.token))
    client = config.store.client(store_url or config.store_url)
    app = create_app(config, client, daemon_url=daemon_url or daemon_url_of(config),
                     loopback_only=is_loopback(host))
    server = uvicorn.Server(uvicorn.Config(
        app, log_config=None, access_log=config.daemon.log_level == "debug", lifespan="off",
        server_header=False, proxy_headers=False, timeout_keep_alive=5,
        timeout_graceful_shutdown=2))
    _watch_parent(server)
    address = sock.getsockname()
    log.info("console on http://%s:%d/ (%s)", *address[:2],
             "read-only: no token" if not config.console.token else "actions need the token")
    # uvicorn re-raises the signal that stopped it once it is done; with these no-ops as the
    # handlers it restores, a graceful stop exits 0 instead of dying by that signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        client.close()
    return exitcodes.OK


def _watch_parent(server: object) -> None:
    """Stop when the supervisor that started us is gone (we were re-parented)."""
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if not expected:
        return

    def watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(1.0)
        log.warning("console: the supervisor (pid %s) is gone; exiting", expected)
        server.should_exit = True  # type: ignore[attr-defined]

    threading.Thread(target=watch, name="ff-console-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """`python -m ferricflowd.console --config FILE [--store-url URL] [--daemon-url URL]`."""
    from setproctitle import setproctitle

    from ferricflowd.config import ConfigError, load_config
    from ferricflowd.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m ferricflowd.console")
    parser.add_argument("--config", required=True)
    parser.add_argument("--store-url", help="the embedded store's socket (set by the daemon)")
    parser.add_argument("--daemon-url", help="where the daemon's /status is")
    parser.add_argument("--listen", help="overrides console.listen")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        log.error("console: config error: %s", exc)
        sys.exit(exitcodes.CONFIG)
    setproctitle(f"ferricflowd: console {args.listen or config.console.listen}")
    sys.exit(serve(config, listen=args.listen, store_url=args.store_url,
                   daemon_url=args.daemon_url))
