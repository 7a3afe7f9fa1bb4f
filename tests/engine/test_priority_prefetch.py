"""A Runner claims no more than its free handler slots plus a small prefetch, so a higher
priority enqueued later overtakes the queued work within about one handler duration (with
the default batch_size of 100 it used to lease everything due and run the newcomer last)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ferricflowd import FlowClient
from ferricflowd.flow.runner import Runner

HANDLER_S = 0.05


def test_a_later_higher_priority_job_overtakes_queued_ones(flow_client: FlowClient) -> None:
    fc = flow_client
    for i in range(8):
        fc.create(f"low-{i}", "prio", "queued", priority=0)
    started: list[tuple[str, float]] = []

    def handler(job: Any) -> None:
        started.append((job.id, time.monotonic()))
        time.sleep(HANDLER_S)

    runner = Runner(fc, type="prio", states=["queued"], handlers={"queued": handler},
                    concurrency=1, block_ms=200)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        time.sleep(0.1)
        enqueued = time.monotonic()
        fc.create("high", "prio", "queued", priority=2)
        deadline = time.monotonic() + 10
        while len(started) < 9 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        runner.drain(5.0)
        thread.join(10)
    order = [flow_id for flow_id, _ in started]
    assert len(order) == 9, order
    position = order.index("high")
    waited = dict(started)["high"] - enqueued
    assert position <= 3, order  # behind the one running (and at most one prefetched)
    assert waited < 3 * HANDLER_S, f"the priority job waited {waited:.3f}s"
