"""What reaches Sentry: no Flow payloads or values, one event for a retried failure, one
error-level event for a killed worker, boot import errors, release and environment."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from tests.daemons import SentryEnvelopes
from tests.helpers import wait_for

H = "tests.daemon.handlers"


@pytest.fixture
def sentry() -> Iterator[tuple[str, list[bytes]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SentryEnvelopes)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://public@127.0.0.1:{server.server_address[1]}/1", server.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _events(received: list[bytes]) -> list[dict]:
    """The event items of the envelopes (one JSON document per line: header, item, body)."""
    events = []
    for body in received:
        lines = body.decode("utf-8", "replace").splitlines()
        for header, item in zip(lines[1::2], lines[2::2], strict=False):
            if '"type":"event"' in header.replace(" ", ""):
                events.append(json.loads(item))
    return events


def test_sentry_events_are_few_and_carry_no_flow_data(start_daemon, sentry):
    dsn, received = sentry
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}.basic:boom_secret",
               "claim_values": ["card"]},
         "k": {"type": "k", "states": ["queued"], "handler": f"{H}.basic:echo"}},
        env={"SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "staging"},
    )  # fmt: skip
    daemon.client.create("b1", "q", "queued", b"SECRET-PAYLOAD-42",
                         values={"card": b"VALUE-SECRET-77"})
    wait_for(lambda: (r := daemon.client.get("b1")) is not None and r.state == "failed",
             timeout=20, what="b1 failed after its retries")
    (pid,) = daemon.workers("k")
    daemon.workers("k")[pid].send_signal(signal.SIGKILL)
    wait_for(lambda: "killed by SIGKILL" in daemon.log(), timeout=10)
    daemon.signal(signal.SIGTERM)  # every process flushes Sentry before it exits
    assert daemon.wait_exit(15) == 0

    raw = b"".join(received)
    assert b"SECRET-PAYLOAD" not in raw and b"VALUE-SECRET" not in raw
    events = _events(received)
    boom = [e for e in events if "boom in b1" in json.dumps(e)]
    assert len(boom) == 1, [e.get("tags") for e in boom]  # 4 attempts, one event
    assert boom[0]["tags"]["flow.attempt"] in (1, "1")
    assert "Filtered" in json.dumps(boom[0])  # the locals were there, and scrubbed
    killed = [e for e in events if "killed by SIGKILL" in json.dumps(e)]
    assert len(killed) == 1 and killed[0]["level"] == "error", killed
    for event in events:
        assert event.get("environment") == "staging", event.get("environment")
        assert str(event.get("release", "")).startswith("ferricflowd@"), event.get("release")


def test_a_handler_import_error_at_boot_is_reported(start_daemon, sentry):
    dsn, received = sentry
    daemon = start_daemon(
        {"bad": {"type": "bad", "states": ["queued"], "handler": f"{H}.broken:handler"}},
        env={"SENTRY_DSN": dsn}, wait=False,
    )
    assert daemon.wait_exit(15) == 3
    assert any("ferricflowd_test_no_such_module" in json.dumps(e) for e in _events(received))
