"""Handlers that never return or raise a BaseException (issue 18, items 1 and 2).

In process (a Runner on a real store) and under the real daemon: a Flow whose handler raised
SystemExit or KeyboardInterrupt gets an outcome like any other exception and its handler slot
survives; a handler past its `timeout` is given up (an `async def` one cancelled, a thread
abandoned), only its Flow is blamed, with an error naming the timeout, and the daemon
replaces the worker process whose thread hung.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ferricflowd import FlowClient, QueueClient, RetryPolicy, RunnerHooks, WorkflowClient
from tests.helpers import wait_for

LIMITS = "tests.hardening.limits_handlers"


@pytest.fixture
def fc(redis_server: Any, namespace: str, closing: Any) -> FlowClient:
    return closing(FlowClient.from_url(redis_server.url, namespace=namespace))


def _errors(fc: FlowClient, flow_id: str) -> list[str]:
    return [str(e.details.get("error")) for e in fc.history(flow_id) if e.details.get("error")]


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["exit", "interrupt"])
def test_base_exception_gets_an_outcome_and_the_slot_survives(fc: FlowClient,
                                                              exc: BaseException) -> None:
    queue = QueueClient(fc).queue("lim", retry_policy=RetryPolicy(max_retries=0, backoff="none"))
    queue.enqueue_many([("bad", b"bad")] + [(f"ok-{i}", b"ok") for i in range(6)])

    def handler(job: Any) -> bytes:
        if job.id == "bad":
            raise exc
        return b"done"

    # Two threads: before the fix each BaseException killed one, so two left none.
    worker = queue.worker(concurrency=2, batch_size=1)
    assert worker.run_until_idle(handler, timeout=10) == 7
    bad = fc.get("bad")
    assert bad is not None and bad.state == "failed", bad
    assert type(exc).__name__.encode() in (bad.error or b""), bad.error
    assert all(fc.get(f"ok-{i}").state == "completed" for i in range(6))  # type: ignore[union-attr]


def test_async_base_exception_does_not_stop_the_event_loop(fc: FlowClient) -> None:
    wf = WorkflowClient(fc).workflow(type="lima", initial_state="go",
                                     retry_policy=RetryPolicy(max_retries=0, backoff="none"))

    @wf.state("go")
    async def go(job: Any) -> bytes:
        if job.id == "bad":
            raise SystemExit(3)
        await asyncio.sleep(0)
        return b"done"

    wf.start_many([("bad", b"")] + [(f"ok-{i}", b"") for i in range(5)])
    assert wf.worker(concurrency=2).run_until_idle(timeout=10) == 6
    assert b"SystemExit: 3" in (fc.get("bad").error or b"")  # type: ignore[union-attr]
    assert all(fc.get(f"ok-{i}").state == "completed" for i in range(5))  # type: ignore[union-attr]


def test_async_handler_past_its_timeout_is_cancelled(fc: FlowClient) -> None:
    wf = WorkflowClient(fc).workflow(type="limt", initial_state="go",
                                     retry_policy=RetryPolicy(max_retries=0, backoff="none"))
    cancelled = threading.Event()

    @wf.state("go", timeout=0.3)
    async def go(job: Any) -> bytes:
        if job.id == "slow":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return b"done"

    wf.start_many(["slow", "quick"])
    started = time.monotonic()
    assert wf.worker(concurrency=2).run_until_idle(timeout=10) == 2
    assert time.monotonic() - started < 5
    slow = fc.get("slow")
    assert slow is not None and slow.state == "failed" and b"timeout" in (slow.error or b"")
    assert cancelled.is_set()
    assert fc.get("quick").state == "completed"  # type: ignore[union-attr]


def test_hung_thread_is_abandoned_only_its_flow_is_blamed(fc: FlowClient) -> None:
    queue = QueueClient(fc).queue("limh", retry_policy=RetryPolicy(max_retries=1, backoff="none"))
    release = threading.Event()
    hung: list[tuple[str, float, int]] = []
    runs: dict[str, int] = {}

    def handler(job: Any) -> bytes:
        runs[job.id] = runs.get(job.id, 0) + 1
        if job.id == "hang" and runs[job.id] == 1:
            release.wait(30)  # the first run hangs; the retry (another thread) returns
        return b"done"

    queue.enqueue_many(["hang"] + [f"ok-{i}" for i in range(5)])
    def on_hung(job: Any, limit: float) -> None:  # what is left: one of two threads
        hung.append((job.id, limit, worker._runner.statistics().live_slots))  # type: ignore

    worker = queue.worker(concurrency=2, batch_size=2, timeout=0.3,
                          hooks=RunnerHooks(on_hung=on_hung))
    assert worker.run_until_idle(handler, timeout=10) == 7  # six Flows, "hang" twice
    record = fc.get("hang")
    assert record is not None and record.state == "completed", record
    assert any("timeout of 0.3s" in e for e in _errors(fc, "hang")), _errors(fc, "hang")
    assert hung == [("hang", 0.3, 1)]
    assert all(fc.get(f"ok-{i}").state == "completed" for i in range(5))  # type: ignore[union-attr]
    assert worker._runner.stats.timed_out == 1  # type: ignore[union-attr]
    version = record.version
    release.set()  # the abandoned run returns at last: its result is dropped, nothing changes
    time.sleep(0.2)  # nothing to await: the point is that nothing happens
    assert fc.get("hang").version == version  # type: ignore[union-attr]


def test_daemon_recycles_a_worker_whose_handler_hung(start_daemon: Any, tmp_path: Path) -> None:
    daemon = start_daemon(
        {"lim": {"type": "limd", "states": ["queued"], "handler": f"{LIMITS}:limited",
                 "processes": 1, "concurrency": 2, "timeout": "1s"}},
    )  # fmt: skip
    wait_for(lambda: daemon.group_ready("lim", 1), timeout=15, what="worker ready")
    (first,) = daemon.workers("lim")
    fc = daemon.client
    queue = QueueClient(fc).queue("limd", retry_policy=RetryPolicy(max_retries=0,
                                                                    backoff="none"))
    queue.enqueue_many([("hang", b"hang"), ("exit", b"exit"), ("interrupt", b"interrupt")]
                       + [(f"ok-{i}", b"ok") for i in range(10)])
    ids = ["hang", "exit", "interrupt", *(f"ok-{i}" for i in range(10))]
    wait_for(lambda: all(fc.get(i).terminal for i in ids), timeout=20,
             what=f"every flow terminal; log:\n{daemon.log_tail()}")
    hang = fc.get("hang")
    assert hang is not None and hang.state == "failed" and b"timeout of 1s" in (hang.error or b"")
    for flow_id, name in (("exit", b"SystemExit: 3"), ("interrupt", b"KeyboardInterrupt")):
        record = fc.get(flow_id)
        assert record is not None and record.state == "failed" and name in (record.error or b"")
    assert all(fc.get(f"ok-{i}").state == "completed" for i in range(10))  # type: ignore[union-attr]
    # The worker whose thread hung drained and was replaced; a planned recycle, no crash.
    wait_for(lambda: set(daemon.workers("lim")) - {first}, timeout=15,
             what=f"a new worker; log:\n{daemon.log_tail()}")
    wait_for(lambda: daemon.group_ready("lim", 1), timeout=15, what="the new worker ready")
    log = daemon.log()
    assert "recycling: handler of flow hang passed its timeout of 1s" in log, log
    assert "died" not in log and "crash" not in log.lower().replace("crash_count", ""), log
    queue.enqueue("after", b"ok")
    wait_for(lambda: fc.get("after").state == "completed", timeout=10, what="after completed")
