"""An idle Runner (blocked in its claim wait) stops at once when drained, on a single node
and on a cluster, whenever the drain lands (before, during or after the BLPOP is sent)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ferricflowd import FlowClient
from ferricflowd.flow.runner import Runner


def test_an_idle_runner_stops_at_once_however_the_drain_lands(
        url_and_opts: tuple[str, dict[str, Any]], closing: Callable[[Any], Any]) -> None:
    url, opts = url_and_opts
    client = closing(FlowClient.from_url(url, **opts))
    worst = 0.0
    for i in range(12):
        runner = Runner(client, type="idle", states=["queued"], handlers={"queued": print},
                        block_ms=5_000, concurrency=1)
        thread = threading.Thread(target=runner.run)
        thread.start()
        time.sleep(0.002 * i)  # from "not waiting yet" to "blocked in BLPOP"
        started = time.monotonic()
        runner.drain(5.0)
        thread.join(3.0)
        assert not thread.is_alive(), f"run() still blocked {3.0}s after drain (round {i})"
        worst = max(worst, time.monotonic() - started)
    assert worst < 0.5, f"slowest stop {worst:.2f}s"
