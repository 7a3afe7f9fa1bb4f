"""Logs, Sentry, seed-style handler modules and the fast stop."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from ferricflowd.flow.queue import Queue
from ferricflowd.flow.workflow import WorkflowClient
from tests.daemons import SentryEnvelopes
from tests.helpers import wait_for

H = "tests.daemon.handlers"


def test_json_logs_name_the_flow(start_daemon):
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}.basic:echo"}},
        args=("--log-format", "json"),
    )
    Queue(daemon.client, "q").enqueue("j1")
    wait_for(lambda: '"id": "j1"' in daemon.log(), timeout=10, what="a log line about j1")
    records = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    event = next(r for r in records if r.get("id") == "j1")
    assert event["type"] == "q" and event["state"] == "queued" and event["attempt"] == 1
    assert event["event"] == "completed" and event["logger"] == "ferricflowd.worker.process"
    assert any(r["logger"] == "ferricflowd.supervisor.arbiter" for r in records)


def test_seed_style_module_runs_against_the_daemons_store(start_daemon):
    daemon = start_daemon(
        {"seed": {"type": "seed", "states": ["created", "shipped"],
                  "handler": f"{H}.seed:order"}}
    )  # fmt: skip
    orders = WorkflowClient(daemon.client).workflow(type="seed", initial_state="created")
    orders.start_many([f"s{i}" for i in range(20)])
    wait_for(lambda: daemon.client.stats("seed").counts.get("completed") == 20, timeout=10,
             what="20 seed-style flows completed")


@pytest.fixture
def sentry_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SentryEnvelopes)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_sentry_gets_handler_exceptions_with_flow_tags(start_daemon, sentry_server):
    port = sentry_server.server_address[1]
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}.basic:boom"}},
        env={"SENTRY_DSN": f"http://public@127.0.0.1:{port}/1"},
    )
    Queue(daemon.client, "q").enqueue("b1")
    wait_for(lambda: any(e.event == "retry" for e in daemon.client.history("b1")), timeout=10)
    daemon.signal(signal.SIGTERM)  # the worker flushes Sentry before it exits
    assert daemon.wait_exit(10) == 0
    received: list[bytes] = sentry_server.received  # type: ignore[attr-defined]
    events = [body.decode(errors="replace") for body in received]
    event = next((e for e in events if "boom in b1" in e), None)
    assert event is not None, events
    for tag in ('"flow.type":"q"', '"flow.state":"queued"', '"flow.id":"b1"', '"flow.attempt"'):
        assert tag in event.replace(" ", ""), (tag, event)


def test_quit_is_a_fast_stop_and_releases_running_flows(start_daemon):
    daemon = start_daemon(
        {"slow": {"type": "slow", "states": ["queued"], "handler": f"{H}.basic:sleepy"}},
        daemon={"drain_timeout": "30s"},
    )
    Queue(daemon.client, "slow").enqueue_many([(f"s{i}", b"60") for i in range(2)])
    wait_for(lambda: daemon.client.stats("slow").running == 2, timeout=10, what="2 running")
    signalled = time.monotonic()
    daemon.signal(signal.SIGQUIT)
    daemon.wait_exit(10)
    assert time.monotonic() - signalled < 5
    for i in range(2):
        record = daemon.client.get(f"s{i}")
        assert record.state == "queued" and record.lease_owner is None, record


def test_second_sigterm_turns_a_drain_into_a_fast_stop(start_daemon):
    daemon = start_daemon(
        {"slow": {"type": "slow", "states": ["queued"], "handler": f"{H}.basic:sleepy"}},
        daemon={"drain_timeout": "30s"},
    )
    Queue(daemon.client, "slow").enqueue("s0", b"60")
    wait_for(lambda: daemon.client.stats("slow").running == 1, timeout=10, what="1 running")
    daemon.signal(signal.SIGTERM)
    wait_for(lambda: "draining" in daemon.get("/readyz")[1], timeout=5,
             what="/readyz says draining")
    assert daemon.get("/readyz")[0] == 503
    signalled = time.monotonic()
    daemon.signal(signal.SIGTERM)
    daemon.wait_exit(10)
    assert time.monotonic() - signalled < 5
    assert daemon.client.get("s0").state == "queued"
