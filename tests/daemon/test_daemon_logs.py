"""With log_format = "json" every line of the daemon's log is one JSON object: a client
resetting its HTTP connection, a handler raising, and a worker's uncaught thread error
included; a handler's exception line names its Flow like the outcome lines do."""

from __future__ import annotations

import json
import signal
import socket
import struct

from ferricflowd.flow.queue import Queue
from tests.helpers import wait_for

H = "tests.daemon.handlers.basic"


def _reset_mid_request(port: int) -> None:
    """Send half a request and close with RST (SO_LINGER 0): the server's read fails with
    ConnectionResetError."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_every_line_of_a_json_log_is_json(start_daemon):
    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": f"{H}:boom"}},
                          daemon={"log_format": "json"})
    for _ in range(5):
        _reset_mid_request(daemon.port)
    Queue(daemon.client, "q").enqueue("b1")
    wait_for(lambda: '"raised"' in daemon.log(), timeout=10, what="the handler's error line")
    assert daemon.ready()  # the resets did not hurt the endpoint
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0

    lines = [line for line in daemon.log().splitlines() if line.strip()]
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    assert bad == [], "\n".join(bad[:20])
    records = [json.loads(line) for line in lines]
    raised = next(r for r in records if r.get("event") == "raised")
    assert (raised["type"], raised["id"], raised["state"], raised["attempt"]) == (
        "q", "b1", "queued", 1)
    assert raised["exception"] == "ValueError" and "boom in b1" in raised["exc"]
    assert "ConnectionResetError" not in daemon.log()
