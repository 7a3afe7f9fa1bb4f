"""A store unreachable while workers boot is not a crash (issue 18, item 5): the daemon's
workers exit 5 and are retried with a capped backoff, the group is never marked
crash-looping however long the outage (here longer than restart_window allows for
max_restarts crashes), /readyz says not ready, the store gauge says down, and the group
resumes by itself when the store is back."""

from __future__ import annotations

from typing import Any

from tests.daemons import metric, metric_or_none
from tests.helpers import wait_for

HANDLER = "tests.daemon.handlers.basic:echo"


def test_workers_wait_out_a_store_outage_at_boot(start_daemon: Any,
                                                 make_redis_server: Any) -> None:
    server = make_redis_server()
    server.kill()  # down before the daemon starts
    daemon = start_daemon(
        {"q": {"type": "boot", "states": ["queued"], "handler": HANDLER, "processes": 1}},
        store={"url": server.url}, daemon={"max_restarts": 1, "restart_window": "60s"},
        wait=False,
    )  # fmt: skip

    def store_restarts() -> float | None:
        status, body = daemon.get("/metrics")
        if status != 200:
            return None
        return metric_or_none(body, "ferricflowd_worker_restarts_total", group="q",
                              reason="store")

    # Three workers in a row found the store down: with max_restarts = 1 within 60 s,
    # counted as crashes they would have marked the group crash-looping (retried every 30 s).
    wait_for(lambda: (store_restarts() or 0) >= 3, timeout=30,
             what=f"three workers exited with the store down; log:\n{daemon.log_tail()}")
    text = daemon.metrics()
    assert metric(text, "ferricflowd_group_crash_looping", group="q") == 0
    assert metric(text, "ferricflowd_worker_restarts_total", group="q", reason="crash") == 0
    assert metric(text, "ferricflowd_store_up") == 0
    status, body = daemon.get("/readyz")
    assert status == 503 and "store unreachable" in body, body
    assert "crash-looping" not in daemon.log()

    server.restart()
    fc = daemon.client
    fc.create("after-outage", "boot", "queued", b"x")
    wait_for(lambda: (r := fc.get("after-outage")) is not None and r.state == "completed",
             timeout=20, what=f"the group resumed by itself; log:\n{daemon.log_tail()}")
    wait_for(lambda: daemon.get("/readyz")[0] == 200, timeout=10, what="ready again")
