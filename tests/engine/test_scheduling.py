"""Ordering and scheduling: priorities, earliest due first across states, run_at and
delay_ms, and an idle worker that wakes up for new and newly due work."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ferricflowd import FlowClient, InvalidArgument, QueueClient, retry
from ferricflowd.flow.records import Job
from ferricflowd.flow.wire import LeaseRequest
from tests.engine.calls import T, claim_jobs, claim_one, server_ms
from tests.helpers import running, wait_for


def test_priorities_2_before_1_before_0(flow_client: FlowClient) -> None:
    fc = flow_client
    for i, prio in enumerate([0, 1, 2, 0, 1, 2]):
        fc.create(f"f{i}-p{prio}", T, "queued", priority=prio, partition_key="same")
    order = [claim_one(fc).id for _ in range(6)]
    assert order == ["f2-p2", "f5-p2", "f1-p1", "f4-p1", "f0-p0", "f3-p0"]
    for i, prio in enumerate([0, 2, 1]):
        fc.create(f"g{i}-p{prio}", T, "queued", priority=prio, partition_key="same")
    assert [j.priority for j in claim_jobs(fc, ["queued"], 3)] == [2, 1, 0]
    with pytest.raises(InvalidArgument, match="priority"):
        fc.create("bad", T, "queued", priority=3)


def test_priorities_across_partitions(flow_client: FlowClient) -> None:
    fc = flow_client
    first: dict[int, str] = {}
    for i in range(200):
        first.setdefault(fc.partition_for(f"x{i}"), f"x{i}")
    fc.create(first[0], T, "queued", priority=0)
    fc.create(first[1], T, "queued", priority=2)
    jobs = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=1, start=0).jobs
    assert [j.priority for j in jobs] == [2]


def test_multi_state_claim_is_earliest_due_first(flow_client: FlowClient) -> None:
    fc = flow_client
    now = server_ms(fc)
    plan = [("b1", "b", 400), ("a1", "a", 300), ("b2", "b", 200), ("a2", "a", 100),
            ("c1", "c", 500)]
    for flow_id, state, ago in plan:
        fc.create(flow_id, T, state, run_at_ms=now - ago, partition_key="same")
    jobs = claim_jobs(fc, ["a", "b"], 10)
    assert [(j.id, j.state) for j in jobs] == [("b1", "b"), ("a1", "a"), ("b2", "b"),
                                               ("a2", "a")]
    assert fc.get("c1", partition_key="same").state == "c"  # type: ignore[union-attr]


def test_run_at_scheduling(flow_client: FlowClient) -> None:
    fc = flow_client
    run_at = server_ms(fc) + 400
    fc.create("later", T, "queued", run_at_ms=run_at)
    fc.create("now", T, "queued")
    first = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=10)
    assert [j.id for j in first.jobs] == ["now"]
    assert first.next_due_ms is not None and first.next_due_ms <= run_at
    assert fc.get("later").next_run_at_ms == run_at  # type: ignore[union-attr]
    assert fc.stats(T).states["queued"].due_now == 0

    def claim_later() -> list[Job]:
        return claim_jobs(fc, ["queued"], 10)

    jobs = wait_for(claim_later, timeout=5, what="the scheduled flow to become due")
    assert [j.id for j in jobs] == ["later"]
    claimed_at = fc.history("later")[-1].at_ms
    assert claimed_at >= run_at


def test_delay_ms_and_retry_run_at(queues: QueueClient) -> None:
    fc = queues.flow_client
    q = queues.queue(type=T)
    before = int(time.time() * 1000)
    q.enqueue("d1", delay_ms=60_000)
    due = fc.get("d1").next_run_at_ms  # type: ignore[union-attr]
    assert due is not None and before + 60_000 <= due <= int(time.time() * 1000) + 60_000
    q.enqueue("d2")
    job = claim_one(fc)
    run_at = server_ms(fc) + 3_600_000
    assert fc.apply_outcome(job, retry(b"later", run_at_ms=run_at)) == b"scheduled"
    assert fc.get("d2").next_run_at_ms == run_at  # type: ignore[union-attr]


def _blocked_clients(redis_server: Any) -> int:
    with redis_server.client() as conn:
        return sum(c.get("cmd") == "blpop" for c in conn.client_list())


def test_idle_worker_wakes_up_for_new_work(redis_server: Any, queues: QueueClient) -> None:
    q = queues.queue(type=T)
    started: dict[str, float] = {}

    def handler(job: Any) -> None:
        started[job.id] = time.monotonic()

    worker = q.worker(block_ms=5000, batch_size=10)
    baseline = _blocked_clients(redis_server)
    with running(worker, handler):
        wait_for(lambda: _blocked_clients(redis_server) > baseline, timeout=5,
                 what="the worker to block on its wake lists")
        enqueued = time.monotonic()
        q.enqueue("wake-me")
        wait_for(lambda: "wake-me" in started, timeout=5, what="the handler to start")
        assert started["wake-me"] - enqueued < 1.0

        # A Flow scheduled for later is picked up when it becomes due, not block_ms later.
        wait_for(lambda: _blocked_clients(redis_server) > baseline, timeout=5)
        due_in = 0.3
        enqueued = time.monotonic()
        q.enqueue("scheduled", delay_ms=int(due_in * 1000))
        wait_for(lambda: "scheduled" in started, timeout=8, what="the scheduled flow")
        assert due_in - 0.05 <= started["scheduled"] - enqueued < due_in + 1.0
