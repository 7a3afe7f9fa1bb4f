"""Handlers: what a misbehaving one leads to, threads running them concurrently, and async
def handlers (one loop, bounded, exception policy, drain)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ferricflowd import ExceptionPolicy, QueueClient, RetryPolicy, WorkflowClient, transition
from tests.engine.calls import T
from tests.helpers import assert_failed_after_retries, events, running, wait_for


def test_handler_misbehaviour(workflows: WorkflowClient) -> None:
    fc = workflows.flow_client
    wf = workflows.workflow(type=T, initial_state="start", states=["start", "next"],
                            retry_policy=RetryPolicy(max_retries=1, backoff="none"))

    @wf.state("start")
    def start(job: Any) -> Any:
        if job.payload == b"raise":
            raise KeyError("missing thing")
        if job.payload == b"object":
            return {"not": "storable"}
        if job.payload == b"number":
            return 42
        if job.payload == b"undeclared":
            return transition("nowhere")
        if job.payload == b"reserved":
            return transition("running")
        return transition("next")

    @wf.state("next")
    def next_(job: Any) -> Any:
        return None

    for kind in ("raise", "object", "number", "undeclared", "reserved", "fine"):
        wf.start(kind, payload=kind.encode())
    wait_for(lambda: wf.worker(states=["start", "next"]).run_until_idle(timeout=5) == 0
             and all(fc.get(k).terminal for k in ("raise", "fine")),  # type: ignore
             timeout=10, what="all flows handled")

    assert_failed_after_retries(fc, "raise", b"KeyError: 'missing thing'")

    for kind, name in (("object", b"dict"), ("number", b"int")):
        record = fc.get(kind)
        assert record is not None and record.state == "failed"
        assert record.error is not None and b"unsupported " + name in record.error
        assert b"return an outcome" in record.error
    undeclared = fc.get("undeclared")
    assert undeclared is not None and undeclared.state == "failed"
    assert undeclared.error is not None and b"undeclared state 'nowhere'" in undeclared.error
    reserved = fc.get("reserved")
    assert reserved is not None and reserved.state == "failed"
    assert reserved.error is not None and b"invalid transition" in reserved.error
    fine = fc.get("fine")
    assert fine is not None and fine.state == "completed" and fine.result == b""


def test_worker_threads_handle_concurrently(queues: QueueClient) -> None:
    q = queues.queue(type=T)
    for i in range(8):
        q.enqueue(f"c{i}")
    barrier = threading.Barrier(8, timeout=10)

    def handler(job: Any) -> None:
        barrier.wait()  # only passes when 8 handlers run at the same time

    assert q.worker(concurrency=8, batch_size=8).run_until_idle(handler, timeout=15) == 8
    assert queues.flow_client.stats(T).counts == {"completed": 8}


def test_async_handlers_share_one_loop_up_to_concurrency(queues: QueueClient) -> None:
    """`async def` handlers run as tasks of one event loop on one thread, at most
    `concurrency` at once; the same loop serves every job of the run."""
    q = queues.queue(type=T)
    q.enqueue_many([(f"a{i}", f"{i}".encode()) for i in range(12)])
    loops: set[int] = set()
    threads: set[int] = set()
    running_now = [0, 0]  # now, most at once

    async def handler(job: Any) -> bytes:
        loops.add(id(asyncio.get_running_loop()))
        threads.add(threading.get_ident())
        running_now[0] += 1
        running_now[1] = max(running_now)
        await asyncio.sleep(0.02)  # the others start meanwhile, up to the bound
        running_now[0] -= 1
        return b"async " + job.payload

    assert q.worker(concurrency=3, batch_size=12).run_until_idle(handler, timeout=10) == 12
    assert [q.get(f"a{i}").result for i in range(12)] == [  # type: ignore[union-attr]
        f"async {i}".encode() for i in range(12)]
    assert len(loops) == 1 and len(threads) == 1
    assert running_now[1] == 3


def test_async_handler_errors_follow_the_exception_policy(queues: QueueClient) -> None:
    q = queues.queue(type=T)
    q.enqueue("bad", payload=b"x")

    async def handler(job: Any) -> None:
        await asyncio.sleep(0)
        raise ValueError("async boom")

    worker = q.worker(exception_policy=ExceptionPolicy.FAIL)
    assert worker.run_until_idle(handler, timeout=10) == 1
    record = q.get("bad")
    assert record is not None and record.state == "failed"
    assert record.error == b"ValueError: async boom"


def test_async_drain_finishes_running_and_releases_unstarted(queues: QueueClient) -> None:
    """stop() with async handlers: the running ones finish and complete; the ones waiting
    for a slot go back to the queue unstarted, due again at once."""
    q = queues.queue(type=T)
    q.enqueue_many([f"d{i}" for i in range(6)])
    started: list[str] = []
    go = threading.Event()

    async def handler(job: Any) -> None:
        started.append(job.id)
        while not go.is_set():  # held until the drain has begun
            await asyncio.sleep(0.005)

    worker = q.worker(concurrency=2, batch_size=6)
    with running(worker, handler):
        wait_for(lambda: len(started) == 2, 5.0, what="two handlers running")
        worker.stop()
        go.set()
    records = {f"d{i}": q.get(f"d{i}") for i in range(6)}
    done = sorted(i for i, r in records.items() if r is not None and r.state == "completed")
    assert done == sorted(started) and len(started) == 2
    released = 0
    for flow_id, record in records.items():
        if flow_id in started:
            continue
        assert record is not None and record.state == "queued", record
        assert record.lease_owner is None, record
        history = events(queues.flow_client, flow_id)
        # claimed as prefetch and handed back, or never claimed (the claim takes the free
        # slots plus a prefetch, not the whole batch: see Runner._room)
        assert history in (["created", "claimed", "lease_released"], ["created"]), history
        released += history != ["created"]
    assert released >= 1
