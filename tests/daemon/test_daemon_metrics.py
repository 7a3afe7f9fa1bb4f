"""What /metrics shows from the first scrape on: store-wide gauges without a reload, and
every labelled counter a dashboard uses, at zero before its first event."""

from __future__ import annotations

import signal

from tests.daemons import metric, metric_or_none
from tests.helpers import wait_for

H = "tests.daemon.handlers.basic"


def test_backlog_gauges_appear_without_a_reload(start_daemon):
    """The maintenance thread sweeps the configured types from the start (it was built before
    the groups were known and swept no type until a SIGHUP)."""
    daemon = start_daemon({"q": {"type": "bk", "states": ["queued"], "handler": f"{H}:echo"}})
    for i in range(5):  # due now, in a state no group claims: they stay due
        daemon.client.create(f"w{i}", "bk", "waiting")

    def backlog() -> float | None:
        return metric_or_none(daemon.metrics(), "ferricflowd_backlog", type="bk",
                              state="waiting")

    wait_for(lambda: backlog() == 5, timeout=5, interval=0.1, what="backlog gauge at 5")
    text = daemon.metrics()
    assert metric(text, "ferricflowd_oldest_due_age_seconds", type="bk", state="waiting") >= 0
    assert metric(text, "ferricflowd_flows_running", type="bk") == 0
    assert "reload" not in daemon.log().lower()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0


def test_a_missing_series_fails_instead_of_reading_as_zero() -> None:
    text = "# TYPE ferricflowd_backlog gauge\nferricflowd_backlog{type=\"a\",state=\"s\"} 0.0\n"
    assert metric(text, "ferricflowd_backlog", type="a") == 0
    assert metric_or_none(text, "ferricflowd_backlog", type="b") is None
    try:
        metric(text, "ferricflowd_backlog", type="b")
    except AssertionError as exc:
        assert 'type="b"' in str(exc)
    else:
        raise AssertionError("a missing series read as a value")


def test_labelled_counters_exist_at_zero_before_their_first_event(start_daemon):
    """increase() over a series that appears with its first event misses that event: the
    first restart of a group and the first failure of a state must be a step from 0."""
    daemon = start_daemon({
        "q": {"type": "q", "states": ["queued"], "handler": f"{H}:echo"},
        "w": {"type": "order", "states": ["created", "charged"], "handler": f"{H}:order"},
    })
    text = daemon.metrics()
    for group in ("q", "w"):
        for reason in ("boot", "crash", "signal", "hang"):
            assert metric(text, "ferricflowd_worker_restarts_total", group=group,
                          reason=reason) == 0
        for trigger in ("max_jobs", "max_memory"):
            assert metric(text, "ferricflowd_recycles_total", group=group, trigger=trigger) == 0
    for flow_type, state in (("q", "queued"), ("order", "created"), ("order", "charged")):
        for name in ("claimed", "completed", "failed", "retried", "transitioned", "released"):
            assert metric(text, f"ferricflowd_flows_{name}_total", type=flow_type,
                          state=state) == 0
        assert metric(text, "ferricflowd_handler_errors_total", type=flow_type, state=state) == 0
        assert metric(text, "ferricflowd_handler_duration_seconds_count", type=flow_type,
                      state=state) == 0
    for cause in ("crash", "signal", "hang", "expired"):
        assert metric(text, "ferricflowd_leases_reclaimed_total", cause=cause) == 0

    (pid,) = daemon.workers("q")
    daemon.workers("q")[pid].send_signal(signal.SIGKILL)
    wait_for(lambda: metric(daemon.metrics(), "ferricflowd_worker_restarts_total", group="q",
                            reason="signal") == 1, timeout=10, what="the first restart counted")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0


def test_store_retention_removes_finished_flows(start_daemon):
    """store.retention reaches the daemon's client, and cleanup runs often enough for it."""
    daemon = start_daemon({"q": {"type": "ret", "states": ["queued"], "handler": f"{H}:echo"}},
                          store={"retention": "2s"})
    daemon.client.create("r1", "ret", "queued")
    wait_for(lambda: (r := daemon.client.get("r1")) is not None and r.state == "completed",
             timeout=10, what="r1 completed")
    wait_for(lambda: daemon.client.get("r1") is None, timeout=8, interval=0.2,
             what="r1 removed after the 2s retention")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
