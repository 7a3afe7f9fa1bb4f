"""The daemon end to end: processing, metrics, health, and draining on SIGTERM."""

from __future__ import annotations

import json
import signal
import time

from ferricflowd.flow.queue import Queue
from ferricflowd.flow.workflow import WorkflowClient
from tests.daemons import metric, metric_or_none
from tests.helpers import wait_for

H = "tests.daemon.handlers.basic"


def completed(daemon, flow_type: str) -> int:
    return daemon.client.stats(flow_type).counts.get("completed", 0)


def test_two_groups_process_2000_flows_with_metrics_and_readiness(start_daemon):
    daemon = start_daemon(
        {
            "email": {"type": "email", "states": ["queued"], "handler": f"{H}:echo",
                      "processes": 2},
            "orders": {"type": "order", "states": ["created", "charged"],
                       "handler": f"{H}:order"},
        }
    )  # fmt: skip
    status, body = daemon.get("/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    assert daemon.get("/healthz")[0] == 200
    assert len(daemon.workers("email")) == 2 and len(daemon.workers("orders")) == 1

    emails = Queue(daemon.client, "email")
    orders = WorkflowClient(daemon.client).workflow(type="order", initial_state="created")
    assert all(r is True for r in emails.enqueue_many([(f"e{i}", b"") for i in range(1000)]))
    assert all(r is True for r in orders.start_many([(f"o{i}", b"") for i in range(1000)]))

    wait_for(lambda: completed(daemon, "email") == 1000 and completed(daemon, "order") == 1000,
             timeout=60, interval=0.1, what="2,000 flows completed")
    # a worker counts an outcome just after the store has applied it
    def all_counted() -> str | None:
        text = daemon.metrics()
        return text if metric(text, "ferricflowd_handler_duration_seconds_count") == 3000 else None

    text = wait_for(all_counted, timeout=5, what="3,000 handler runs in /metrics")
    assert metric(text, "ferricflowd_flows_completed_total", type="email", state="queued") == 1000
    assert metric(text, "ferricflowd_flows_claimed_total", type="email") == 1000
    assert metric(text, "ferricflowd_flows_transitioned_total", type="order",
                  state="created") == 1000
    assert metric(text, "ferricflowd_flows_completed_total", type="order", state="charged") == 1000
    assert metric(text, "ferricflowd_handler_duration_seconds_count", type="order") == 2000
    assert metric(text, "ferricflowd_group_workers", group="email") == 2
    assert metric(text, "ferricflowd_store_up") == 1
    # the backlog gauge follows within a maintenance interval or two
    wait_for(lambda: metric_or_none(daemon.metrics(), "ferricflowd_backlog", type="order") == 0,
             timeout=5, interval=0.1, what="backlog gauge back to 0")
    assert daemon.get("/readyz")[0] == 200

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0


def test_sigterm_lets_50_running_handlers_finish_and_claims_nothing_more(start_daemon):
    daemon = start_daemon(
        {"slow": {"type": "slow", "states": ["queued"], "handler": f"{H}:sleepy",
                  "processes": 2, "concurrency": 25, "batch_size": 25}},
        daemon={"drain_timeout": "20s"},
    )  # fmt: skip
    queue = Queue(daemon.client, "slow")
    queue.enqueue_many([(f"s{i}", b"1") for i in range(80)])
    wait_for(lambda: daemon.client.stats("slow").running == 50, timeout=10,
             what="50 handlers in flight")
    signalled = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0
    elapsed = time.monotonic() - signalled
    assert elapsed < 10, f"drain took {elapsed:.1f}s; drain_timeout is 20s"

    records = [daemon.client.get(f"s{i}") for i in range(80)]
    done = [r for r in records if r.state == "completed"]
    assert len(done) == 50
    for record in records:
        claims = [e for e in daemon.client.history(record.id) if e.event == "claimed"]
        if record.state == "completed":
            assert len(claims) == 1
        else:  # never claimed: due, untouched, waiting for the next daemon
            assert record.state == "queued" and not claims, (record, claims)


def test_async_handlers_run_on_the_workers_event_loop_and_drain(start_daemon, tmp_path):
    """`async def` handlers: `concurrency` of them at once as tasks of the worker's one event
    loop thread; SIGTERM lets the running ones finish, nothing more is claimed."""
    markers = tmp_path / "markers"
    markers.mkdir()
    daemon = start_daemon(
        {"aio": {"type": "aio", "states": ["queued"], "handler": f"{H}:asleep",
                 "concurrency": 20, "batch_size": 20}},
        daemon={"drain_timeout": "20s"}, env={"FF_TEST_MARKERS": str(markers)},
    )  # fmt: skip
    Queue(daemon.client, "aio").enqueue_many([(f"a{i}", b"1") for i in range(30)])
    wait_for(lambda: len(list(markers.glob("started-*"))) == 20, timeout=10,
             what="20 async handlers started")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0

    records = [daemon.client.get(f"a{i}") for i in range(30)]
    done = [r for r in records if r.state == "completed"]
    assert sorted(r.id for r in done) == sorted(p.name[8:] for p in markers.glob("started-*"))
    assert {r.result for r in done} == {b"ff-asyncio"}
    assert all(r.state == "queued" for r in records if r not in done)


def test_handlers_outliving_drain_timeout_are_released_at_the_deadline(start_daemon):
    daemon = start_daemon(
        {"slow": {"type": "slow", "states": ["queued"], "handler": f"{H}:sleepy"}},
        daemon={"drain_timeout": "2s"},
    )
    Queue(daemon.client, "slow").enqueue_many([(f"s{i}", b"60") for i in range(3)])
    wait_for(lambda: daemon.client.stats("slow").running == 3, timeout=10, what="3 running")
    signalled = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    elapsed = time.monotonic() - signalled
    assert 1.0 < elapsed < 4.0, f"exited {elapsed:.1f}s after SIGTERM; drain_timeout is 2s"

    now_ms = int(time.time() * 1000)
    for i in range(3):
        record = daemon.client.get(f"s{i}")
        assert record.state == "queued" and record.lease_owner is None, record
        assert record.next_run_at_ms is not None and record.next_run_at_ms <= now_ms
        released = [e for e in daemon.client.history(f"s{i}") if e.event == "lease_released"]
        assert released and "drain" in str(released[-1].details.get("cause")), released
