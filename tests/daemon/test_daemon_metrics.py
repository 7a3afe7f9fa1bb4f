"""What /metrics shows from the first scrape on: store-wide gauges without a reload, and
every labelled counter a dashboard uses, at zero before its first event."""

from __future__ import annotations

import signal

from tests.daemon.conftest import metric, metric_or_none, wait_for

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
