"""The supervisor's small HTTP endpoint on `daemon.listen`: /metrics, /healthz, /readyz and
/status (the process table and groups, for the web console).

It runs in its own threads (a fixed few, however many clients connect: HealthServer) and
never touches the process table: the supervisor loop publishes an immutable `Health`
snapshot on every turn and the handlers only read the latest one. /healthz answers "is the
supervisor loop turning?" and never depends on the store (a store outage must not make
Kubernetes restart every pod); /readyz adds the store ping cached by the maintenance
thread, group strength, draining and crash loops.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from ferricflowd.supervisor.promdir import PromDir

__all__ = ["Health", "HealthServer", "parse_listen"]

log = logging.getLogger(__name__)

POOL_THREADS = 4  # answers come from memory: a few threads keep up with any scraper
MAX_CONNECTIONS = 256  # open and not yet answered; beyond it the oldest is dropped
REQUEST_TIMEOUT_S = 5.0  # accept -> complete request head, or the connection is closed
SEND_TIMEOUT_S = 5.0  # the whole reply, once a pool thread has it
MAX_HEAD_BYTES = 16_384
_IDLE_CHECK_S = 0.5


@dataclass(frozen=True)
class Health:
    """What the loop last saw; `loop_tick` is a time.monotonic() value."""

    loop_tick: float
    ready: bool = False
    reasons: tuple[str, ...] = ()
    groups: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)  # supervisor/console.py: status_doc


@dataclass
class _Pending:
    """A connection whose request head is still arriving."""

    addr: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


def _drop(sock: socket.socket, sel: selectors.BaseSelector,
          pending: dict[socket.socket, _Pending]) -> None:
    del pending[sock]
    sel.unregister(sock)
    sock.close()


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Handler(BaseHTTPRequestHandler):
    """One request, whose head the listener thread has already read in full (`request`
    is (socket, head)); the answer says Connection: close, so no thread waits for a next."""

    server: HealthServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    timeout = SEND_TIMEOUT_S  # the whole reply (sendall's timeout is a total since 3.5)

    def setup(self) -> None:
        self.request, head = self.request
        super().setup()
        self.rfile.close()
        self.rfile = io.BytesIO(head)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        owner = self.server
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
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http %s %s", self.address_string(), format % args)


class HealthServer:
    """Serves the supervisor's snapshot and the merged metrics from a fixed set of threads.

    One listener thread accepts connections and reads each request head without blocking
    (a selector loop), so an idle or slow client holds a socket, never a thread; a
    connection without a complete head REQUEST_TIMEOUT_S after accept is closed, and past
    MAX_CONNECTIONS the oldest is dropped. Complete requests go to POOL_THREADS handlers."""

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
        self._address: str | None = None
        self._thread: threading.Thread | None = None
        self._pool: list[threading.Thread] = []
        self._requests: queue.SimpleQueue[tuple[socket.socket, Any, bytes] | None] = (
            queue.SimpleQueue())
        self._stopping = threading.Event()
        self._wake_r: socket.socket | None = None  # stop() writes to _wake_w: select returns
        self._wake_w: socket.socket | None = None

    def start(self) -> None:
        """Bind and serve in daemon threads; an OSError (port taken) propagates."""
        host, port = parse_listen(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=socket.SOMAXCONN)
        listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        bound_host, bound_port = listener.getsockname()[:2]
        self._address = (f"[{bound_host}]:{bound_port}" if ":" in str(bound_host)
                         else f"{bound_host}:{bound_port}")
        # daemon threads: a stuck client must not hold up the supervisor's exit
        self._thread = threading.Thread(target=self._listen, args=(listener,), name="ff-http",
                                        daemon=True)
        self._pool = [threading.Thread(target=self._answer, name=f"ff-http-{i}", daemon=True)
                      for i in range(POOL_THREADS)]
        for thread in (self._thread, *self._pool):
            thread.start()
        log.info("serving /metrics /healthz /readyz on http://%s", self.address)

    @property
    def address(self) -> str:
        return self._address or self.listen

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._wake_r is not None and self._wake_w is not None
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread.join(5.0)  # the listener closes its sockets as it leaves
        for _ in self._pool:
            self._requests.put(None)
        for worker in self._pool:
            worker.join(1.0)  # a reply in flight ends within SEND_TIMEOUT_S anyway
        self._wake_r.close()
        self._wake_w.close()

    def _listen(self, listener: socket.socket) -> None:
        """The selector loop: accept, gather request heads, expire, hand complete ones on."""
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        pending: dict[socket.socket, _Pending] = {}  # insertion order: oldest first
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select(_IDLE_CHECK_S):
                    sock = key.fileobj
                    if sock is listener:
                        self._accept(listener, sel, pending)
                    elif sock is not self._wake_r:
                        assert isinstance(sock, socket.socket)
                        self._read(sock, sel, pending)
                now = time.monotonic()
                while pending:  # deadlines follow accept order: expire from the front
                    oldest = next(iter(pending))
                    if pending[oldest].deadline > now:
                        break
                    _drop(oldest, sel, pending)
        finally:
            for sock in list(pending):
                _drop(sock, sel, pending)
            sel.close()
            listener.close()

    def _accept(self, listener: socket.socket, sel: selectors.BaseSelector,
                pending: dict[socket.socket, _Pending]) -> None:
        while True:
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                return
            except ConnectionError:  # the client gave up before we got to it
                continue
            except OSError as exc:  # EMFILE and the like: make room, try on the next turn
                log.warning("http accept failed: %s", exc)
                if pending:
                    _drop(next(iter(pending)), sel, pending)
                else:
                    self._stopping.wait(0.1)  # nothing of ours to free: do not spin
                return
            if len(pending) >= MAX_CONNECTIONS:
                _drop(next(iter(pending)), sel, pending)
            sock.setblocking(False)
            pending[sock] = _Pending(addr, time.monotonic() + REQUEST_TIMEOUT_S)
            sel.register(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket, sel: selectors.BaseSelector,
              pending: dict[socket.socket, _Pending]) -> None:
        conn = pending[sock]
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        conn.head += data
        if not data or len(conn.head) > MAX_HEAD_BYTES:
            _drop(sock, sel, pending)
        elif b"\r\n\r\n" in conn.head or b"\n\n" in conn.head:
            sel.unregister(sock)
            del pending[sock]
            self._requests.put((sock, conn.addr, bytes(conn.head)))

    def _answer(self) -> None:
        """A pool thread: answer complete requests until stop() sends None."""
        while (item := self._requests.get()) is not None:
            sock, addr, head = item
            try:
                sock.setblocking(True)
                _Handler((sock, head), addr, self)  # type: ignore[arg-type]
            except (ConnectionError, TimeoutError) as exc:  # a client that left: not ours
                log.debug("http client %s: %s", addr[0], exc)
            except Exception:  # noqa: BLE001 - one bad request must not end the thread
                log.warning("http request from %s failed", addr[0], exc_info=True)
            finally:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                sock.close()

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
