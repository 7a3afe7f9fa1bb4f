"""The supervisor's small HTTP endpoint on `daemon.listen`: /metrics, /healthz, /readyz and
/status (the process table and groups, for the web console).

It runs in its own threads and never touches the process table: the supervisor loop
publishes an immutable `Health` snapshot on every turn and the handlers only read the latest
one. /healthz answers "is the supervisor loop turning?" and never depends on the store (a
store outage must not make Kubernetes restart every pod); /readyz adds the store ping cached
by the maintenance thread, group strength, draining and crash loops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ferricflowd.supervisor.promdir import PromDir

__all__ = ["Health", "HealthServer", "parse_listen"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """What the loop last saw; `loop_tick` is a time.monotonic() value."""

    loop_tick: float
    ready: bool = False
    reasons: tuple[str, ...] = ()
    groups: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)  # supervisor/console.py: status_doc


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not hold up the supervisor's exit
    owner: HealthServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Through logging, not a raw traceback on stderr (socketserver's default), so a
        JSON log stays JSON; a client that hung up or reset is no error of ours."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("http client %s: %s", client_address[0], exc)
        else:
            log.warning("http request from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = owner.metrics.render()
            self.reply(200, body, content_type)
        elif path == "/healthz":
            self.reply_json(*owner.healthz())
        elif path == "/readyz":
            self.reply_json(*owner.readyz())
        elif path == "/status":
            self.reply_json(200, owner.health().status)
        else:
            paths = ["/metrics", "/healthz", "/readyz", "/status"]
            self.reply_json(404, {"status": "not found", "paths": paths})

    def reply_json(self, code: int, doc: dict[str, Any]) -> None:
        self.reply(code, (json.dumps(doc) + "\n").encode(), "application/json")

    def reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http %s %s", self.address_string(), format % args)


class HealthServer:
    """A threaded http.server serving the supervisor's snapshot and the merged metrics."""

    def __init__(
        self,
        listen: str,
        health: Callable[[], Health],
        metrics: PromDir,
        alive_within_s: float,
    ) -> None:
        self.listen = listen
        self.health = health
        self.metrics = metrics
        self.alive_within_s = alive_within_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread; an OSError (port taken) propagates."""
        host, port = parse_listen(self.listen)
        if ":" in host:
            _Server.address_family = socket.AF_INET6
        server = _Server((host, port), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="ff-http", daemon=True
        )
        self._thread.start()
        log.info("serving /metrics /healthz /readyz on http://%s", self.address)

    @property
    def address(self) -> str:
        if self._server is None:
            return self.listen
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        stopper = threading.Thread(target=server.shutdown, name="ff-http-stop", daemon=True)
        stopper.start()
        # serve_forever sees the stop request only when its select() returns; a connection
        # wakes it at once, where waiting would add up to poll_interval to every drain.
        host, port = server.server_address[:2]
        for _ in range(20):
            with contextlib.suppress(OSError):
                socket.create_connection((host, port), timeout=0.1).close()
            stopper.join(0.05)
            if not stopper.is_alive():
                break
        server.server_close()

    def healthz(self) -> tuple[int, dict[str, Any]]:
        age = time.monotonic() - self.health().loop_tick
        alive = age < self.alive_within_s
        return (200 if alive else 503), {
            "status": "alive" if alive else "stuck",
            "loop_age_s": round(age, 3),
        }

    def readyz(self) -> tuple[int, dict[str, Any]]:
        health = self.health()
        doc: dict[str, Any] = {"status": "ready" if health.ready else "not ready"}
        if health.reasons:
            doc["reasons"] = list(health.reasons)
        doc["groups"] = health.groups
        return (200 if health.ready else 503), doc
